import { consumeJobs } from "./consume";
import type { NotificationsBindings } from "./env";

/**
 * The notifications worker: delivers the push and email jobs of the main worker's notification rules with Web Push
 * and SMTP, from the NOTIFICATIONS queue and its dead-letter queue (`consumeJobs`).
 */
export default {
  async fetch() {
    return Response.json({ name: "parley-notifications" });
  },
  async queue(batch, env) {
    await consumeJobs(batch, env);
  },
} satisfies ExportedHandler<NotificationsBindings>;
