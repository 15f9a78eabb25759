import { createApp } from "./app";
import type { Bindings } from "./env";
import { consumeEvents } from "./events/consumer";
import { consumeDeadLetters } from "./events/dead-letters";

export { FlowWorkflow } from "./flows/workflow";
export { Hub } from "./hub/hub";
export { Room } from "./room/room";

const app = createApp();

/** The Parley worker: the REST app, and the queue consumers dispatched by queue name. */
export default {
  fetch: app.fetch,
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
