import { env, evictDurableObject, runDurableObjectAlarm } from "cloudflare:test";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { hubStub } from "../../src/hub/client";
import { REALTIME_LIMITS } from "../../src/protocol/frames";
import { roomStub } from "../../src/room/client";
import { accountToken, call, createFixture, createOrg, eventually, expectError } from "../helpers/api";
import {
  addParticipant,
  autoPing,
  closedWithin,
  Counter,
  inObject,
  conversationTopic,
  createConversation,
  createRoom,
  createUser,
  expectRecoveryWhilePosting,
  expectReplaySkipsWhatTheConnectionHas,
  hubObject,
  openHub,
  openRoom,
  pool,
  postOk,
  range,
  removeParticipant,
  request,
  roomObject,
  seqsOf,
  sessionToken,
  sleep,
  subscribe,
  upgrade,
  type LoggedSocket,
} from "../helpers/realtime";

// Contract section 8 for `GET /v1/rooms/{roomId}/realtime`, with the posting rules of section 6 and the events of
// section 7. Every test makes its own org.

type Fixture = Awaited<ReturnType<typeof createFixture>>;

const realtimePath = (roomId: string) => `/v1/rooms/${roomId}/realtime`;

/** Asserts an error frame: `{ type: "error", id?, error: { code, message } }`. */
function expectErrorFrame(frame: any, code: string, id?: string) {
  expect(frame, JSON.stringify(frame)).toMatchObject({ type: "error", error: { code } });
  expect(typeof frame.error.message).toBe("string");
  expect(frame.error.message.length).toBeGreaterThan(0);
  if (id === undefined) expect(frame.id).toBeUndefined();
  else expect(frame.id).toBe(id);
}

/** Waits for the next error frame after index `from` of the log. */
function nextError(socket: LoggedSocket, from: number) {
  return socket.waitLog((f) => f.type === "error", 5_000, from);
}

/** A token signed like ours, with claims of our choosing (to build expired and foreign tokens). */
async function forgeToken(claims: Record<string, unknown>, secret = env.JWT_SECRET!) {
  const now = Math.floor(Date.now() / 1000);
  return sign(
    { iss: "parley", aud: "parley-api", typ: "account", iat: now, exp: now + 600, ...claims },
    secret,
    "HS256",
  );
}

/** Bob's account-token socket on the fixture's room, subscribed to the fixture conversation's message_posted. */
async function bobListening(f: Fixture) {
  const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
  await subscribe(socket, conversationTopic(f.orgId, f.conversation.id));
  return socket;
}

describe("room socket upgrade: authenticated before the socket is accepted", () => {
  it("answers 401 UNAUTHORIZED in the contract's shape without a token", async () => {
    const f = await createFixture();
    const response = await upgrade(realtimePath(f.room.id));
    expectError(response, 401, "UNAUTHORIZED");
    expect(response.headers.get("x-request-id")).toBe(response.body.error.requestId);
  });

  it("answers 401 for malformed, tampered, expired, foreign-signed and unknown credentials", async () => {
    const f = await createFixture();
    const good = await accountToken(f.apiKey, f.alice.id);
    const [header, payload, signature] = good.split(".");
    const tampered = `${header}.${payload}.${signature.slice(0, 5)}${signature[5] === "a" ? "b" : "a"}${signature.slice(6)}`;
    const expired = await forgeToken({
      sub: f.alice.id,
      org: f.orgId,
      iat: Math.floor(Date.now() / 1000) - 7_200,
      exp: Math.floor(Date.now() / 1000) - 3_600,
    });
    const foreign = await forgeToken({ sub: f.alice.id, org: f.orgId }, "another-secret-0123456789abcdef!");
    const unknownKey = `sk_${"0".repeat(40)}`;
    for (const token of ["garbage", tampered, expired, foreign, unknownKey]) {
      expectError(await upgrade(realtimePath(f.room.id), { token }), 401, "UNAUTHORIZED");
    }
    // the same credentials in the Authorization header
    expectError(await upgrade(realtimePath(f.room.id), { header: expired }), 401, "UNAUTHORIZED");
    // a well-formed token is accepted: the forger signs like the service
    const accepted = await upgrade(realtimePath(f.room.id), {
      token: await forgeToken({ sub: f.alice.id, org: f.orgId }),
    });
    expect(accepted.status).toBe(101);
    // Like every response, the 101 carries its request id (the org stream's too).
    expect(accepted.headers.get("x-request-id")).toMatch(/^req_/);
    const hub = await upgrade("/v1/realtime", { token: f.apiKey });
    expect(hub.status).toBe(101);
    expect(hub.headers.get("x-request-id")).toMatch(/^req_/);
  });

  it("answers 403 FORBIDDEN for an account of the org that is not a participant", async () => {
    const f = await createFixture();
    const carol = await createUser(f.apiKey, "Carol");
    const response = await upgrade(realtimePath(f.room.id), { token: await accountToken(f.apiKey, carol.id) });
    expectError(response, 403, "FORBIDDEN");
  });

  it("answers 404 NOT_FOUND for another org's API key (the room's existence does not leak)", async () => {
    const f = await createFixture();
    const other = await createOrg("Other");
    expectError(await upgrade(realtimePath(f.room.id), { token: other.apiKey }), 404, "NOT_FOUND");
    // and for a room id that exists nowhere
    expectError(await upgrade(realtimePath(`room_${"0".repeat(26)}`), { token: f.apiKey }), 404, "NOT_FOUND");
  });

  it("answers 403 for a session token of another room's conversation", async () => {
    const f = await createFixture();
    const room2 = await createRoom(f.apiKey, [{ accountId: f.alice.id }, { accountId: f.bob.id }]);
    const conv2 = await createConversation(f.apiKey, room2.id);
    const token = await sessionToken(f.apiKey, conv2.id, f.alice.id);
    expectError(await upgrade(realtimePath(f.room.id), { token }), 403, "FORBIDDEN");
    // the same token opens its own conversation's room
    expect((await upgrade(realtimePath(room2.id), { token })).status).toBe(101);
  });

  it("answers 400 BAD_REQUEST to a GET that is not a WebSocket upgrade", async () => {
    const f = await createFixture();
    for (const header of [f.apiKey, await accountToken(f.apiKey, f.alice.id)]) {
      const response = await upgrade(realtimePath(f.room.id), { header, upgrade: false });
      expectError(response, 400, "BAD_REQUEST");
      expect(response.body.error.details).toEqual([{ path: "(headers).upgrade", message: "must be 'websocket'" }]);
      expect(response.headers.get("x-request-id")).toBeTruthy();
    }
    // A refused credential is named first, so that a client (a browser sees a refused upgrade only as 1006) can ask.
    const carol = await createUser(f.apiKey, "Carol");
    const outsider = { header: await accountToken(f.apiKey, carol.id), upgrade: false };
    expectError(await upgrade(realtimePath(f.room.id), outsider), 403, "FORBIDDEN");
    expectError(await upgrade(realtimePath(f.room.id), { header: "garbage", upgrade: false }), 401, "UNAUTHORIZED");
  });

  it("accepts an API key, a participant's account token and a session token of the room", async () => {
    const f = await createFixture();
    const tokens = [
      f.apiKey,
      await accountToken(f.apiKey, f.bob.id),
      await sessionToken(f.apiKey, f.conversation.id, f.bob.id),
    ];
    for (const token of tokens) {
      expect((await upgrade(realtimePath(f.room.id), { token })).status).toBe(101);
      expect((await upgrade(realtimePath(f.room.id), { header: token })).status).toBe(101);
    }
  });
});

