import { createExecutionContext, createMessageBatch, getQueueResult, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { createEvent } from "../../src/events/envelope";
import {
  MESSAGE_BYTES,
  PACK_BODIES,
  PACK_BYTES,
  packBodies,
  unpackBodies,
  type QueueBody,
} from "../../src/events/queue";
import { newId } from "../../src/lib/ids";
import type { Message } from "../../src/protocol/messages";
import type { Room as RoomShape } from "../../src/protocol/rooms";
import { newConversationId } from "../../src/room/client";
import type { Room } from "../../src/room/room";
import { call, createFixture, env, post } from "../helpers/api";

// Contract section 7 and ARCHITECTURE.md "The path of a message": every acknowledged message leaves the room through
// its outbox and the EVENTS queue, and the queue consumer writes the D1 archive, batched and idempotent.

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** Retries an assertion until it passes; on timeout, throws the assertion's last failure. */
async function until<T>(assertion: () => Promise<T>, timeoutMs = 20_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await assertion();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function roomObject(roomId: string) {
  return env.ROOMS.get(env.ROOMS.idFromName(roomId));
}

/** The D1 archive of one conversation, in the Message shape, ascending by seq. */
async function archived(conversationId: string): Promise<Message[]> {
  const { results } = await env.DB.prepare(
    `SELECT id, org_id, room_id, conversation_id, seq, author_id, type, text, data, attachments, client_message_id,
            created_at
       FROM messages WHERE conversation_id = ?1 ORDER BY seq`,
  )
    .bind(conversationId)
    .all<Record<string, any>>();
  return results.map((row) => ({
    id: row.id,
    orgId: row.org_id,
    roomId: row.room_id,
    conversationId: row.conversation_id,
    seq: row.seq,
    authorId: row.author_id,
    type: row.type,
    text: row.text,
    data: row.data === null ? null : JSON.parse(row.data),
    attachments: JSON.parse(row.attachments),
    clientMessageId: row.client_message_id,
    createdAt: row.created_at,
  }));
}

async function archivedCount(conversationId: string, table = "messages") {
  return (await env.DB.prepare(
    `SELECT count(*) AS n, count(DISTINCT id) AS ids FROM ${table} WHERE conversation_id = ?1`,
  )
    .bind(conversationId)
    .first<{ n: number; ids: number }>())!;
}

async function conversationRow(conversationId: string) {
  return env.DB.prepare("SELECT message_count, last_message_at, version FROM conversations WHERE id = ?1")
    .bind(conversationId)
    .first<{ message_count: number; last_message_at: string | null; version: number }>();
}

/** The room's full history of a conversation, read through the API. */
async function roomHistory(apiKey: string, conversationId: string): Promise<Message[]> {
  const response = await call("GET", `/v1/conversations/${conversationId}/messages?limit=100`, { token: apiKey });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  expect(response.body.hasMore).toBe(false);
  return response.body.items;
}

/** Asserts the D1 archive and conversation mirror hold exactly what the room holds, and the room's outbox is empty. */
async function expectArchiveMatches(apiKey: string, roomId: string, conversationId: string, expectedCount: number) {
  const history = await roomHistory(apiKey, conversationId);
  expect(history).toHaveLength(expectedCount);
  expect(await archived(conversationId)).toEqual(history);
  expect(await archivedCount(conversationId)).toEqual({ n: expectedCount, ids: expectedCount });
  const row = await conversationRow(conversationId);
  expect(row).not.toBeNull();
  expect(row!.message_count).toBe(expectedCount);
  expect(row!.last_message_at).toBe(history[history.length - 1].createdAt);
  expect(await roomObject(roomId).pendingEvents()).toBe(0);
}

/** Makes D1's archive table unusable for real, and restores it. */
async function breakArchive() {
  await env.DB.prepare("ALTER TABLE messages RENAME TO messages_broken").run();
}
async function repairArchive() {
  await env.DB.prepare("ALTER TABLE messages_broken RENAME TO messages").run();
}

async function newConversation(apiKey: string, roomId: string, name: string) {
  const response = await call("POST", `/v1/rooms/${roomId}/conversations`, { token: apiKey, body: { name } });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body as { id: string };
}

describe("D1 archive fed by the events queue", () => {
  it("archives exactly the room's history of two conversations, with the conversation mirrors", async () => {
    const f = await createFixture();
    const room2 = await call("POST", "/v1/rooms", {
      token: f.apiKey,
      body: { type: "standard", participants: [{ accountId: f.alice.id }, { accountId: f.bob.id }] },
    });
    expect(room2.status).toBe(201);
    const convB = await newConversation(f.apiKey, room2.body.id, "B");

    const postsA = Array.from({ length: 12 }, (_, i) => ({
      text: `a${i + 1}`,
      authorId: i % 2 ? f.alice.id : f.bob.id,
      ...(i % 3 === 0 ? { data: { index: i, tags: ["x", "y"] } } : {}),
      ...(i % 4 === 0 ? { clientMessageId: `a-client-${i}` } : {}),
    }));
    const postsB = Array.from({ length: 7 }, (_, i) => ({ text: `b${i + 1}`, authorId: f.bob.id }));
    const responses = await Promise.all([
      ...postsA.map((body) => post(f.apiKey, f.conversation.id, body)),
      ...postsB.map((body) => post(f.apiKey, convB.id, body)),
    ]);
    for (const r of responses) expect(r.status, JSON.stringify(r.body)).toBe(201);

    await until(async () => {
      await expectArchiveMatches(f.apiKey, f.room.id, f.conversation.id, 12);
      await expectArchiveMatches(f.apiKey, room2.body.id, convB.id, 7);
    });
    // Every acknowledged message is in the archive under its own id.
    const ids = new Set([...(await archived(f.conversation.id)), ...(await archived(convB.id))].map((m) => m.id));
    for (const r of responses) expect(ids.has(r.body.id)).toBe(true);

    // The archive feeds queries across rooms: the conversation list shows the mirrored counters.
    const list = await call("GET", `/v1/conversations?roomId=${f.room.id}`, { token: f.apiKey });
    expect(list.status).toBe(200);
    const listed = list.body.items.find((c: any) => c.id === f.conversation.id);
    expect(listed.messageCount).toBe(12);
  });

  it("drains an outbox holding several maximum-size messages, and the events behind them", async () => {
    const f = await createFixture();
    // 32768 characters outside Latin-1: the longest text a message may carry, two bytes per character in a queue body.
    // Posted concurrently, they wait in the outbox together while the first one is being sent.
    const text = "中".repeat(32768);
    const responses = await Promise.all(
      Array.from({ length: 6 }, () => post(f.apiKey, f.conversation.id, { text, authorId: f.alice.id })),
    );
    for (const r of responses) expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(201);
    const after = await post(f.apiKey, f.conversation.id, { text: "small, after the large ones", authorId: f.bob.id });
    expect(after.status).toBe(201);
    expect(after.body.seq).toBe(7);

    await until(async () => {
      expect(await roomObject(f.room.id).pendingEvents()).toBe(0);
      expect(await archivedCount(f.conversation.id)).toEqual({ n: 7, ids: 7 });
    }, 15_000);
    await expectArchiveMatches(f.apiKey, f.room.id, f.conversation.id, 7);
  }, 40_000);

  it("archives a message whose queue body would exceed a queue message (a text JSON escapes to six bytes a character)", async () => {
    const f = await createFixture();
    // 32768 control characters: the longest text a message may carry, escaped as \u0001 in JSON, about 196 KB.
    const text = "\u0001".repeat(32768);
    const large = await post(f.apiKey, f.conversation.id, { text, authorId: f.alice.id, data: { big: true } });
    expect(large.status, JSON.stringify(large.body).slice(0, 300)).toBe(201);
    const after = await post(f.apiKey, f.conversation.id, { text: "after the large one", authorId: f.bob.id });
    expect(after.status).toBe(201);

    await until(async () => {
      expect(await roomObject(f.room.id).pendingEvents()).toBe(0);
      expect(await archivedCount(f.conversation.id)).toEqual({ n: 2, ids: 2 });
    }, 15_000);
    const [first, second] = await archived(f.conversation.id);
    expect(first.text).toBe(text);
    expect(first.data).toEqual({ big: true });
    expect(second.text).toBe("after the large one");
  }, 40_000);

  it("sends a body too large for one queue message without its text, and packs it within the limit", () => {
    const target = syntheticConversation();
    const body = messageBody(target, 1, "\u0001".repeat(32768));
    const [message] = packBodies([JSON.stringify(body)]);
    expect(new TextEncoder().encode(message).byteLength).toBeLessThanOrEqual(MESSAGE_BYTES);
    const sent = JSON.parse(message) as QueueBody;
    expect(sent.textOmitted).toBe(true);
    expect(sent.event.data).toEqual({ ...(body.event.data as Message), text: null });
    expect(sent.conversation).toEqual(body.conversation);
  });

  it("mirrors a room of 1,000 participants, whose events exceed a queue message, and archives what follows", async () => {
    const f = await createFixture();
    // 1,000 accounts, written straight to D1 (the API would take a request each); the room is created through the API.
    const now = new Date().toISOString();
    const ids = Array.from({ length: 1000 }, () => newId("acc"));
    const insert = env.DB.prepare(
      "INSERT INTO accounts (id, org_id, type, name, meta, created_at, updated_at) VALUES (?1, ?2, 'user', ?3, '{}', ?4, ?4)",
    );
    await env.DB.batch(ids.map((id, i) => insert.bind(id, f.orgId, `Member ${i}`, now)));
    const created = await call("POST", "/v1/rooms", {
      token: f.apiKey,
      body: { type: "standard", name: "Town hall", participants: ids.map((accountId) => ({ accountId })) },
    });
    expect(created.status, JSON.stringify(created.body).slice(0, 300)).toBe(201);
    const roomId = created.body.id as string;
    // Its room.created body alone (the room twice, each with 1,000 participants) is about 240 KB.
    const conversation = await newConversation(f.apiKey, roomId, "Agenda");
    const posted = await post(f.apiKey, conversation.id, { text: "welcome, everyone", authorId: ids[0] });
    expect(posted.status).toBe(201);

    await until(async () => {
      expect(await roomObject(roomId).pendingEvents()).toBe(0);
      expect(await archivedCount(conversation.id)).toEqual({ n: 1, ids: 1 });
    }, 20_000);
    const mirrored = await env.DB.prepare("SELECT count(*) AS n FROM participants WHERE room_id = ?1")
      .bind(roomId)
      .first<{ n: number }>();
    expect(mirrored!.n).toBe(1000);
    expect((await archived(conversation.id))[0].text).toBe("welcome, everyone");
  }, 60_000);

  it("sends a room body too large for one queue message without its participants", () => {
    const orgId = newId("org");
    const room = {
      id: newId("room"),
      orgId,
      type: "standard",
      name: "Town hall",
      meta: {},
      participants: Array.from({ length: 1000 }, () => ({
        accountId: newId("acc"),
        role: "member",
        autoRespond: false,
        joinedAt: new Date().toISOString(),
      })),
      createdAt: new Date().toISOString(),
    } as unknown as RoomShape;
    const record = { room, dmKey: null, version: 1 };
    const event = createEvent({
      orgId,
      source: "conversations",
      resource: "room",
      event: "created",
      resourceId: room.id,
      data: room,
    });
    const text = JSON.stringify({ event, room: record } satisfies QueueBody);
    expect(new TextEncoder().encode(text).byteLength).toBeGreaterThan(MESSAGE_BYTES);
    const [message] = packBodies([text]);
    expect(new TextEncoder().encode(message).byteLength).toBeLessThanOrEqual(MESSAGE_BYTES);
    const sent = JSON.parse(message) as QueueBody;
    expect(sent.participantsOmitted).toBe(true);
    expect(sent.textOmitted).toBeUndefined();
    expect(sent.room).toEqual({ ...record, room: { ...room, participants: [] } });
    expect(sent.event).toEqual({ ...event, data: { ...room, participants: [] } });
  });

  it("loses and duplicates nothing when the first archive attempts fail", async () => {
    const f = await createFixture();
    const other = await newConversation(f.apiKey, f.room.id, "Other");
    await breakArchive();
    let repaired = false;
    try {
      // Chat is not blocked by the archive: posts are acknowledged and read back from the room.
      const first = await Promise.all(
        Array.from({ length: 6 }, (_, i) => post(f.apiKey, f.conversation.id, { text: `x${i}`, authorId: f.alice.id })),
      );
      const second = await Promise.all(
        Array.from({ length: 4 }, (_, i) => post(f.apiKey, other.id, { text: `y${i}`, authorId: f.bob.id })),
      );
      for (const r of [...first, ...second]) expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(await roomHistory(f.apiKey, f.conversation.id)).toHaveLength(6);

      await sleep(1_500);
      // The attempts so far failed: nothing reached the (renamed) archive table.
      expect(await archivedCount(f.conversation.id, "messages_broken")).toEqual({ n: 0, ids: 0 });
      expect(await archivedCount(other.id, "messages_broken")).toEqual({ n: 0, ids: 0 });

      // More messages while D1 is still down.
      const late = await post(f.apiKey, f.conversation.id, { text: "late", authorId: f.bob.id });
      expect(late.status).toBe(201);
      expect(late.body.seq).toBe(7);

      await repairArchive();
      repaired = true;
      await until(async () => {
        await expectArchiveMatches(f.apiKey, f.room.id, f.conversation.id, 7);
        await expectArchiveMatches(f.apiKey, f.room.id, other.id, 4);
      }, 40_000);
    } finally {
      if (!repaired) await repairArchive();
    }
  }, 60_000);
});

// --- the consumer, called directly -----------------------------------------------------------------------------

/** A conversation that exists only in the queue bodies built below, so the real queue never delivers it. */
function syntheticConversation() {
  const orgId = newId("org");
  const roomId = newId("room");
  return { orgId, roomId, conversationId: newConversationId(roomId), authorId: newId("acc") };
}

/** A `message_posted` queue body as the room writes it: the event and the conversation's mirror at that point. */
function messageBody(
  target: ReturnType<typeof syntheticConversation>,
  seq: number,
  text: string,
  createdAt = new Date(Date.UTC(2026, 10, 21, 12, 0, seq)).toISOString(),
): QueueBody {
  const message: Message = {
    id: newId("msg"),
    orgId: target.orgId,
    roomId: target.roomId,
    conversationId: target.conversationId,
    seq,
    authorId: target.authorId,
    type: "user",
    text,
    data: seq % 2 ? { seq } : null,
    attachments: [],
    clientMessageId: null,
    createdAt,
  };
  return {
    event: createEvent({
      orgId: target.orgId,
      source: "conversations",
      resource: "conversation",
      event: "message_posted",
      resourceId: target.conversationId,
      data: message,
    }),
    conversation: {
      conversation: {
        id: target.conversationId,
        orgId: target.orgId,
        roomId: target.roomId,
        name: "synthetic",
        description: null,
        meta: {},
        contactId: null,
        messageCount: seq,
        lastMessageAt: createdAt,
        createdAt: "2026-11-21T12:00:00.000Z",
        updatedAt: createdAt,
      },
      version: seq + 1,
      deleted: false,
    },
  };
}

/** Delivers a batch to the worker's queue handler as the runtime would, and answers what it acked or retried. */
async function deliver(bodies: unknown[], attempts = 1, ids = bodies.map((_, i) => `qmsg-${i}`)) {
  const batch = createMessageBatch(
    "parley-events",
    bodies.map((body, i) => ({ id: ids[i], timestamp: new Date(), attempts, body })),
  );
  const ctx = createExecutionContext();
  await (worker as ExportedHandler<Cloudflare.Env>).queue!(batch, env, ctx);
  return getQueueResult(batch, ctx);
}

/** Every message of the batch was acknowledged and none is retried. */
function expectAllAcked(result: Awaited<ReturnType<typeof deliver>>, ids: string[]) {
  expect(result.retryBatch.retry, JSON.stringify(result)).toBe(false);
  expect(result.retryMessages).toEqual([]);
  if (!result.ackAll) expect([...result.explicitAcks].sort()).toEqual([...ids].sort());
}

describe("events consumer", () => {
  it("writes each message once for duplicated and redelivered events", async () => {
    const target = syntheticConversation();
    const first = messageBody(target, 1, "one");
    const second = messageBody(target, 2, "two");

    // The same event twice in one batch (at-least-once delivery).
    const ids = ["q-1", "q-2", "q-3"];
    expectAllAcked(await deliver([first, first, second], 1, ids), ids);
    const expected = [first.event.data, second.event.data];
    expect(await archived(target.conversationId)).toEqual(expected);
    expect(await conversationRow(target.conversationId)).toMatchObject({
      message_count: 2,
      last_message_at: (second.event.data as Message).createdAt,
    });

    // The whole batch redelivered, then again in another order.
    expectAllAcked(await deliver([first, first, second], 2, ids), ids);
    expectAllAcked(await deliver([second, first], 3, ["q-4", "q-5"]), ["q-4", "q-5"]);
    expect(await archived(target.conversationId)).toEqual(expected);
    expect(await archivedCount(target.conversationId)).toEqual({ n: 2, ids: 2 });

    // A late redelivery of an older mirror does not move the conversation's counters back.
    expectAllAcked(await deliver([first], 4, ["q-6"]), ["q-6"]);
    expect(await conversationRow(target.conversationId)).toMatchObject({ message_count: 2, version: 3 });
  });

  it("archives a batch too large for one statement: every message once, with exact text and data", async () => {
    // 24 maximum-size texts outside Latin-1 (3 bytes each in UTF-8): more than one statement's JSON carries.
    const a = syntheticConversation();
    const b = syntheticConversation();
    const text = (i: number) => `${i}:`.padEnd(32768, "中");
    const bodies = Array.from({ length: 24 }, (_, i) => messageBody(i % 2 ? b : a, Math.floor(i / 2) + 1, text(i)));
    const ids = bodies.map((_, i) => `big-${i}`);
    expectAllAcked(await deliver(bodies, 1, ids), ids);
    for (const target of [a, b]) {
      const expected = bodies.map((body) => body.event.data as Message).filter((m) => m.roomId === target.roomId);
      expect(await archived(target.conversationId)).toEqual(expected);
      expect(await conversationRow(target.conversationId)).toMatchObject({ message_count: 12, version: 13 });
    }
  }, 30_000);

  it("retries the whole batch and acks nothing while D1 fails", async () => {
    const target = syntheticConversation();
    const bodies = [messageBody(target, 1, "one"), messageBody(target, 2, "two")];
    await breakArchive();
    let result;
    try {
      result = await deliver(bodies, 1, ["r-1", "r-2"]);
    } finally {
      await repairArchive();
    }
    expect(result.retryBatch.retry, JSON.stringify(result)).toBe(true);
    expect(result.ackAll).toBe(false);
    expect(result.explicitAcks).toEqual([]);
    // The batch is one transaction: not even the conversation mirror was written.
    expect(await conversationRow(target.conversationId)).toBeNull();
    expect(await archived(target.conversationId)).toEqual([]);

    // The retry, once D1 is back, archives everything.
    expectAllAcked(await deliver(bodies, 2, ["r-1", "r-2"]), ["r-1", "r-2"]);
    expect(await archived(target.conversationId)).toEqual(bodies.map((b) => b.event.data));
  });

  it("acks and drops malformed bodies without failing the batch", async () => {
    const target = syntheticConversation();
    const good = messageBody(target, 1, "good");
    const ids = ["g-1", "bad-1", "bad-2", "bad-3", "bad-4", "g-2"];
    const good2 = messageBody(target, 2, "also good");
    const result = await deliver(
      [
        good,
        { hello: "world" },
        "not json at all",
        { event: { id: 42, type: "conversation.message_posted" } },
        null,
        good2,
      ],
      1,
      ids,
    );
    expectAllAcked(result, ids);
    expect(await archived(target.conversationId)).toEqual([good.event.data, good2.event.data]);
  });
});

describe("packed queue messages", () => {
  it("pack bodies in order, within the byte and count limits, and a body on its own stays as it is", () => {
    const target = syntheticConversation();
    const bodies = Array.from({ length: 70 }, (_, i) => JSON.stringify(messageBody(target, i + 1, `m${i}`)));
    const packed = packBodies(bodies);
    expect(packed).toHaveLength(Math.ceil(70 / PACK_BODIES));
    expect(packed.flatMap((text) => unpackBodies(JSON.parse(text)))).toEqual(bodies.map((b) => JSON.parse(b)));
    expect(packBodies(bodies.slice(0, 1))).toEqual(bodies.slice(0, 1));
    // Large bodies: each message stays within the byte limit (characters of 3 bytes each counted as such).
    const large = Array.from({ length: 8 }, (_, i) => JSON.stringify(messageBody(target, i + 1, "€".repeat(10_000))));
    const messages = packBodies(large);
    for (const text of messages) expect(new TextEncoder().encode(text).byteLength).toBeLessThanOrEqual(PACK_BYTES);
    expect(messages.length).toBeGreaterThan(1);
    expect(messages.flatMap((text) => unpackBodies(JSON.parse(text)))).toEqual(large.map((b) => JSON.parse(b)));
  });

  it("are consumed body by body: every message archived once, malformed bodies dropped, the batch acked", async () => {
    const target = syntheticConversation();
    const bodies = Array.from({ length: 5 }, (_, i) => messageBody(target, i + 1, `packed ${i}`));
    const [packed] = packBodies(bodies.map((body) => JSON.stringify(body)));
    const withBad = JSON.stringify({ bodies: [bodies[0], { hello: "world" }, bodies[1]] });
    // A packed message, a redelivered part of it, and a single body: as text, the way the room sends them.
    const ids = ["p-1", "p-2", "p-3"];
    expectAllAcked(await deliver([packed, withBad, JSON.stringify(bodies[4])], 1, ids), ids);
    expect(await archived(target.conversationId)).toEqual(bodies.map((b) => b.event.data));
  });
});

describe("events on the queue", () => {
  it("follow the contract's envelope for conversation.created and message_posted", async () => {
    const f = await createFixture();
    const room = roomObject(f.room.id);
    const conversationId = newConversationId(f.room.id);

    // Outbox rows are read right after each commit, before the next write prunes those the drain delivered.
    const { outbox, created, posted } = await runInDurableObject(room, async (instance: Room, state) => {
      const rows = () =>
        state.storage.sql
          .exec<{ body: string }>("SELECT body FROM outbox ORDER BY id")
          .toArray()
          .map((row) => JSON.parse(row.body) as QueueBody);
      const created = await instance.createConversation({ orgId: f.orgId }, conversationId, { name: "Envelopes" });
      const afterCreate = rows();
      const posted = await instance.postMessage({ orgId: f.orgId }, conversationId, {
        authorId: f.alice.id,
        text: "hello events",
        data: { n: 1 },
        attachments: [],
        clientMessageId: "env-1",
      });
      return { outbox: [...afterCreate, ...rows()], created, posted };
    });
    expect(created.ok && posted.ok, JSON.stringify({ created, posted })).toBe(true);
    if (!created.ok || !posted.ok) return;
    const message = posted.value.message;

    const createdEvent = outbox.find(
      (b) => b.event.type === "conversation.created" && b.event.resourceId === conversationId,
    )?.event;
    const postedEvent = outbox.find(
      (b) => b.event.type === "conversation.message_posted" && b.event.resourceId === conversationId,
    )?.event;
    expect(createdEvent, JSON.stringify(outbox)).toBeDefined();
    expect(postedEvent, JSON.stringify(outbox)).toBeDefined();

    expect(createdEvent).toEqual({
      id: expect.stringMatching(/^evt_[0-9a-z]+$/),
      type: "conversation.created",
      topic: `events.${f.orgId}.conversations.conversation.created.${conversationId}`,
      orgId: f.orgId,
      source: "conversations",
      resource: "conversation",
      event: "created",
      resourceId: conversationId,
      occurredAt: expect.stringMatching(ISO),
      data: created.value.conversation,
    });
    expect(createdEvent!.data).toMatchObject({
      id: conversationId,
      orgId: f.orgId,
      roomId: f.room.id,
      messageCount: 0,
    });

    expect(postedEvent).toEqual({
      id: expect.stringMatching(/^evt_[0-9a-z]+$/),
      type: "conversation.message_posted",
      topic: `events.${f.orgId}.conversations.conversation.message_posted.${conversationId}`,
      orgId: f.orgId,
      source: "conversations",
      resource: "conversation",
      event: "message_posted",
      resourceId: conversationId,
      occurredAt: expect.stringMatching(ISO),
      data: message,
    });
    expect(postedEvent!.id).not.toBe(createdEvent!.id);
    expect(message).toMatchObject({ seq: 1, text: "hello events", clientMessageId: "env-1", type: "user" });

    // The event's data is the message clients read from the room, and the consumer archived that same message.
    expect(await roomHistory(f.apiKey, conversationId)).toEqual([message]);
    await until(async () => {
      expect(await archived(conversationId)).toEqual([message]);
      expect(await conversationRow(conversationId)).toMatchObject({
        message_count: 1,
        last_message_at: message.createdAt,
      });
      expect(await room.pendingEvents()).toBe(0);
    });
  });

  it("publish message_posted for posts through the REST API, archived under the acknowledged id", async () => {
    const f = await createFixture();
    const r = await post(f.apiKey, f.conversation.id, { text: "via rest", authorId: f.alice.id });
    expect(r.status).toBe(201);
    await until(async () => {
      expect(await archived(f.conversation.id)).toEqual([r.body]);
    });
  });
});
