import { WorkflowEntrypoint, type WorkflowEvent, type WorkflowStep, type WorkflowStepConfig } from "cloudflare:workers";
import type { Bindings } from "../env";
import type { AgentSettings, Step } from "../protocol/accounts";
import { flowOf } from "./dispatch";
import { handOver, type FlowParams } from "./instances";
import { endRun, publishRuns, takeRun, type EndedRun } from "./runs";
import { runStep, type StepOutcome, type StepRun } from "./steps";

export type { FlowParams } from "./instances";

/** Steps one generation may use before it hands over to the next (Workflows cap an instance's steps). */
export const STEP_BUDGET = 900;
/** How long an idle instance waits for the next trigger before it ends (the next trigger starts a new one). */
const IDLE_TIMEOUT = "1 day";
/** The most steps one run can use: its take (with its first flow step), its other flow steps (at most 19), a wait. */
const RUN_STEPS_MAX = 22;
/** A flow step's retries (a room that could not be reached) and time limit. */
const STEP_CONFIG = {
  retries: { limit: 2, delay: "1 second", backoff: "exponential" },
  timeout: "5 minutes",
} as const satisfies WorkflowStepConfig;
/** A take's: it runs the first flow step, and it rides out a minute of D1 being unavailable (2 + 4 + ... + 32 s). */
const TAKE_CONFIG = {
  retries: { limit: 5, delay: "2 seconds", backoff: "exponential" },
  timeout: "5 minutes",
} as const satisfies WorkflowStepConfig;
/** What a run ends with when one of its steps still failed after its retries. */
const STEP_FAILED = "the step failed";

/** A run as its take answers it: the run, its steps, its agent's settings (or why it cannot run), its first step. */
interface TakenRun extends StepRun {
  steps: Step[];
  agent: AgentSettings;
  error: string | null;
  /** The outcome of its first flow step, run by the take. */
  first: StepOutcome;
  /** Whether the take also ended the run: its only step ran, or it failed, or it had nothing to run. */
  ended: boolean;
  /** When it ended: whether its flow had runs queued then. */
  queued: boolean;
}

/**
 * The flow engine: one Workflow instance per (conversation, agent). It runs the queued runs of its agent in trigger
 * order, one at a time, then waits for a `wake` event (sent by the dispatcher for every new trigger). A run costs
 * one durable step per flow step: the first also takes the run (in one D1 transaction, with ending a failed run
 * before it), and the last also ends it: an assistant's reply is one step (Workflows persist every step; locally a
 * no-op step cost about 4 ms of CPU). After `STEP_BUDGET` steps, or a day idle, the instance ends and hands over to
 * the next generation.
 */
export class FlowWorkflow extends WorkflowEntrypoint<Bindings, FlowParams> {
  /** Runs the agent's flow for one conversation. */
  override async run(event: WorkflowEvent<FlowParams>, step: WorkflowStep): Promise<{ runs: number }> {
    const flow = event.payload;
    let used = 0;
    let done = 0;
    /** A run a failed step left running: the next take ends it. */
    let failed: EndedRun | null = null;
    for (let take = 0; used + RUN_STEPS_MAX + 2 <= STEP_BUDGET; take++) {
      const previous: EndedRun | null = failed;
      failed = null;
      let run: TakenRun | null;
      try {
        run = await step.do(`take ${take}`, TAKE_CONFIG, (ctx): Promise<TakenRun | null> =>
          this.take(flow, previous, ctx.attempt > 1),
        );
      } catch (failure) {
        // Which run it began is lost with its answer: the next take ends the one running. Two failing in a row (D1
        // unavailable) stop the instance.
        if (previous?.id === null) throw failure;
        console.error("flow take failed after retries", flow.conversationId, flow.agentId, String(failure));
        failed = { id: null, error: STEP_FAILED };
        used++;
        continue;
      }
      used++;
      /** Whether runs were queued when this one ended: the next take cannot wait for a wake. */
      let queued = false;
      if (run?.ended) {
        queued = run.queued;
      } else if (run) {
        ({ failed, queued } = await this.execute(flow, run, step));
        used += run.steps.length - 1;
      }
      if (run) done++;
      // A failed run is ended by the next take at once, and queued runs are taken at once. Otherwise the next
      // trigger's wake (kept by Workflows if it came while a run ran) leads to the next take: a run that ended
      // itself costs no take to find none queued.
      if (failed || queued) continue;
      try {
        await step.waitForEvent(`wake ${take}`, { type: "wake", timeout: IDLE_TIMEOUT });
        used++;
      } catch {
        break; // idle: end, the next trigger starts the next generation
      }
    }
    const ended: EndedRun | null = failed;
    await step.do("hand over", async () => {
      if (ended) await this.end(flow, ended);
      await handOver(this.env, flow);
    });
    return { runs: done };
  }