describe("room socket subscriptions", () => {
  it("acks a subscribe and delivers only events whose topic matches, in the contract's envelope", async () => {
    const f = await createFixture();
    const conv2 = await createConversation(f.apiKey, f.room.id);
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const topic = conversationTopic(f.orgId, f.conversation.id);
    const ack = await request(socket, { type: "subscribe", id: "s-1", topic });
    expect(ack).toMatchObject({ type: "ack", id: "s-1" });

    await postOk(f.apiKey, conv2.id, { text: "elsewhere", authorId: f.alice.id });
    const patched = await call("PATCH", `/v1/conversations/${f.conversation.id}`, {
      token: f.apiKey,
      body: { name: "Renamed" },
    });
    expect(patched.status).toBe(200);
    const message = await postOk(f.apiKey, f.conversation.id, { text: "here", authorId: f.alice.id });
    await socket.flush();

    const events = socket.events();
    expect(events).toHaveLength(1);
    const [frame] = events;
    expect(frame.topic).toBe(topic);
    expect(frame.event).toEqual({
      id: expect.stringMatching(/^evt_/),
      type: "conversation.message_posted",
      topic,
      orgId: f.orgId,
      source: "conversations",
      resource: "conversation",
      event: "message_posted",
      resourceId: f.conversation.id,
      occurredAt: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
      data: message,
    });
  });

  it("sends an event once per connection however many subscriptions match", async () => {
    const f = await createFixture();
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    for (const topic of [
      `events.${f.orgId}.>`,
      `events.${f.orgId}.conversations.>`,
      `events.${f.orgId}.*.*.*.*`,
      `events.${f.orgId}.conversations.conversation.message_posted.*`,
      `events.${f.orgId}.*.*.*.${f.conversation.id}`,
      conversationTopic(f.orgId, f.conversation.id),
    ]) {
      await subscribe(socket, topic);
    }
    const posted = [];
    for (const text of ["one", "two", "three"]) {
      posted.push(await postOk(f.apiKey, f.conversation.id, { text, authorId: f.alice.id }));
    }
    await socket.flush();
    const events = socket.events((e) => e.event.type === "conversation.message_posted");
    expect(events.map((e) => e.event.data.id)).toEqual(posted.map((m) => m.id));
    expect(new Set(socket.events().map((e) => e.event.id)).size).toBe(socket.events().length);
  });

  it("stops delivery after unsubscribe, per subscription", async () => {
    const f = await createFixture();
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const exact = conversationTopic(f.orgId, f.conversation.id);
    const wide = `events.${f.orgId}.conversations.conversation.message_posted.*`;
    await subscribe(socket, exact);
    await subscribe(socket, wide);

    const unsubscribed = await request(socket, { type: "unsubscribe", id: "u-1", topic: exact });
    expect(unsubscribed).toMatchObject({ type: "ack", id: "u-1" });
    const first = await postOk(f.apiKey, f.conversation.id, { text: "still via the wildcard", authorId: f.alice.id });
    await socket.flush();
    expect(socket.events().map((e) => e.event.data.id)).toEqual([first.id]);

    expect(await request(socket, { type: "unsubscribe", id: "u-2", topic: wide })).toMatchObject({
      type: "ack",
      id: "u-2",
    });
    await postOk(f.apiKey, f.conversation.id, { text: "nobody listens", authorId: f.alice.id });
    await socket.flush();
    expect(socket.events().map((e) => e.event.data.id)).toEqual([first.id]);

    // subscribing again resumes delivery
    await subscribe(socket, exact);
    const third = await postOk(f.apiKey, f.conversation.id, { text: "again", authorId: f.alice.id });
    await socket.flush();
    expect(socket.events().map((e) => e.event.data.id)).toEqual([first.id, third.id]);
  });

  it("answers bad frames with error frames and keeps the socket open", async () => {
    const f = await createFixture();
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const other = await createOrg("Other");
    const cases: { frame: string | Uint8Array; code: string; id?: string }[] = [
      { frame: "{not json", code: "BAD_REQUEST" },
      { frame: "", code: "BAD_REQUEST" },
      { frame: "null", code: "BAD_REQUEST" },
      { frame: "[1,2]", code: "BAD_REQUEST" },
      { frame: JSON.stringify({ type: "dance", id: "x-1" }), code: "BAD_REQUEST", id: "x-1" },
      { frame: JSON.stringify({ id: "x-2", topic: `events.${f.orgId}.>` }), code: "BAD_REQUEST", id: "x-2" },
      // bad topics
      {
        frame: JSON.stringify({
          type: "subscribe",
          id: "t-1",
          topic: `events.${f.orgId}.conversations.conversation.message_posted.conv*`,
        }),
        code: "BAD_REQUEST",
        id: "t-1",
      },
      {
        frame: JSON.stringify({ type: "subscribe", id: "t-2", topic: `events.${f.orgId}.conversations` }),
        code: "BAD_REQUEST",
        id: "t-2",
      },
      {
        frame: JSON.stringify({ type: "subscribe", id: "t-3", topic: `events.${f.orgId}.>.conversation.x.y` }),
        code: "BAD_REQUEST",
        id: "t-3",
      },
      {
        frame: JSON.stringify({ type: "subscribe", id: "t-4", topic: `evts.${f.orgId}.a.b.c.d` }),
        code: "BAD_REQUEST",
        id: "t-4",
      },
      // another org's topic
      {
        frame: JSON.stringify({ type: "subscribe", id: "o-1", topic: `events.${other.orgId}.>` }),
        code: "FORBIDDEN",
        id: "o-1",
      },
      {
        frame: JSON.stringify({
          type: "subscribe",
          id: "o-2",
          topic: conversationTopic(other.orgId, f.conversation.id),
        }),
        code: "FORBIDDEN",
        id: "o-2",
      },
      // missing or mistyped fields
      { frame: JSON.stringify({ type: "subscribe", id: "m-1" }), code: "BAD_REQUEST", id: "m-1" },
      { frame: JSON.stringify({ type: "subscribe", id: "m-2", topic: 7 }), code: "BAD_REQUEST", id: "m-2" },
      { frame: JSON.stringify({ type: "unsubscribe", id: "m-3" }), code: "BAD_REQUEST", id: "m-3" },
      // an unsubscribe names a topic of the grammar and of its own org too
      { frame: JSON.stringify({ type: "unsubscribe", id: "u-1", topic: "x.y" }), code: "BAD_REQUEST", id: "u-1" },
      {
        frame: JSON.stringify({ type: "unsubscribe", id: "u-2", topic: `events.${other.orgId}.>` }),
        code: "FORBIDDEN",
        id: "u-2",
      },
      { frame: JSON.stringify({ type: "message.post", id: "m-4", text: "hi" }), code: "BAD_REQUEST", id: "m-4" },
      { frame: JSON.stringify({ type: "typing", id: "m-5" }), code: "BAD_REQUEST", id: "m-5" },
      {
        frame: JSON.stringify({
          type: "subscribe",
          id: "m-6",
          topic: conversationTopic(f.orgId, f.conversation.id),
          sinceSeq: -1,
        }),
        code: "BAD_REQUEST",
        id: "m-6",
      },
      // binary frames are not JSON text
      { frame: new TextEncoder().encode(JSON.stringify({ type: "ping", id: "b-1" })), code: "BAD_REQUEST" },
    ];
    for (const { frame, code, id } of cases) {
      const from = socket.log.length;
      socket.sendRaw(frame);
      expectErrorFrame(await nextError(socket, from), code, id);
    }
    // every error left the socket open and its state intact: a valid subscription still works
    await socket.flush();
    await subscribe(socket, conversationTopic(f.orgId, f.conversation.id));
    await postOk(f.apiKey, f.conversation.id, { text: "after the errors", authorId: f.alice.id });
    const event = await socket.waitLog((frame) => frame.type === "event");
    expect(event.event.data.text).toBe("after the errors");
    // none of the refused topics became a subscription
    expect(socket.events()).toHaveLength(1);
  });

  it("closes the socket with 1009 for a frame over 64 KiB, and accepts one of exactly 64 KiB", async () => {
    const f = await createFixture();
    const token = await accountToken(f.apiKey, f.bob.id);
    const socket = await openRoom(f.room.id, token);
    const frameOf = (bytes: number, id: string) => {
      const base = JSON.stringify({ type: "ping", id, pad: "" });
      const text = JSON.stringify({ type: "ping", id, pad: "x".repeat(bytes - base.length) });
      expect(new TextEncoder().encode(text).byteLength).toBe(bytes);
      return text;
    };
    const from = socket.log.length;
    socket.sendRaw(frameOf(64 * 1024, "exact"));
    await socket.waitLog((frame) => frame.type === "ack" && frame.id === "exact", 5_000, from);
    // bytes, not characters: 2-byte characters push a frame of fewer than 64 Ki characters over the limit
    const wide = JSON.stringify({ type: "ping", id: "wide", pad: "é".repeat(33_000) });
    expect(wide.length).toBeLessThan(64 * 1024);
    socket.sendRaw(wide);
    const closed = await closedWithin(socket);
    expect(closed.code).toBe(1009);

    const second = await openRoom(f.room.id, token);
    second.sendRaw(frameOf(64 * 1024 + 1, "over"));
    expect((await closedWithin(second)).code).toBe(1009);
    expect(second.log.filter((frame) => frame.id === "over")).toEqual([]);

    // the room keeps serving other sockets
    const third = await bobListening(f);
    await postOk(f.apiKey, f.conversation.id, { text: "still here", authorId: f.alice.id });
    expect((await third.waitLog((frame) => frame.type === "event")).event.data.text).toBe("still here");
  });

  it("refuses the 101st subscription with an error frame and keeps the first 100", async () => {
    const f = await createFixture();
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    // full-length topics, as a client following 100 conversations of the room would send them
    const topicNo = (i: number) =>
      conversationTopic(f.orgId, `${f.conversation.id.slice(0, -4)}${i.toString(36).padStart(4, "0")}`);
    expect(topicNo(1).length).toBe(conversationTopic(f.orgId, f.conversation.id).length);
    await subscribe(socket, conversationTopic(f.orgId, f.conversation.id));
    for (let i = 1; i < 100; i++) await subscribe(socket, topicNo(i));
    const refused = await request(socket, { type: "subscribe", id: "sub-101", topic: topicNo(100) });
    expectErrorFrame(refused, "BAD_REQUEST", "sub-101");
    // subscribing again to a topic it already has is not a new subscription
    await subscribe(socket, topicNo(5));
    // the first subscription still delivers
    await postOk(f.apiKey, f.conversation.id, { text: "one", authorId: f.alice.id });
    expect((await socket.waitLog((frame) => frame.type === "event")).event.data.text).toBe("one");
    // after an unsubscribe there is room for one more, and no more than that
    await request(socket, { type: "unsubscribe", topic: topicNo(1) });
    await subscribe(socket, topicNo(100));
    expectErrorFrame(
      await request(socket, { type: "subscribe", id: "sub-102", topic: topicNo(101) }),
      "BAD_REQUEST",
      "sub-102",
    );
  });
});

