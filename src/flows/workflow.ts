import { WorkflowEntrypoint, type WorkflowEvent, type WorkflowStep } from "cloudflare:workers";
import type { Bindings } from "../env";
import type { AgentSettings, Step } from "../protocol/accounts";
import { flowOf } from "./dispatch";
import { handOver, type FlowParams } from "./instances";
import { publishRuns, setRunStatus, takeRun, type EndedRun } from "./runs";
import { runStep, type StepRun } from "./steps";

export type { FlowParams } from "./instances";

/** Steps one generation may use before it hands over to the next (Workflows cap an instance's steps). */
export const STEP_BUDGET = 900;
/** How long an idle instance waits for the next trigger before it ends (the next trigger starts a new one). */
const IDLE_TIMEOUT = "1 day";
/** The most steps one run can use: its take, its flow's steps (at most 20), and a wait after it. */
const RUN_STEPS_MAX = 22;

/** A run as its take answers it: the run, its steps, and its agent's settings; or why it cannot run. */
interface TakenRun extends StepRun {
  steps: Step[];
  agent: AgentSettings;
  error: string | null;
}

/**
 * The flow engine: one Workflow instance per (conversation, agent). It runs the queued runs of its agent in trigger
 * order, one at a time, then waits for a `wake` event (sent by the dispatcher for every new trigger). A run costs
 * one durable step to take it (which ends the run before it, in the same D1 transaction) and one per flow step. After
 * `STEP_BUDGET` steps, or a day idle, the instance ends and hands over to the next generation.
 */
export class FlowWorkflow extends WorkflowEntrypoint<Bindings, FlowParams> {
  /** Runs the agent's flow for one conversation. */
  override async run(event: WorkflowEvent<FlowParams>, step: WorkflowStep): Promise<{ runs: number }> {
    const flow = event.payload;
    let used = 0;
    let done = 0;
    let previous: EndedRun | null = null;
    for (let take = 0; used + RUN_STEPS_MAX + 2 <= STEP_BUDGET; take++) {
      const ended: EndedRun | null = previous;
      const run: TakenRun | null = await step.do(`take ${take}`, () => this.take(flow, ended));
      used++;
      previous = null;
      if (run) {
        previous = { id: run.id, error: await this.execute(flow, run, step) };
        used += run.steps.length;
        done++;
        continue;
      }
      try {
        await step.waitForEvent(`wake ${take}`, { type: "wake", timeout: IDLE_TIMEOUT });
        used++;
      } catch {
        break; // idle: end, the next trigger starts the next generation
      }
    }
    const ended: EndedRun | null = previous;
    await step.do("hand over", async () => {
      if (ended) await this.end(ended);
      await handOver(this.env, flow);
    });
    return { runs: done };
  }

  /** Ends the run before (if any) and begins the next queued one, as one step. */
  private async take(flow: FlowParams, previous: EndedRun | null): Promise<TakenRun | null> {
    const { moved, run, agent } = await takeRun(this.env.DB, flow, previous);
    if (moved.length > 0) await publishRuns(this.env, moved);
    if (!run) return null;
    const taken = { id: run.id, trigger: run.trigger, messageId: run.messageId, eventId: run.eventId, seq: run.seq };
    if (!agent) return { ...taken, steps: [], agent: {}, error: "the agent no longer exists" };
    const flowSteps = run.trigger === "start" ? flowOf(agent).onStart : flowOf(agent).onMessage;
    return { ...taken, steps: flowSteps ?? [], agent, error: null };
  }

  /** Ends a run without taking the next (before a hand over). */
  private async end(run: EndedRun): Promise<void> {
    const status = run.error ? "failed" : "completed";
    const row = await setRunStatus(this.env.DB, run.id, ["running"], status, run.error);
    if (row) await publishRuns(this.env, [row]);
  }

  /** Runs the steps of a run; answers the error it ends with, if any. */
  private async execute(flow: FlowParams, run: TakenRun, step: WorkflowStep): Promise<string | null> {
    let error = run.error;
    for (const [index, flowStep] of run.steps.entries()) {
      if (error) break;
      try {
        const outcome = await step.do(
          `${run.id} step ${index}`,
          { retries: { limit: 2, delay: "1 second", backoff: "exponential" }, timeout: "5 minutes" },
          () => runStep(this.env, flow, run, index, flowStep, run.agent),
        );
        error = outcome.error ?? null;
      } catch (failure) {
        console.error("flow step failed after retries", run.id, index, String(failure));
        error = "the step failed";
      }
    }
    return error;
  }
}
