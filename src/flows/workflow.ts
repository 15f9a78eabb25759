import { WorkflowEntrypoint, type WorkflowEvent, type WorkflowStep } from "cloudflare:workers";
import type { Bindings } from "../env";
import { createDb } from "../db/client";
import { accounts } from "../db/schema";
import { and, eq } from "drizzle-orm";
import type { AgentSettings, Step } from "../protocol/accounts";
import { flowOf } from "./dispatch";
import { handOver, type FlowParams } from "./instances";
import { publishRuns, queuedRuns, setRunStatus } from "./runs";
import { runStep, type StepRun } from "./steps";

export type { FlowParams } from "./instances";

/** Steps one generation may use before it hands over to the next (Workflows cap an instance's steps). */
export const STEP_BUDGET = 900;
/** How long an idle instance waits for the next trigger before it ends (the next trigger starts a new one). */
const IDLE_TIMEOUT = "1 day";
/** Queued runs read per round. */
const ROUND_RUNS = 10;
/** The most steps one run can use: begin, end, and its flow's steps. */
const RUN_STEPS_MAX = 22;

/** A run as the instance carries it between steps. */
interface QueuedRun extends StepRun {
  [key: string]: string | number | null;
}

/** What a run's first step found: the steps to run and the agent's settings, or why it cannot run. */
interface RunPlan {
  steps: Step[];
  agent: AgentSettings;
  error: string | null;
}

/**
 * The flow engine: one Workflow instance per (conversation, agent). It runs the queued runs of its agent in trigger
 * order, one at a time, then waits for a `wake` event (sent by the dispatcher for every new trigger). Each run is a
 * few durable steps: begin (status running, the agent's current flow), one step per flow step, end (completed or
 * failed). After `STEP_BUDGET` steps, or a day idle, the instance ends and hands over to the next generation.
 */
export class FlowWorkflow extends WorkflowEntrypoint<Bindings, FlowParams> {
  /** Runs the agent's flow for one conversation. */
  override async run(event: WorkflowEvent<FlowParams>, step: WorkflowStep): Promise<{ runs: number }> {
    const flow = event.payload;
    let used = 0;
    let done = 0;
    for (let round = 0; ; round++) {
      const runs = await step.do(`queued runs ${round}`, async () =>
        (await queuedRuns(this.env.DB, flow.conversationId, flow.agentId, ROUND_RUNS)).map((row): QueuedRun => ({
          id: row.id,
          trigger: row.trigger,
          messageId: row.messageId,
          eventId: row.eventId,
          seq: row.seq,
        })),
      );
      used++;
      for (const run of runs) {
        used += await this.execute(flow, run, step);
        done++;
      }
      if (used + RUN_STEPS_MAX * ROUND_RUNS + 2 > STEP_BUDGET) break;
      if (runs.length > 0) continue;
      try {
        await step.waitForEvent(`wake ${round}`, { type: "wake", timeout: IDLE_TIMEOUT });
        used++;
      } catch {
        break; // idle: end, the next trigger starts the next generation
      }
    }
    await step.do("hand over", () => handOver(this.env, flow));
    return { runs: done };
  }

  /** One run: begin, its steps, end. Answers the steps it used. */
  private async execute(flow: FlowParams, run: QueuedRun, step: WorkflowStep): Promise<number> {
    const plan = await step.do(`begin ${run.id}`, async (): Promise<RunPlan | null> => {
      const row = await setRunStatus(this.env.DB, run.id, ["queued", "running"], "running");
      if (!row) return null;
      await publishRuns(this.env, [row]);
      const account = await createDb(this.env.DB)
        .select({ agent: accounts.agent })
        .from(accounts)
        .where(and(eq(accounts.id, flow.agentId), eq(accounts.orgId, flow.orgId), eq(accounts.type, "agent")))
        .get();
      if (!account) return { steps: [], agent: {}, error: "the agent no longer exists" };
      const agent = (account.agent ?? {}) as AgentSettings;
      const flowSteps = run.trigger === "start" ? flowOf(agent).onStart : flowOf(agent).onMessage;
      return { steps: flowSteps ?? [], agent, error: null };
    });
    if (!plan) return 1;
    let error = plan.error;
    for (const [index, flowStep] of plan.steps.entries()) {
      if (error) break;
      try {
        const outcome = await step.do(
          `${run.id} step ${index}`,
          { retries: { limit: 2, delay: "1 second", backoff: "exponential" }, timeout: "5 minutes" },
          () => runStep(this.env, flow, run, index, flowStep, plan.agent),
        );
        error = outcome.error ?? null;
      } catch (failure) {
        console.error("flow step failed after retries", run.id, index, String(failure));
        error = "the step failed";
      }
    }
    await step.do(`end ${run.id}`, async () => {
      const row = await setRunStatus(this.env.DB, run.id, ["running"], error ? "failed" : "completed", error);
      if (row) await publishRuns(this.env, [row]);
    });
    return 2 + plan.steps.length;
  }
}