describe("room socket acks and pings", () => {
  it("acks every client frame that carries an id", async () => {
    const f = await createFixture();
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const topic = conversationTopic(f.orgId, f.conversation.id);
    const frames: Record<string, unknown>[] = [
      { type: "subscribe", id: "f-1", topic },
      { type: "unsubscribe", id: "f-2", topic },
      { type: "ping", id: "f-3" },
      { type: "pong", id: "f-4" },
      { type: "typing", id: "f-5", conversationId: f.conversation.id },
      { type: "message.post", id: "f-6", conversationId: f.conversation.id, text: "hi" },
    ];
    for (const frame of frames) {
      const answer = await request(socket, frame);
      expect(answer, JSON.stringify(frame)).toMatchObject({ type: "ack", id: frame.id });
    }
    // a ping with an id is answered with a pong too
    expect(socket.log.filter((frame) => frame.type === "pong")).toEqual([{ type: "pong", id: "f-3" }]);
  });

  it("answers a ping that is not the exact auto-response text, and sends nothing for a frame without id", async () => {
    const f = await createFixture();
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    socket.sendRaw('{ "type": "ping" }');
    expect(await socket.waitLog((frame) => frame.type === "pong")).toEqual({ type: "pong" });
    expect(await autoPing(socket)).toEqual({ type: "pong" });
    socket.send({ type: "pong" });
    socket.send({ type: "subscribe", topic: conversationTopic(f.orgId, f.conversation.id) });
    await socket.flush();
    expect(socket.log.filter((frame) => frame.type !== "pong" && !String(frame.id).startsWith("flush-"))).toEqual([]);
    // the id-less subscribe took effect
    await postOk(f.apiKey, f.conversation.id, { text: "hello", authorId: f.alice.id });
    expect((await socket.waitLog((frame) => frame.type === "event")).event.data.text).toBe("hello");
  });
});

