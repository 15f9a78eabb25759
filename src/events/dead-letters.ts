import type { Bindings } from "../env";
import { numberSetting } from "../lib/settings";
import { messageContent, unpackBodies } from "./queue";

/** How many times a dead-lettered events message goes back to the events queue before it is parked in R2. */
export const REDRIVES = 3;
/** How long a message sent back waits before the events consumer sees it again (s): outages outlast retries. */
const REDRIVE_DELAY_SECONDS = 15 * 60;
/** Where parked messages go in the R2 bucket (one object per message, its body as it came). */
export const PARKED_PREFIX = "dead-letters/events/";

/** A message sent back from the dead-letter queue: its bodies, and how many times it was sent back. */
interface Redriven {
  bodies: unknown[];
  redrives: number;
}

/**
 * The consumer of the events dead-letter queue. A message lands there after the events consumer failed it on every
 * retry (D1 unavailable for longer than the retries' backoff, say): it goes back to the events queue, a while later,
 * up to `REDRIVES` times (the events consumer is idempotent, so a second delivery changes nothing); after that, or
 * if it is not JSON, it is parked in R2 under `dead-letters/events/` for an operator to replay. Nothing is dropped.
 */
export async function consumeDeadLetters(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  const delaySeconds = numberSetting(env.EVENTS_REDRIVE_DELAY_SECONDS, REDRIVE_DELAY_SECONDS);
  await Promise.all(
    batch.messages.map(async (message) => {
      const text = typeof message.body === "string" ? message.body : JSON.stringify(message.body);
      const content = messageContent(message.body);
      const redrives = (content as Partial<Redriven> | undefined)?.redrives;
      const done = typeof redrives === "number" ? redrives : 0;
      try {
        if (content !== undefined && done < REDRIVES) {
          const again: Redriven = { bodies: unpackBodies(content), redrives: done + 1 };
          await env.EVENTS.send(JSON.stringify(again), { contentType: "text", delaySeconds });
          console.error("events message dead-lettered; sent back to the events queue", { id: message.id, ...again });
        } else {
          const key = `${PARKED_PREFIX}${message.id}.json`;
          await env.ATTACHMENTS.put(key, text, { httpMetadata: { contentType: "application/json" } });
          console.error("events message dead-lettered for good; parked in R2", { id: message.id, key });
        }
        message.ack();
      } catch (error) {
        console.error("dead-lettered events message not handled; retrying", { id: message.id, error: String(error) });
        message.retry({ delaySeconds: 60 });
      }
    }),
  );
}
