import type { Bindings } from "../env";
import {
  archiveMessagesStatements,
  mirrorConversationsStatements,
  mirrorRoomStatements,
  purgeConversationStatement,
} from "../db/mirror";
import { dispatchedOf, dispatchedStatements, dispatchFlows } from "../flows/dispatch";
import type { Message } from "../protocol/messages";
import { roomStub } from "../room/client";
import { notifyEvents, rulesOf, rulesStatements } from "../notifications/rules";
import {
  isQueueBody,
  messageContent,
  QueueBodySchema,
  unpackBodies,
  type ConversationRecord,
  type QueueBody,
  type RoomRecord,
} from "./queue";

/** Retry delay of a failed batch: 1 s doubling to 5 min. */
export function retryDelaySeconds(attempts: number): number {
  return Math.min(300, 2 ** Math.max(0, attempts - 1));
}

/**
 * The events consumer: writes the D1 archive and mirrors of a batch in one D1 transaction (which also reads the
 * notification rules of the batch's orgs), then starts agents' flows and turns events into notifications. Every step
 * is idempotent (message ids, mirror versions, trigger keys, notification keys), so redelivered or duplicated batches
 * change nothing. If anything fails the whole batch is retried with backoff: delayed, never lost.
 */
export async function consumeEvents(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  const valid: QueueBody[] = [];
  for (const message of batch.messages) {
    const content = messageContent(message.body);
    for (const body of unpackBodies(content)) {
      if (isQueueBody(body)) {
        valid.push(body);
        continue;
      }
      const parsed = QueueBodySchema.safeParse(body);
      if (parsed.success) {
        valid.push(body as QueueBody);
      } else {
        console.error("dropping malformed events queue message", message.id, parsed.error.message);
      }
    }
  }
  try {
    await Promise.all([restoreTexts(env, valid), restoreParticipants(env, valid)]);
    const events = valid.map((body) => body.event);
    // One D1 round trip for the archive writes, the notification rules the batch's events may match, and the
    // triggers whose flows have already started.
    const archive = archiveStatements(env.DB, valid);
    const rules = rulesStatements(env.DB, events);
    const dispatched = dispatchedStatements(env.DB, valid);
    const statements = [...archive, ...rules, ...dispatched];
    const results = statements.length > 0 ? await env.DB.batch(statements) : [];
    // Triggers whose runs all began were dispatched by their room: a second pass would only read them again.
    const started = dispatchedOf(results.slice(archive.length + rules.length));
    await dispatchFlows(env, started.size === 0 ? valid : valid.filter((body) => !started.has(body.event.id)));
    await notifyEvents(env, events, rulesOf(results.slice(archive.length, archive.length + rules.length)));
    batch.ackAll();
  } catch (error) {
    const attempts = Math.max(...batch.messages.map((m) => m.attempts));
    console.error("events archive failed; batch will be retried", { attempts, error: String(error) });
    batch.retryAll({ delaySeconds: retryDelaySeconds(attempts) });
  }
}

/**
 * Gives the messages whose text was left out of their queue body (`textOmitted`) their text back, from their room.
 * A message the room no longer shows (its conversation deleted) keeps none; the archive skips it anyway.
 */
async function restoreTexts(env: Bindings, bodies: QueueBody[]): Promise<void> {
  const omitted = bodies.filter((b) => b.textOmitted && b.event.type === "conversation.message_posted");
  await Promise.all(
    omitted.map(async (body) => {
      const message = body.event.data as Message;
      const page = await roomStub(env, message.roomId).listMessages({ orgId: message.orgId }, message.conversationId, {
        afterSeq: message.seq - 1,
        limit: 1,
      });
      const stored = page.ok ? page.value.items[0] : undefined;
      if (stored?.id === message.id) body.event = { ...body.event, data: { ...message, text: stored.text } };
    }),
  );
}

/**
 * Gives the bodies whose room went without its participants (`participantsOmitted`) their room back, as its object
 * has it now (read once per room): the mirror takes the newest version anyway, and a room's event data carries its
 * participants as of that read. A room that is gone mirrors nothing (its deletion purges the mirror).
 */
async function restoreParticipants(env: Bindings, bodies: QueueBody[]): Promise<void> {
  const reads = new Map<string, Promise<RoomRecord | null>>();
  const read = ({ room }: RoomRecord) => {
    let record = reads.get(room.id);
    if (!record) {
      record = roomStub(env, room.id)
        .getRoom({ orgId: room.orgId })
        .then((result) => (result.ok ? result.value : null));
      reads.set(room.id, record);
    }
    return record;
  };
  await Promise.all(
    bodies.map(async (body) => {
      if (!body.participantsOmitted || !body.room) return;
      const current = await read(body.room);
      if (!current) {
        delete body.room;
        return;
      }
      body.room = current;
      const data = body.event.data as { participants?: unknown } | null;
      if (Array.isArray(data?.participants)) {
        body.event = { ...body.event, data: { ...data, participants: current.room.participants } };
      }
    }),
  );
}

/** The D1 statements for a batch: newest mirror per room and conversation, every message, purges of deletions. */
export function archiveStatements(db: D1Database, bodies: QueueBody[]): D1PreparedStatement[] {
  const rooms = new Map<string, RoomRecord>();
  const conversations = new Map<string, ConversationRecord>();
  const messages: Message[] = [];
  const purges = new Set<string>();
  for (const body of bodies) {
    if (body.room && (rooms.get(body.room.room.id)?.version ?? -1) < body.room.version) {
      rooms.set(body.room.room.id, body.room);
    }
    const conversation = body.conversation;
    if (conversation && (conversations.get(conversation.conversation.id)?.version ?? -1) < conversation.version) {
      conversations.set(conversation.conversation.id, conversation);
    }
    if (body.event.type === "conversation.message_posted") messages.push(body.event.data as Message);
    if (body.event.type === "conversation.deleted") purges.add(body.event.resourceId);
  }
  return [
    ...[...rooms.values()].flatMap((record) => mirrorRoomStatements(db, record)),
    ...mirrorConversationsStatements(db, [...conversations.values()]),
    ...archiveMessagesStatements(db, messages),
    ...[...purges].map((id) => purgeConversationStatement(db, id)),
  ];
}