describe("room socket message.post", () => {
  it("acks with the message and its seq, and other sockets get the event", async () => {
    const f = await createFixture();
    const listener = await bobListening(f);
    const alice = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));
    const ack = await request(alice, {
      type: "message.post",
      id: "p-1",
      conversationId: f.conversation.id,
      text: "from the socket",
      data: { kind: "greeting" },
    });
    expect(ack).toMatchObject({
      type: "ack",
      id: "p-1",
      message: {
        conversationId: f.conversation.id,
        roomId: f.room.id,
        orgId: f.orgId,
        seq: 1,
        authorId: f.alice.id,
        type: "user",
        text: "from the socket",
        data: { kind: "greeting" },
        clientMessageId: null,
      },
    });
    expect(ack.message.id).toMatch(/^msg_/);
    const second = await request(alice, {
      type: "message.post",
      conversationId: f.conversation.id,
      text: "next",
    });
    expect(second.message.seq).toBe(2);
    await listener.waitLog((frame) => frame.type === "event" && frame.event.data.seq === 2);
    expect(listener.events().map((e) => e.event.data)).toEqual([ack.message, second.message]);
    const history = await call("GET", `/v1/conversations/${f.conversation.id}/messages`, { token: f.apiKey });
    expect(history.body.items).toEqual([ack.message, second.message]);
  });

  it("a post sent to sockets whose write then fails closes them with 1011; recovery acks the stored lastSeq", async () => {
    const f = await createFixture();
    const listener = await bobListening(f);
    const first = await postOk(f.apiKey, f.conversation.id, { text: "stored", authorId: f.alice.id });
    await listener.waitLog((frame) => frame.type === "event" && frame.event.data.seq === 1);
    // The room sends a post to its sockets before its write: make that write fail.
    await inObject(roomObject(f.room.id), (_instance, state) =>
      state.storage.sql.exec(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.text = 'refused' BEGIN SELECT RAISE(ABORT, 'test'); END",
      ),
    );
    const alice = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));
    const closed = closedWithin(listener);
    alice.sendRaw(
      JSON.stringify({ type: "message.post", id: "p-1", conversationId: f.conversation.id, text: "refused" }),
    );
    expectErrorFrame(await nextError(alice, 0), "INTERNAL", "p-1");
    expect(await closed).toMatchObject({ code: 1011 });
    expect(seqsOf(listener.log)).toEqual([1, 2]); // the event it had before the write failed
    const history = await call("GET", `/v1/conversations/${f.conversation.id}/messages`, { token: f.apiKey });
    expect(history.body.items).toEqual([first]);

    // Bob reconnects from seq 2, which was never stored: the ack says the room has up to 1, and seq 2 goes to the
    // next message stored.
    const again = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const ack = await request(again, {
      type: "subscribe",
      topic: conversationTopic(f.orgId, f.conversation.id),
      sinceSeq: 2,
    });
    expect(ack).toMatchObject({ type: "ack", recovered: true, lastSeq: 1 });
    const next = await postOk(f.apiKey, f.conversation.id, { text: "after", authorId: f.alice.id });
    expect(next.seq).toBe(2);
    await again.waitLog((frame) => frame.type === "event" && frame.event.data.seq === 2);
    expect(again.events().map((e) => e.event.data)).toEqual([next]);
  });

  it("refuses an observer with a FORBIDDEN error frame and posts nothing", async () => {
    const f = await createFixture();
    const carol = await createUser(f.apiKey, "Carol");
    await addParticipant(f.apiKey, f.room.id, carol.id, "observer");
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, carol.id));
    await subscribe(socket, conversationTopic(f.orgId, f.conversation.id));
    const answer = await request(socket, {
      type: "message.post",
      id: "obs",
      conversationId: f.conversation.id,
      text: "may I?",
    });
    expectErrorFrame(answer, "FORBIDDEN", "obs");
    // nor does it type: it has nothing to post
    const typing = await request(socket, { type: "typing", id: "obs-t", conversationId: f.conversation.id });
    expectErrorFrame(typing, "FORBIDDEN", "obs-t");
    // an observer still reads: a participant's message reaches it
    await postOk(f.apiKey, f.conversation.id, { text: "you may read", authorId: f.bob.id });
    const event = await socket.waitLog((frame) => frame.type === "event");
    expect(event.event.data).toMatchObject({ seq: 1, text: "you may read" });
  });

  it("with an API key requires authorId (BAD_REQUEST with details) and posts as that participant", async () => {
    const f = await createFixture();
    const socket = await openRoom(f.room.id, f.apiKey);
    const missing = await request(socket, {
      type: "message.post",
      id: "k-1",
      conversationId: f.conversation.id,
      text: "who am I",
    });
    expectErrorFrame(missing, "BAD_REQUEST", "k-1");
    expect(missing.error.details).toEqual([{ path: "authorId", message: expect.any(String) }]);
    const ack = await request(socket, {
      type: "message.post",
      id: "k-2",
      conversationId: f.conversation.id,
      text: "as bob",
      authorId: f.bob.id,
    });
    expect(ack).toMatchObject({ type: "ack", id: "k-2", message: { authorId: f.bob.id, seq: 1 } });
    // an author who is not a participant is refused, like REST
    const carol = await createUser(f.apiKey, "Carol");
    const outsider = await request(socket, {
      type: "message.post",
      id: "k-3",
      conversationId: f.conversation.id,
      text: "as carol",
      authorId: carol.id,
    });
    expectErrorFrame(outsider, "FORBIDDEN", "k-3");
  });

  it("with an account token posts only as its own account", async () => {
    const f = await createFixture();
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const other = await request(socket, {
      type: "message.post",
      id: "a-1",
      conversationId: f.conversation.id,
      text: "as alice",
      authorId: f.alice.id,
    });
    expectErrorFrame(other, "FORBIDDEN", "a-1");
    const own = await request(socket, {
      type: "message.post",
      id: "a-2",
      conversationId: f.conversation.id,
      text: "as myself",
      authorId: f.bob.id,
    });
    expect(own).toMatchObject({ type: "ack", message: { authorId: f.bob.id, seq: 1 } });
  });

  it("is idempotent on clientMessageId: acked with the original, one event, shared with REST", async () => {
    const f = await createFixture();
    const listener = await bobListening(f);
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));
    const frame = { type: "message.post", conversationId: f.conversation.id, text: "once", clientMessageId: "c-1" };
    const first = await request(socket, frame);
    const again = await request(socket, { ...frame, text: "twice?" });
    expect(first.type).toBe("ack");
    expect(again.type).toBe("ack");
    expect(again.message).toEqual(first.message);
    expect(first.message).toMatchObject({ seq: 1, text: "once", clientMessageId: "c-1" });
    const rest = await call("POST", `/v1/conversations/${f.conversation.id}/messages`, {
      token: f.apiKey,
      body: { text: "thrice?", clientMessageId: "c-1", authorId: f.alice.id },
    });
    expect(rest.status).toBe(200);
    expect(rest.body).toEqual(first.message);
    const next = await request(socket, { ...frame, clientMessageId: "c-2" });
    expect(next.message.seq).toBe(2);
    await listener.waitLog((f2) => f2.type === "event" && f2.event.data.seq === 2);
    await listener.flush();
    expect(seqsOf(listener.log)).toEqual([1, 2]);
  });

  it("answers a bad body with BAD_REQUEST and details, and unknown conversations with NOT_FOUND", async () => {
    const f = await createFixture();
    const room2 = await createRoom(f.apiKey, [{ accountId: f.alice.id }]);
    const conv2 = await createConversation(f.apiKey, room2.id);
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));
    const post = (fields: Record<string, unknown>) =>
      request(socket, { type: "message.post", conversationId: f.conversation.id, ...fields });

    const cases: [Record<string, unknown>, string | null][] = [
      [{ text: "" }, "text"],
      [{ text: "x".repeat(32_769) }, "text"],
      [{ text: 5 }, "text"],
      [{ data: "not an object" }, "data"],
      [{ data: { blob: "x".repeat(17 * 1024) } }, "data"],
      [{ text: "ok", clientMessageId: "" }, "clientMessageId"],
      [{ text: "ok", attachmentIds: [] }, "attachmentIds"],
      [{}, null],
    ];
    for (const [fields, path] of cases) {
      const answer = await post(fields);
      expectErrorFrame(answer, "BAD_REQUEST", answer.id);
      expect(Array.isArray(answer.error.details), JSON.stringify(answer)).toBe(true);
      expect(answer.error.details.length).toBeGreaterThan(0);
      for (const detail of answer.error.details) {
        expect(typeof detail.path).toBe("string");
        expect(typeof detail.message).toBe("string");
      }
      if (path) expect(answer.error.details.map((d: any) => d.path)).toContain(path);
    }
    const unknownAttachment = await post({ text: "ok", attachmentIds: [`att_${"0".repeat(26)}`] });
    expectErrorFrame(unknownAttachment, "BAD_REQUEST", unknownAttachment.id);
    expect(unknownAttachment.error.details.map((d: any) => d.path)).toEqual(["attachmentIds.0"]);

    for (const conversationId of [conv2.id, `conv_${"0".repeat(36)}`]) {
      const answer = await post({ conversationId, text: "elsewhere" });
      expectErrorFrame(answer, "NOT_FOUND", answer.id);
    }
    // nothing was posted by any of them
    const history = await call("GET", `/v1/conversations/${f.conversation.id}/messages`, { token: f.apiKey });
    expect(history.body.items).toEqual([]);
    const history2 = await call("GET", `/v1/conversations/${conv2.id}/messages`, { token: f.apiKey });
    expect(history2.body.items).toEqual([]);
  });

  it("a session-token socket posts only to its own conversation", async () => {
    const f = await createFixture();
    const conv2 = await createConversation(f.apiKey, f.room.id);
    const socket = await openRoom(f.room.id, await sessionToken(f.apiKey, f.conversation.id, f.bob.id));
    const own = await request(socket, { type: "message.post", conversationId: f.conversation.id, text: "mine" });
    expect(own).toMatchObject({ type: "ack", message: { authorId: f.bob.id, seq: 1 } });
    const other = await request(socket, { type: "message.post", conversationId: conv2.id, text: "not mine" });
    expect(other.type).toBe("error");
    expect(["NOT_FOUND", "FORBIDDEN"]).toContain(other.error.code);
    const history = await call("GET", `/v1/conversations/${conv2.id}/messages`, { token: f.apiKey });
    expect(history.body.items).toEqual([]);
  });

  it("rate-limits posting per connection with RATE_LIMITED error frames; other sockets keep working", async () => {
    const f = await createFixture();
    const listener = await bobListening(f);
    const burst = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));
    const ids = range(1, 40).map((i) => `burst-${i}`);
    for (const id of ids) {
      burst.send({ type: "message.post", id, conversationId: f.conversation.id, text: id });
    }
    const answers = await Promise.all(
      ids.map((id) =>
        burst.waitLog((frame) => (frame.type === "ack" || frame.type === "error") && frame.id === id, 10_000),
      ),
    );
    const acked = answers.filter((frame) => frame.type === "ack");
    const limited = answers.filter((frame) => frame.type === "error");
    for (const frame of limited) expectErrorFrame(frame, "RATE_LIMITED", frame.id);
    expect(limited.length).toBeGreaterThan(0);
    expect(acked.length).toBeGreaterThan(0);
    expect(acked.length + limited.length).toBe(40);
    // each id answered once
    expect(burst.log.filter((frame) => frame.type === "ack" || frame.type === "error")).toHaveLength(40);
    // exactly the acked posts exist, gapless
    const seqs = acked.map((frame) => frame.message.seq).sort((a, b) => a - b);
    expect(seqs).toEqual(range(1, acked.length));

    // another socket of the room posts at once, and the room still broadcasts
    const bob = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const other = await request(bob, { type: "message.post", conversationId: f.conversation.id, text: "calm" });
    expect(other).toMatchObject({ type: "ack", message: { seq: acked.length + 1 } });
    await listener.waitLog((frame) => frame.type === "event" && frame.event.data.text === "calm");
    expect(seqsOf(listener.log)).toEqual(range(1, acked.length + 1));
    // REST is not affected either
    await postOk(f.apiKey, f.conversation.id, { text: "rest", authorId: f.alice.id });
    // and the limited connection may post again once its budget refilled
    await sleep(1_200);
    const later = await request(burst, { type: "message.post", conversationId: f.conversation.id, text: "later" });
    expect(later).toMatchObject({ type: "ack", message: { seq: acked.length + 3 } });
  });
});

