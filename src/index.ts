import { createApp } from "./app";
import type { Bindings } from "./env";
import { consumeEvents } from "./events/consumer";
import { consumeDeadLetters } from "./events/dead-letters";
import { resumeStalledFlows } from "./flows/instances";
import { resumeStalledNotifications } from "./notifications/rules";

export { FlowWorkflow } from "./flows/workflow";
export { Hub } from "./hub/hub";
export { Room } from "./room/room";

const app = createApp();

/** How often one isolate checks for stalled flows and lost notification jobs while it serves requests. */
const FLOW_CHECK_EVERY_MS = 30_000;
/** How far ahead a check plans the next, for runs open but not stalled yet (within what `waitUntil` may run). */
const FLOW_FOLLOW_UP_MS = 35_000;
let nextFlowCheck = 0;
let followUp = false;

/**
 * Sends again the notification jobs a lost queue message left pending (`resumeStalledNotifications`), and resumes
 * stalled flows (`resumeStalledFlows`), in the background. Runs that are open but not stalled yet (the first
 * request after a restart comes sooner than 30 s) get one more check when they would be, with no request needed:
 * a restart's sockets reconnect, then may send nothing but frames. A failed check waits for the next.
 */
function checkStalled(env: Bindings, ctx: ExecutionContext): void {
  ctx.waitUntil(
    resumeStalledNotifications(env).catch((error) =>
      console.error("checking for lost notification jobs failed", String(error)),
    ),
  );
  const check = async (): Promise<void> => {
    const { nextAt } = await resumeStalledFlows(env);
    if (nextAt === null || followUp || nextAt - Date.now() > FLOW_FOLLOW_UP_MS) return;
    followUp = true;
    try {
      await scheduler.wait(Math.max(0, nextAt - Date.now()));
      await resumeStalledFlows(env);
    } finally {
      followUp = false;
    }
  };
  ctx.waitUntil(check().catch((error) => console.error("checking for stalled flows failed", String(error))));
}

/**
 * The Parley worker: the REST app, the queue consumers dispatched by queue name, and the cron's check for stalled
 * flows and lost notification jobs. Requests check too, at most every 30 s an isolate: `wrangler dev` runs no cron,
 * and a restart stops the flows it cut off until an event reaches them, and loses the local queues' messages.
 */
export default {
  fetch(request, env, ctx) {
    const now = Date.now();
    if (now >= nextFlowCheck) {
      nextFlowCheck = now + FLOW_CHECK_EVERY_MS;
      checkStalled(env, ctx);
    }
    return app.fetch(request, env, ctx);
  },
  scheduled(_controller, env, ctx) {
    checkStalled(env, ctx);
  },
  async queue(batch, env) {
    if (batch.queue.startsWith("parley-events") && batch.queue.endsWith("-dlq")) {
      await consumeDeadLetters(batch, env);
      return;
    }
    if (batch.queue.startsWith("parley-events")) {
      await consumeEvents(batch, env);
      return;
    }
    console.error("message batch from an unexpected queue; retrying later", batch.queue);
    batch.retryAll({ delaySeconds: 60 });
  },
} satisfies ExportedHandler<Bindings>;