  /** Ends a failed run before (if any), begins the next queued one and runs its first flow step, as one step. */
  private async take(flow: FlowParams, previous: EndedRun | null, retried: boolean): Promise<TakenRun | null> {
    const { moved, run, agent } = await takeRun(this.env.DB, flow, previous);
    if (moved.length > 0) await publishRuns(this.env, moved);
    if (!run) return null;
    const flowSteps = !agent ? [] : ((run.trigger === "start" ? flowOf(agent).onStart : flowOf(agent).onMessage) ?? []);
    const taken = {
      id: run.id,
      trigger: run.trigger,
      messageId: run.messageId,
      eventId: run.eventId,
      seq: run.seq,
      steps: flowSteps,
      agent: agent ?? {},
      error: agent ? null : "the agent no longer exists",
    };
    const { outcome, ended, queued } = await this.flowStep(flow, taken, 0, retried);
    return { ...taken, first: outcome, ended, queued };
  }

  /**
   * Runs one flow step of a run (none for a run that cannot run or has no steps); a run's last step, or one that
   * failed, also ends it. `retried`: the Workflow step runs again (a failure, a restart), and what its first attempt
   * streamed may have reached clients.
   */
  private async flowStep(
    flow: FlowParams,
    run: Omit<TakenRun, "first" | "ended" | "queued">,
    index: number,
    retried: boolean,
  ): Promise<{ outcome: StepOutcome; ended: boolean; queued: boolean }> {
    const outcome =
      run.error || index >= run.steps.length
        ? {}
        : await runStep(this.env, flow, run, index, run.steps[index], run.agent, retried);
    const error = run.error ?? outcome.error ?? null;
    if (!error && index + 1 < run.steps.length) return { outcome, ended: false, queued: false };
    return { outcome, ended: true, queued: await this.end(flow, { id: run.id, error }) };
  }

  /** Ends a run and publishes it, unless it ended before; answers whether its flow has runs queued. */
  private async end(flow: FlowParams, run: EndedRun): Promise<boolean> {
    const { row, queued } = await endRun(this.env.DB, flow, run);
    if (row) await publishRuns(this.env, [row]);
    return queued;
  }

  /**
   * Runs the flow steps of a run after its first (which its take ran); the last ends it and says whether runs are
   * queued. A step that failed after its retries answers the run as `failed`: still running, for the next take to end.
   */
  private async execute(
    flow: FlowParams,
    run: TakenRun,
    step: WorkflowStep,
  ): Promise<{ failed: EndedRun | null; queued: boolean }> {
    for (let index = 1; index < run.steps.length; index++) {
      try {
        const { ended, queued } = await step.do(`${run.id} step ${index}`, STEP_CONFIG, (ctx) =>
          this.flowStep(flow, run, index, ctx.attempt > 1),
        );
        if (ended) return { failed: null, queued };
      } catch (failure) {
        console.error("flow step failed after retries", run.id, index, String(failure));
        return { failed: { id: run.id, error: STEP_FAILED }, queued: false };
      }
    }
    return { failed: null, queued: false };
  }
}