describe("frame floods", () => {
  it("frames past the connection's budget get RATE_LIMITED unread; a flood that goes on is closed with 1008", async () => {
    const f = await createFixture();
    const flood = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));
    const { frameBurst } = REALTIME_LIMITS;
    // A burst within the budget is answered frame by frame.
    for (let i = 0; i < frameBurst; i++) flood.send({ type: "ping", id: `p${i}` });
    await flood.waitLog((frame) => frame.type === "ack" && frame.id === `p${frameBurst - 1}`, 10_000);
    expect(flood.log.filter((frame) => frame.type === "pong")).toHaveLength(frameBurst);
    // Past it, frames are refused unread (no pong, no ack), then the connection is closed.
    const closed = closedWithin(flood, 10_000);
    for (let i = 0; i < 3 * frameBurst; i++) flood.send({ type: "ping", id: `q${i}` });
    expect(await closed).toEqual({ code: 1008, reason: "too many frames" });
    const refused = flood.log.filter((frame) => frame.type === "error");
    expect(refused.length).toBeGreaterThan(frameBurst / 2);
    for (const frame of refused) expect(frame.error.code).toBe("RATE_LIMITED");
    // Another socket of the room is unaffected.
    const bob = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const calm = await request(bob, { type: "message.post", conversationId: f.conversation.id, text: "calm" });
    expect(calm).toMatchObject({ type: "ack", message: { seq: 1 } });
  });
});

describe("room socket typing", () => {
  it("sends conversation.typing to the other sockets, not to the sender", async () => {
    const f = await createFixture();
    const typingTopic = conversationTopic(f.orgId, f.conversation.id, "typing");
    const alice = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));
    const bob = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const key = await openRoom(f.room.id, f.apiKey);
    await subscribe(alice, typingTopic);
    await subscribe(alice, `events.${f.orgId}.>`);
    await subscribe(bob, `events.${f.orgId}.conversations.conversation.typing.*`);
    await subscribe(key, `events.${f.orgId}.>`);

    const ack = await request(alice, { type: "typing", id: "ty-1", conversationId: f.conversation.id });
    expect(ack).toMatchObject({ type: "ack", id: "ty-1" });
    for (const socket of [bob, key]) {
      const frame = await socket.waitLog((f2) => f2.type === "event");
      expect(frame.topic).toBe(typingTopic);
      expect(frame.event).toMatchObject({
        type: "conversation.typing",
        topic: typingTopic,
        orgId: f.orgId,
        source: "conversations",
        resource: "conversation",
        event: "typing",
        resourceId: f.conversation.id,
        data: { accountId: f.alice.id, conversationId: f.conversation.id },
      });
    }
    await alice.flush();
    expect(alice.events()).toEqual([]);
    // typing is ephemeral: nothing in the history
    const history = await call("GET", `/v1/conversations/${f.conversation.id}/messages`, { token: f.apiKey });
    expect(history.body.items).toEqual([]);
    // typing in a conversation that is not the room's is an error frame
    const wrong = await request(alice, { type: "typing", id: "ty-2", conversationId: `conv_${"0".repeat(36)}` });
    expectErrorFrame(wrong, "NOT_FOUND", "ty-2");
  });
});

