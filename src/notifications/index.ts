import { NotificationJobSchema } from "../protocol/notifications";
import { backoffSeconds, deliverJob } from "./deliver";
import type { NotificationsBindings } from "./env";

/**
 * The notifications worker: consumes the NOTIFICATIONS queue (push and email jobs from the main worker's rules) and
 * delivers each with Web Push or SMTP. Malformed jobs are dropped; a job that throws is retried with backoff and, after
 * the queue's `max_retries`, lands in the dead-letter queue.
 */
export default {
  async fetch() {
    return Response.json({ name: "parley-notifications" });
  },
  async queue(batch, env) {
    await Promise.all(
      batch.messages.map(async (message) => {
        const parsed = NotificationJobSchema.safeParse(message.body);
        if (!parsed.success) {
          console.error("dropping malformed notification job", message.id, parsed.error.message);
          message.ack();
          return;
        }
        try {
          const result = await deliverJob(env, parsed.data);
          if (result.action === "ack") message.ack();
          else message.retry({ delaySeconds: result.delaySeconds });
        } catch (error) {
          console.error("notification job failed; retrying", { id: message.id, error: String(error) });
          message.retry({ delaySeconds: backoffSeconds(message.attempts) });
        }
      }),
    );
  },
} satisfies ExportedHandler<NotificationsBindings>;
