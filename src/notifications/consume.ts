import { numberSetting } from "../lib/settings";
import { NotificationJobSchema } from "../protocol/notifications";
import { abandonJob, backoffSeconds, deliverJob } from "./deliver";
import type { NotificationsBindings } from "./env";

/** How many times the dead-letter queue tries a job (about a day at the default delay) before giving it up. */
export const DEAD_LETTER_ATTEMPTS = 96;
/** How long a dead-lettered job that failed again waits before its next try (s): outages outlast the retries. */
const DEAD_LETTER_DELAY_SECONDS = 15 * 60;

/**
 * Consumes a batch of the NOTIFICATIONS queue (push and email jobs from the main worker's rules) or of its
 * dead-letter queue, and delivers each job with Web Push or SMTP. Malformed jobs are dropped; a job that throws (D1
 * unavailable, say) is retried with backoff and, after the queue's `max_retries`, lands in the dead-letter queue. This
 * worker consumes that queue too: the same delivery (idempotent, at most once per target), tried every
 * `NOTIFICATIONS_REDRIVE_DELAY_SECONDS` (15 minutes) up to `DEAD_LETTER_ATTEMPTS` times; then the job is given up
 * and its channel ends `failed` (or `sent` for the targets that got it), so no notification stays `pending`.
 */
export async function consumeJobs(batch: MessageBatch<unknown>, env: NotificationsBindings): Promise<void> {
  const deadLetters = batch.queue.endsWith("-dlq");
  const redriveDelay = numberSetting(env.NOTIFICATIONS_REDRIVE_DELAY_SECONDS, DEAD_LETTER_DELAY_SECONDS);
  await Promise.all(
    batch.messages.map(async (message) => {
      const parsed = NotificationJobSchema.safeParse(message.body);
      if (!parsed.success) {
        console.error("dropping malformed notification job", message.id, parsed.error.message);
        message.ack();
        return;
      }
      const job = parsed.data;
      const last = deadLetters && message.attempts >= DEAD_LETTER_ATTEMPTS;
      try {
        const result = await deliverJob(env, job);
        if (result.action === "ack") message.ack();
        else if (last) await giveUp("still not delivered");
        else message.retry({ delaySeconds: result.delaySeconds });
      } catch (error) {
        console.error("notification job failed; retrying", { id: message.id, deadLetters, error: String(error) });
        if (last) await giveUp(`failed: ${String(error)}`);
        else message.retry({ delaySeconds: deadLetters ? redriveDelay : backoffSeconds(message.attempts) });
      }

      async function giveUp(why: string) {
        console.error("notification job given up", { id: message.id, ...job, why });
        await abandonJob(env, job, `gave up after the dead-letter queue's ${message.attempts} tries`).catch((error) =>
          console.error("could not mark a given-up notification job failed", String(error)),
        );
        message.ack();
      }
    }),
  );
}