describe("room socket visibility", () => {
  it("a session-token socket only receives its own conversation's events, whatever it subscribed to", async () => {
    const f = await createFixture();
    const conv2 = await createConversation(f.apiKey, f.room.id, "Second");
    const session = await openRoom(f.room.id, await sessionToken(f.apiKey, f.conversation.id, f.bob.id));
    for (const topic of [
      `events.${f.orgId}.>`,
      `events.${f.orgId}.*.*.*.*`,
      conversationTopic(f.orgId, conv2.id),
      `events.${f.orgId}.conversations.room.>`,
    ]) {
      await subscribe(session, topic);
    }
    const witness = await openRoom(f.room.id, f.apiKey);
    await subscribe(witness, `events.${f.orgId}.>`);
    const alice = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));

    await postOk(f.apiKey, conv2.id, { text: "in the other conversation", authorId: f.alice.id });
    await call("PATCH", `/v1/conversations/${conv2.id}`, { token: f.apiKey, body: { name: "Renamed" } });
    await request(alice, { type: "typing", conversationId: conv2.id });
    const carol = await createUser(f.apiKey, "Carol");
    await addParticipant(f.apiKey, f.room.id, carol.id);
    const conv3 = await createConversation(f.apiKey, f.room.id, "Third");
    const own = await postOk(f.apiKey, f.conversation.id, { text: "mine", authorId: f.alice.id });
    await request(alice, { type: "typing", conversationId: f.conversation.id });

    await witness.waitLog(
      (frame) =>
        frame.type === "event" &&
        frame.event.type === "conversation.typing" &&
        frame.event.resourceId === f.conversation.id,
    );
    const seenByWitness = witness.events().map((e) => e.event.type);
    expect(seenByWitness).toEqual(
      expect.arrayContaining([
        "conversation.message_posted",
        "conversation.updated",
        "conversation.typing",
        "room.participant_added",
        "conversation.created",
      ]),
    );
    await session.flush();
    const received = session.events();
    expect(received.map((e) => [e.event.type, e.event.resourceId])).toEqual([
      ["conversation.message_posted", f.conversation.id],
      ["conversation.typing", f.conversation.id],
    ]);
    expect(received[0].event.data.id).toBe(own.id);
    expect(received.some((e) => e.event.resourceId === conv3.id)).toBe(false);

    // nor can it replay another conversation's history
    const recovery = await request(session, {
      type: "subscribe",
      topic: conversationTopic(f.orgId, conv2.id),
      sinceSeq: 0,
    });
    expect(recovery).toMatchObject({ type: "ack", recovered: false });
    await session.flush();
    expect(session.events().filter((e) => e.event.resourceId === conv2.id)).toEqual([]);
  });

  it("closes the sockets of a removed participant with 4003; the others stay open", async () => {
    const f = await createFixture();
    const bobToken = await accountToken(f.apiKey, f.bob.id);
    const bobAccount = await bobListening(f);
    const bobSession = await openRoom(f.room.id, await sessionToken(f.apiKey, f.conversation.id, f.bob.id));
    const alice = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));
    await subscribe(alice, `events.${f.orgId}.>`);

    await removeParticipant(f.apiKey, f.room.id, f.bob.id);
    expect((await closedWithin(bobAccount)).code).toBe(4003);
    expect((await closedWithin(bobSession)).code).toBe(4003);

    const removed = await alice.waitLog(
      (frame) => frame.type === "event" && frame.event.type === "room.participant_removed",
    );
    expect(removed.event.data.accountId).toBe(f.bob.id);
    await alice.flush();
    await postOk(f.apiKey, f.conversation.id, { text: "after bob left", authorId: f.alice.id });
    await alice.waitLog((frame) => frame.type === "event" && frame.event.type === "conversation.message_posted");
    // bob cannot come back on the same token
    expectError(await upgrade(realtimePath(f.room.id), { token: bobToken }), 403, "FORBIDDEN");
  });
});

describe("room socket ordering and recovery", () => {
  it("delivers 50 concurrent REST posts in seq order 1..50", async () => {
    const f = await createFixture();
    const socket = await bobListening(f);
    const messages = await Promise.all(
      range(1, 50).map((i) => postOk(f.apiKey, f.conversation.id, { text: `m${i}`, authorId: f.alice.id })),
    );
    expect(messages.map((m) => m.seq).sort((a, b) => a - b)).toEqual(range(1, 50));
    await socket.waitLog((frame) => frame.type === "event" && frame.event.data.seq === 50);
    await socket.flush();
    expect(seqsOf(socket.log)).toEqual(range(1, 50));
    // each event carries the message the post answered
    const byId = new Map(messages.map((m) => [m.id, m]));
    for (const frame of socket.events()) expect(frame.event.data).toEqual(byId.get(frame.event.data.id));
  });

  it("sinceSeq acks, replays in order, then continues live with no gap and no duplicate while posts race", async () => {
    const f = await createFixture();
    await pool(20, 5, (i) =>
      postOk(f.apiKey, f.conversation.id, { text: `before ${i}`, authorId: f.alice.id }).then(() => {}),
    );
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    await expectRecoveryWhilePosting(socket, f, { before: 20, racing: 40, sinceSeq: 5 });
  });

  it("a sinceSeq replay skips what another subscription of the connection delivered, and fills what it missed", async () => {
    const f = await createFixture();
    await expectReplaySkipsWhatTheConnectionHas(await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id)), f);
  });

  it("acks recovered: false for another room's conversation, a deleted one, or a wildcard topic", async () => {
    const f = await createFixture();
    const room2 = await createRoom(f.apiKey, [{ accountId: f.alice.id }, { accountId: f.bob.id }]);
    const conv2 = await createConversation(f.apiKey, room2.id);
    const doomed = await createConversation(f.apiKey, f.room.id, "Doomed");
    for (const conv of [conv2, doomed, f.conversation]) {
      await postOk(f.apiKey, conv.id, { text: "one", authorId: f.alice.id });
      await postOk(f.apiKey, conv.id, { text: "two", authorId: f.alice.id });
    }
    const deleted = await call("DELETE", `/v1/conversations/${doomed.id}`, { token: f.apiKey });
    expect(deleted.status).toBe(204);
    const socket = await openRoom(f.room.id, f.apiKey);

    for (const topic of [
      conversationTopic(f.orgId, conv2.id),
      conversationTopic(f.orgId, doomed.id),
      `events.${f.orgId}.conversations.conversation.message_posted.*`,
    ]) {
      const ack = await request(socket, { type: "subscribe", topic, sinceSeq: 0 });
      expect(ack, topic).toMatchObject({ type: "ack", recovered: false });
    }
    await socket.flush();
    expect(socket.events()).toEqual([]);
    // the room's own live conversation recovers
    const ok = await request(socket, {
      type: "subscribe",
      topic: conversationTopic(f.orgId, f.conversation.id),
      sinceSeq: 0,
    });
    expect(ok).toMatchObject({ type: "ack", recovered: true });
    await socket.waitLog((frame) => frame.type === "event" && frame.event.data.seq === 2);
    expect(seqsOf(socket.log)).toEqual([1, 2]);
  });

  it("receives 1..1000 exactly once and in order across 20 forced disconnects while they are posted", async () => {
    const TOTAL = 1_000;
    const DISCONNECTS = 20;
    const f = await createFixture();
    const token = await accountToken(f.apiKey, f.bob.id);
    const topic = conversationTopic(f.orgId, f.conversation.id);

    // The posts come in DISCONNECTS + 1 slices; slice k + 1 starts only once connection k was dropped, so every
    // disconnect falls in the middle of the posting however fast the posts are, and messages keep being posted
    // while the client is away.
    const sliceOf = (i: number) => Math.floor((i * (DISCONNECTS + 1)) / TOTAL);
    const sliceEnd = (k: number) => Array.from({ length: TOTAL }, (_, i) => i).filter((i) => sliceOf(i) <= k).length;
    const posted = new Counter();
    const dropped = new Counter();
    const posting = pool(TOTAL, 8, async (i) => {
      await dropped.reached(sliceOf(i));
      await postOk(f.apiKey, f.conversation.id, { text: `m${i}`, authorId: f.alice.id });
      posted.increment();
    });
    posting.catch(() => {}); // awaited below; keeps an early failure from being reported as unhandled

    const received: number[] = [];
    const postedAtClose: number[] = [];
    let last = 0;
    for (let connection = 0; connection <= DISCONNECTS; connection++) {
      const socket = await openRoom(f.room.id, token);
      const ack = await request(socket, { type: "subscribe", id: `c${connection}`, topic, sinceSeq: last });
      expect(ack).toMatchObject({ type: "ack", recovered: true });
      if (connection < DISCONNECTS) {
        // read while the posts pass this connection's share of the total (spreading the disconnects over the
        // posting), then drop the connection: whatever arrives after this point is treated as lost
        await posted.reached(sliceEnd(connection));
        // every other connection first reads what the room sent so far; the others are dropped at once
        if (connection % 2 === 0) await socket.flush();
        postedAtClose.push(posted.value);
      } else {
        await posting;
        if (last < TOTAL) {
          await socket.waitLog((frame) => frame.type === "event" && frame.event.data.seq === TOTAL, 20_000);
        }
        await socket.flush();
      }
      const seen = socket.log.slice();
      socket.ws.close(4000, "forced");
      dropped.increment();
      const ackAt = seen.indexOf(seen.find((frame) => frame.type === "ack" && frame.id === `c${connection}`));
      expect(seen.slice(0, ackAt).filter((frame) => frame.type === "event")).toEqual([]);
      const seqs = seqsOf(seen);
      expect(seqs, `connection ${connection} after seq ${last}`).toEqual(range(last + 1, last + seqs.length));
      received.push(...seqs);
      if (seqs.length > 0) last = seqs[seqs.length - 1];
    }
    expect(received.length).toBe(TOTAL);
    expect(received).toEqual(range(1, TOTAL));
    // the disconnects really happened while messages were being posted
    expect(postedAtClose.filter((n) => n > 0 && n < TOTAL).length).toBeGreaterThanOrEqual(15);
  }, 90_000);
});

