import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { PARKED_PREFIX, REDRIVES } from "../../src/events/dead-letters";
import { createEvent } from "../../src/events/envelope";
import type { QueueBody } from "../../src/events/queue";
import { newId } from "../../src/lib/ids";
import type { Message } from "../../src/protocol/messages";
import { newConversationId } from "../../src/room/client";
import { env } from "../helpers/api";
import { eventually } from "../helpers/wait";

// The events dead-letter queue: what the events consumer failed on every retry goes back to the events queue (after
// EVENTS_REDRIVE_DELAY_SECONDS, 0 in the tests), at most REDRIVES times, then is parked in R2. Nothing is dropped.

/** A `message_posted` body of a conversation no test shares, as a room's outbox sends it. */
function messageBody(text: string): QueueBody {
  const orgId = newId("org");
  const roomId = newId("room");
  const message: Message = {
    id: newId("msg"),
    orgId,
    roomId,
    conversationId: newConversationId(roomId),
    seq: 1,
    authorId: newId("acc"),
    type: "user",
    text,
    data: null,
    attachments: [],
    clientMessageId: null,
    createdAt: new Date().toISOString(),
  };
  return {
    event: createEvent({
      orgId,
      source: "conversations",
      resource: "conversation",
      event: "message_posted",
      resourceId: message.conversationId,
      data: message,
    }),
  };
}

async function deadLetter(...bodies: string[]) {
  const messages = bodies.map((body) => ({ id: crypto.randomUUID(), timestamp: new Date(), attempts: 1, body }));
  const batch = createMessageBatch("parley-events-dlq", messages);
  const ctx = createExecutionContext();
  await (worker as ExportedHandler<Cloudflare.Env>).queue!(batch, env, ctx);
  return { messages, result: await getQueueResult(batch, ctx) };
}

async function archivedText(id: string) {
  return (await env.DB.prepare("SELECT text FROM messages WHERE id = ?1").bind(id).first<{ text: string }>())?.text;
}

describe("the events dead-letter queue", () => {
  it("sends a dead-lettered message back to the events queue, whose consumer archives it", async () => {
    const single = messageBody("back from the dead");
    const packed = [messageBody("packed one"), messageBody("packed two")];
    const { result } = await deadLetter(JSON.stringify(single), JSON.stringify({ bodies: packed }));
    expect(result.explicitAcks).toHaveLength(2);
    expect(result.retryMessages).toEqual([]);
    for (const body of [single, ...packed]) {
      const message = body.event.data as Message;
      expect(await eventually(() => archivedText(message.id), 10_000)).toBe(message.text);
    }
  });

  it(`parks a message sent back ${REDRIVES} times, and one that is not JSON, in R2 as it came`, async () => {
    const tired = JSON.stringify({ bodies: [messageBody("never archived")], redrives: REDRIVES });
    const garbage = "{not json";
    const { messages, result } = await deadLetter(tired, garbage);
    expect(result.explicitAcks).toHaveLength(2);
    for (const [i, text] of [tired, garbage].entries()) {
      const parked = await env.ATTACHMENTS.get(`${PARKED_PREFIX}${messages[i].id}.json`);
      expect(await parked?.text()).toBe(text);
    }
    const message = (JSON.parse(tired).bodies[0].event.data ?? {}) as Message;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await archivedText(message.id)).toBeUndefined();
  });
});