describe("room socket hibernation and keep-alive", () => {
  it("keeps a hibernated socket's subscriptions, and answers a ping without waking the room", async () => {
    const f = await createFixture();
    const conv2 = await createConversation(f.apiKey, f.room.id);
    const socket = await bobListening(f);
    const stub = roomObject(f.room.id);
    // Run the pending outbox alarm now (it then sleeps 30 s), so that no alarm wakes the room during the probe.
    await runDurableObjectAlarm(stub);

    // How "without waking" is proven: (1) a marker put on the live instance is gone afterwards, so the room was
    // really evicted and the instance we look at later is a new one; (2) the runtime records the time at which it
    // answered a ping itself (`getWebSocketAutoResponseTimestamp`), which it sets only when the auto-response
    // answered, never when our handler did; (3) the socket registry's in-memory map of sockets (`live`) is filled
    // the moment any frame reaches `webSocketMessage`, and is empty in the instance that exists after the ping;
    // and a control frame that is not the exact ping text (a ping with an id) does fill it, so the probe can fail.
    await inObject(stub, (instance: any) => {
      instance.probe = "before eviction";
    });
    await evictDurableObject(stub, { webSockets: "hibernate" });
    const before = Date.now();
    expect(await autoPing(socket)).toEqual({ type: "pong" });
    const afterPing = await inObject(stub, (instance: any, state) => ({
      probe: instance.probe,
      handled: instance.sockets.live.size as number,
      autoResponse: state.getWebSockets().map((ws) => state.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? null),
    }));
    expect(afterPing.probe).toBeUndefined();
    expect(afterPing.handled).toBe(0);
    expect(afterPing.autoResponse).toHaveLength(1);
    expect(afterPing.autoResponse[0]).not.toBeNull();
    expect(afterPing.autoResponse[0]!).toBeGreaterThanOrEqual(before - 1_000);

    // control: a frame the handler must see is visible to the probe
    const control = await request(socket, { type: "ping", id: "control" });
    expect(control).toMatchObject({ type: "ack", id: "control" });
    expect(await inObject(stub, (instance: any) => instance.sockets.live.size)).toBe(1);

    // hibernate again; the next post wakes the room, which still knows the socket's subscription (and only that one)
    await evictDurableObject(stub, { webSockets: "hibernate" });
    await postOk(f.apiKey, conv2.id, { text: "not subscribed", authorId: f.alice.id });
    const message = await postOk(f.apiKey, f.conversation.id, { text: "after hibernation", authorId: f.alice.id });
    const event = await socket.waitLog((frame) => frame.type === "event");
    expect(event.event.data).toEqual(message);
    await socket.flush();
    expect(socket.events()).toHaveLength(1);
    // the socket's principal survived too: it still posts as bob
    const ack = await request(socket, { type: "message.post", conversationId: f.conversation.id, text: "me" });
    expect(ack).toMatchObject({ type: "ack", message: { authorId: f.bob.id } });
  });

  it("the alarm closes a socket silent for 80 s, pings one silent for 65 s, and spares sockets that pinged", async () => {
    const f = await createFixture();
    const carol = await createUser(f.apiKey, "Carol");
    await addParticipant(f.apiKey, f.room.id, carol.id);
    const idle = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id)); // tag acc:alice
    const quiet = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id)); // tag acc:bob
    const pinger = await openRoom(f.room.id, await accountToken(f.apiKey, carol.id)); // tag acc:carol
    const fresh = await openRoom(f.room.id, f.apiKey); // tag key
    for (const socket of [idle, quiet, pinger, fresh])
      await subscribe(socket, conversationTopic(f.orgId, f.conversation.id));
    // the pinger only sends the exact ping, which the runtime answers for the room
    expect(await autoPing(pinger)).toEqual({ type: "pong" });

    const stub = roomObject(f.room.id);
    await inObject(stub, (_instance, state) => {
      const age = (tag: string, ms: number) => {
        const sockets = state.getWebSockets(tag);
        expect(sockets).toHaveLength(1);
        for (const ws of sockets) {
          const attachment = ws.deserializeAttachment() as { seen: number };
          expect(typeof attachment.seen).toBe("number");
          ws.serializeAttachment({ ...attachment, seen: Date.now() - ms });
        }
      };
      age(`acc:${f.alice.id}`, 80_000);
      age(`acc:${f.bob.id}`, 65_000);
      age(`acc:${carol.id}`, 80_000);
    });
    // The attachment is what a hibernated room knows of its sockets: let the room hibernate so that the alarm's
    // sweep wakes it from the attachments, as it does in production after a quiet minute.
    await evictDurableObject(stub, { webSockets: "hibernate" });
    expect(await runDurableObjectAlarm(stub)).toBe(true);

    await closedWithin(idle);
    const ping = await quiet.waitLog((frame) => frame.type === "ping");
    expect(ping).toEqual({ type: "ping" });
    // Its pong (the exact text, taken without parsing) is a sign of life, kept in the attachment for the next sweep.
    quiet.sendRaw('{"type":"pong"}');
    const heard = await eventually(
      () =>
        inObject(stub, (_instance, state) => {
          const [ws] = state.getWebSockets(`acc:${f.bob.id}`);
          const { seen } = ws.deserializeAttachment() as { seen: number };
          return Date.now() - seen < 5_000 ? seen : null;
        }),
      5_000,
    );
    expect(heard).toBeGreaterThan(0);
    for (const socket of [quiet, pinger, fresh]) await socket.flush();
    expect(pinger.log.filter((frame) => frame.type === "ping")).toEqual([]);
    expect(fresh.log.filter((frame) => frame.type === "ping")).toEqual([]);

    // the closed socket is gone from the room; the others still receive events
    const remaining = await eventually(async () => {
      const counts = await inObject(stub, (_instance, state) => ({
        alice: state.getWebSockets(`acc:${f.alice.id}`).length,
        all: state.getWebSockets().length,
      }));
      return counts.all === 3 ? counts : null;
    }, 5_000);
    expect(remaining).toEqual({ alice: 0, all: 3 });
    await postOk(f.apiKey, f.conversation.id, { text: "to the living", authorId: f.alice.id });
    for (const socket of [quiet, pinger, fresh]) {
      expect((await socket.waitLog((frame) => frame.type === "event")).event.data.text).toBe("to the living");
    }
    // the sweep keeps running while sockets remain, next when the pinged socket will have been silent for 75 s
    const sweepAt = await inObject(stub, (_instance, state) => state.storage.getAlarm());
    expect(sweepAt).not.toBeNull();
    expect(sweepAt! - Date.now()).toBeLessThanOrEqual(10_000);
  });

  it("a socket whose token expired gets no more events and is closed with 4001", async () => {
    const f = await createFixture();
    const ttlSeconds = 2;
    const [listener, idle] = await Promise.all(
      [0, 1].map(async () => openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id, ttlSeconds))),
    );
    const expiresAt = Date.now() + ttlSeconds * 1000;
    // the room's alarm comes at the tokens' expiry, not a fixed period after the sockets arrived
    const alarm = await inObject(roomObject(f.room.id), (_instance, state) => state.storage.getAlarm());
    expect(alarm).not.toBeNull();
    expect(alarm!).toBeLessThanOrEqual(expiresAt);
    await subscribe(listener, conversationTopic(f.orgId, f.conversation.id));
    await postOk(f.apiKey, f.conversation.id, { text: "while valid", authorId: f.alice.id });
    expect((await listener.waitLog((frame) => frame.type === "event")).event.data.text).toBe("while valid");

    await new Promise((resolve) => setTimeout(resolve, expiresAt - Date.now() + 200));
    // the event closes it (or the sweep did at the expiry): either way it never reaches the socket
    await postOk(f.apiKey, f.conversation.id, { text: "after expiry", authorId: f.alice.id });
    expect(await closedWithin(listener)).toMatchObject({ code: 4001 });
    expect(listener.events().map((e) => e.event.data.text)).toEqual(["while valid"]);
    // a socket that neither sends nor is sent anything is closed by the sweep
    expect(await closedWithin(idle)).toMatchObject({ code: 4001, reason: "token expired" });
  });

  it("the sweep closes the room's and the hub's sockets of a revoked API key with 4001", async () => {
    const f = await createFixture();
    const created = await call("POST", "/v1/api-keys", { token: f.apiKey, body: { name: "to revoke" } });
    expect(created.status).toBe(201);
    const [doomed, kept, doomedHub] = await Promise.all([
      openRoom(f.room.id, created.body.apiKey),
      openRoom(f.room.id, f.apiKey),
      openHub(created.body.apiKey),
    ]);
    for (const socket of [doomed, kept, doomedHub])
      await subscribe(socket, conversationTopic(f.orgId, f.conversation.id));
    // Revoked with no word to the objects (as when telling them failed): only their sweeps find out.
    await env.DB.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?")
      .bind(new Date().toISOString(), created.body.id)
      .run();

    for (const stub of [roomObject(f.room.id), hubObject(f.orgId)]) {
      await evictDurableObject(stub, { webSockets: "hibernate" }); // the next alarm sweeps
      expect(await runDurableObjectAlarm(stub)).toBe(true);
    }
    expect(await closedWithin(doomed)).toMatchObject({ code: 4001, reason: "API key revoked" });
    expect(await closedWithin(doomedHub)).toMatchObject({ code: 4001, reason: "API key revoked" });
    await postOk(f.apiKey, f.conversation.id, { text: "still here", authorId: f.alice.id });
    expect((await kept.waitLog((frame) => frame.type === "event")).event.data.text).toBe("still here");
  });

  it("revoking an API key closes its sockets at once, on the org stream and in every room, before any sweep", async () => {
    const f = await createFixture();
    const room2 = await createRoom(f.apiKey, [{ accountId: f.bob.id }]);
    const created = await call("POST", "/v1/api-keys", { token: f.apiKey, body: { name: "to revoke" } });
    // Tokens the key issued go with it; one another key issued stays.
    const [issued, session, keptToken] = await Promise.all([
      accountToken(created.body.apiKey, f.bob.id),
      sessionToken(created.body.apiKey, f.conversation.id, f.bob.id),
      accountToken(f.apiKey, f.bob.id),
    ]);
    const [doomed, doomedHere, doomedThere, kept, doomedToken, doomedSession, keptBob] = await Promise.all([
      openHub(created.body.apiKey),
      openRoom(f.room.id, created.body.apiKey),
      openRoom(room2.id, created.body.apiKey),
      openHub(f.apiKey),
      openHub(issued),
      openRoom(f.room.id, session),
      openRoom(f.room.id, keptToken),
    ]);
    const all = [doomed, doomedHere, doomedThere, kept, doomedToken, doomedSession, keptBob];
    for (const socket of all) await subscribe(socket, `events.${f.orgId}.>`);
    expect((await call("DELETE", `/v1/api-keys/${created.body.id}`, { token: f.apiKey })).status).toBe(204);
    for (const socket of [doomed, doomedHere, doomedThere, doomedToken, doomedSession]) {
      expect(await closedWithin(socket)).toMatchObject({ code: 4001, reason: "API key revoked" });
    }
    // A frame the room socket sent after the revoke posts nothing: the socket is gone.
    await postOk(f.apiKey, f.conversation.id, { text: "after the revoke", authorId: f.alice.id });
    for (const socket of [kept, keptBob]) {
      const posted = await socket.waitLog((frame) => frame.event?.type === "conversation.message_posted");
      expect(posted.event.data.text).toBe("after the revoke");
    }
    for (const socket of [doomed, doomedHere, doomedThere, doomedToken, doomedSession]) {
      expect(socket.events()).toEqual([]);
    }
    const rows = await env.DB.prepare("SELECT count(*) AS n FROM api_key_rooms WHERE key_id = ?")
      .bind(created.body.id)
      .first<number>("n");
    expect(rows).toBe(0);
  });

  // An upgrade checked just before a revoke can reach its object just after the object closed the key's sockets.
  it("an object told a key was revoked refuses the upgrades of the key and of its tokens that still come (401)", async () => {
    const f = await createFixture();
    const created = await call("POST", "/v1/api-keys", { token: f.apiKey, body: { name: "revoked meanwhile" } });
    const [issued, kept] = await Promise.all([
      accountToken(created.body.apiKey, f.bob.id),
      accountToken(f.apiKey, f.bob.id),
    ]);
    // The revoke's message to the objects, before D1 says the key is revoked (the upgrades' checks still pass).
    await roomStub(env, f.room.id).keyRevoked(created.body.id);
    await hubStub(env, f.orgId).keyRevoked(created.body.id);
    for (const token of [created.body.apiKey, issued]) {
      for (const path of [`/v1/rooms/${f.room.id}/realtime`, "/v1/realtime"]) {
        const refused = await upgrade(path, { token });
        expectError(refused, 401, "UNAUTHORIZED");
        expect(refused.body.error.message).toBe("API key revoked");
      }
    }
    const open = await openRoom(f.room.id, kept);
    expect(await request(open, { type: "ping", id: "alive" })).toMatchObject({ type: "ack", id: "alive" });
    open.close();
  });

  it("a frame from a socket whose token expired closes it with 4001 and changes nothing", async () => {
    const f = await createFixture();
    const poster = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    expect(await request(poster, { type: "ping", id: "before" })).toMatchObject({ type: "ack", id: "before" });
    // the token's expiry, as the socket's state holds it, passes (the sweep would close it at its next run)
    await inObject(roomObject(f.room.id), (instance: any) => {
      for (const state of instance.sockets.live.values()) state.actor.expiresAt = Date.now() - 1;
    });
    poster.send({ type: "message.post", id: "late", conversationId: f.conversation.id, text: "too late" });
    expect(await closedWithin(poster)).toMatchObject({ code: 4001 });
    expect(poster.log.filter((frame) => frame.id === "late")).toEqual([]);
    const history = await call("GET", `/v1/conversations/${f.conversation.id}/messages`, { token: f.apiKey });
    expect(history.body.items).toEqual([]);
  });
});
