import { env, evictDurableObject, runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { createEvent } from "../../src/events/envelope";
import { hubStub } from "../../src/hub/client";
import { outboxEventType } from "../../src/room/room";
import { accountToken, call, createFixture, expectError, ADMIN_TOKEN } from "../helpers/api";
import {
  addParticipant,
  autoPing,
  closedWithin,
  conversationTopic,
  Counter,
  createConversation,
  createRoom,
  createUser,
  expectRecoveryWhilePosting,
  expectReplaySkipsWhatTheConnectionHas,
  hubObject,
  inObject,
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

// Contract section 8 for `GET /v1/realtime`, the org hub: any topic the credential may see, and only that, also
// through wildcards. Every test makes its own org.
//
// "Nothing arrives" is always checked after a positive witness: an API-key socket subscribed to the whole org sees
// the event first (the hub delivers an event to all its sockets in one pass), then a `flush` round trip on the
// socket under test proves that anything the hub sent it before has arrived.

type Fixture = Awaited<ReturnType<typeof createFixture>>;

/** The fixture, plus Carol and a second room (Alice and Carol, not Bob) with a conversation. */
async function twoRooms() {
  const f = await createFixture();
  const carol = await createUser(f.apiKey, "Carol");
  const room2 = await createRoom(f.apiKey, [{ accountId: f.alice.id, role: "owner" }, { accountId: carol.id }]);
  const conv2 = await createConversation(f.apiKey, room2.id, "Room two");
  return { ...f, carol, room2, conv2 };
}

/** An API-key hub socket subscribed to everything of the org. */
async function witnessOf(f: Fixture) {
  const socket = await openHub(f.apiKey);
  await subscribe(socket, `events.${f.orgId}.>`);
  return socket;
}

/** Waits for an event on a socket. */
function eventOn(socket: LoggedSocket, type: string, check: (event: any) => boolean = () => true, timeoutMs = 10_000) {
  return socket.waitLog(
    (frame) => frame.type === "event" && frame.event.type === type && check(frame.event),
    timeoutMs,
  );
}

/** Waits for the message_posted event of a message. */
function messageOn(socket: LoggedSocket, message: { id: string }, timeoutMs = 10_000) {
  return eventOn(socket, "conversation.message_posted", (event) => event.data.id === message.id, timeoutMs);
}

/** Whether an event concerns a room or a conversation of it. */
function concerns(event: any, roomId: string, conversationIds: string[]) {
  return (
    event.resourceId === roomId ||
    conversationIds.includes(event.resourceId) ||
    event.data?.roomId === roomId ||
    conversationIds.includes(event.data?.conversationId)
  );
}

/** A hand-built notification event for an account (the notifications pipeline publishes these). */
function notificationEvent(orgId: string, accountId: string, title: string) {
  return createEvent({
    orgId,
    source: "notifications",
    resource: "notification",
    event: "created",
    resourceId: accountId,
    data: {
      id: `ntf_${crypto.randomUUID().replace(/-/g, "")}`,
      ruleId: `rule_${crypto.randomUUID().replace(/-/g, "")}`,
      accountId,
      eventId: `evt_${crypto.randomUUID().replace(/-/g, "")}`,
      title,
      body: `${title} body`,
      priority: "normal",
      channels: { websocket: "sent" },
      readAt: null,
      createdAt: new Date().toISOString(),
    },
  });
}

describe("hub upgrade", () => {
  it("answers 401 without or with a bad token, 400 to a plain GET, 403 to the admin token", async () => {
    const f = await createFixture();
    expectError(await upgrade("/v1/realtime"), 401, "UNAUTHORIZED");
    expectError(await upgrade("/v1/realtime", { token: "garbage" }), 401, "UNAUTHORIZED");
    expectError(await upgrade("/v1/realtime", { token: `sk_${"1".repeat(40)}` }), 401, "UNAUTHORIZED");
    expectError(await upgrade("/v1/realtime", { header: f.apiKey, upgrade: false }), 400, "BAD_REQUEST");
    expectError(await upgrade("/v1/realtime", { token: ADMIN_TOKEN }), 403, "FORBIDDEN");
    for (const token of [
      f.apiKey,
      await accountToken(f.apiKey, f.bob.id),
      await sessionToken(f.apiKey, f.conversation.id, f.bob.id),
    ]) {
      expect((await upgrade("/v1/realtime", { token })).status).toBe(101);
    }
  });
});

describe("hub delivery and visibility", () => {
  it("an API key sees every room's events of its org", async () => {
    const f = await twoRooms();
    const socket = await witnessOf(f);
    const one = await postOk(f.apiKey, f.conversation.id, { text: "room one", authorId: f.bob.id });
    const two = await postOk(f.apiKey, f.conv2.id, { text: "room two", authorId: f.carol.id });
    const room3 = await createRoom(f.apiKey, [{ accountId: f.carol.id }]);
    const conv3 = await createConversation(f.apiKey, room3.id);
    await messageOn(socket, one);
    await messageOn(socket, two);
    const created = await eventOn(socket, "room.created", (event) => event.resourceId === room3.id);
    expect(created.topic).toBe(`events.${f.orgId}.conversations.room.created.${room3.id}`);
    expect(created.event.data).toMatchObject({ id: room3.id, participants: [{ accountId: f.carol.id }] });
    await eventOn(socket, "conversation.created", (event) => event.resourceId === conv3.id);
    // the event frame's topic is the event's own, and its data the message as REST answered it
    const frame = socket.events((e) => e.event.data?.id === two.id)[0];
    expect(frame.topic).toBe(conversationTopic(f.orgId, f.conv2.id));
    expect(frame.event).toMatchObject({ topic: frame.topic, orgId: f.orgId, data: two });
    await socket.flush();
    const ids = socket.events().map((e) => e.event.id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("an account never receives another room's events, whatever the wildcard", async () => {
    const f = await twoRooms();
    const witness = await witnessOf(f);
    const bob = await openHub(await accountToken(f.apiKey, f.bob.id));
    for (const topic of [
      `events.${f.orgId}.>`,
      `events.${f.orgId}.*.*.*.*`,
      `events.${f.orgId}.conversations.>`,
      conversationTopic(f.orgId, f.conv2.id),
      `events.${f.orgId}.conversations.room.*.${f.room2.id}`,
      `events.${f.orgId}.*.*.*.${f.conv2.id}`,
    ]) {
      await subscribe(bob, topic);
    }
    // everything that happens in room two
    const aliceInRoom2 = await openRoom(f.room2.id, await accountToken(f.apiKey, f.alice.id));
    const two = await postOk(f.apiKey, f.conv2.id, { text: "secret", authorId: f.carol.id });
    expect(
      (await call("PATCH", `/v1/conversations/${f.conv2.id}`, { token: f.apiKey, body: { name: "x" } })).status,
    ).toBe(200);
    await request(aliceInRoom2, { type: "typing", conversationId: f.conv2.id });
    const conv2b = await createConversation(f.apiKey, f.room2.id, "Also secret");
    const dave = await createUser(f.apiKey, "Dave");
    await addParticipant(f.apiKey, f.room2.id, dave.id);
    expect(
      (await call("PATCH", `/v1/rooms/${f.room2.id}`, { token: f.apiKey, body: { name: "Renamed" } })).status,
    ).toBe(200);
    const room3 = await createRoom(f.apiKey, [{ accountId: f.carol.id }]);
    // and one message in bob's own room
    const one = await postOk(f.apiKey, f.conversation.id, { text: "for bob", authorId: f.alice.id });

    await messageOn(witness, two);
    await eventOn(witness, "conversation.updated", (e) => e.resourceId === f.conv2.id);
    await eventOn(witness, "conversation.typing", (e) => e.resourceId === f.conv2.id);
    await eventOn(witness, "conversation.created", (e) => e.resourceId === conv2b.id);
    await eventOn(witness, "room.participant_added", (e) => e.resourceId === f.room2.id);
    await eventOn(witness, "room.updated", (e) => e.resourceId === f.room2.id);
    await eventOn(witness, "room.created", (e) => e.resourceId === room3.id);
    await messageOn(witness, one);

    await messageOn(bob, one);
    await bob.flush();
    const leaked = bob
      .events()
      .filter((e) => concerns(e.event, f.room2.id, [f.conv2.id, conv2b.id]) || concerns(e.event, room3.id, []));
    expect(leaked).toEqual([]);
    // bob's own room is delivered exactly once
    expect(bob.events((e) => e.event.data?.id === one.id)).toHaveLength(1);
  });

  it("an account starts receiving a room's events when added to it, and stops when removed", async () => {
    const f = await twoRooms();
    const witness = await witnessOf(f);
    const bob = await openHub(await accountToken(f.apiKey, f.bob.id));
    await subscribe(bob, `events.${f.orgId}.>`);

    const before = await postOk(f.apiKey, f.conv2.id, { text: "before", authorId: f.carol.id });
    await messageOn(witness, before);
    await bob.flush();
    expect(bob.events()).toEqual([]);

    await addParticipant(f.apiKey, f.room2.id, f.bob.id);
    const added = await eventOn(bob, "room.participant_added", (e) => e.resourceId === f.room2.id);
    expect(added.event.data.accountId).toBe(f.bob.id);
    const during = await postOk(f.apiKey, f.conv2.id, { text: "during", authorId: f.carol.id });
    await messageOn(bob, during);

    await removeParticipant(f.apiKey, f.room2.id, f.bob.id);
    await eventOn(witness, "room.participant_removed", (e) => e.data.accountId === f.bob.id);
    const after = await postOk(f.apiKey, f.conv2.id, { text: "after", authorId: f.carol.id });
    await messageOn(witness, after);
    await bob.flush();
    expect(seqsOf(bob.log)).toEqual([during.seq]);
    expect(bob.events((e) => e.event.data?.id === after.id)).toEqual([]);
  });

  it("an account receives a room created with it, and that room's events, from the start", async () => {
    const f = await createFixture();
    const bob = await openHub(await accountToken(f.apiKey, f.bob.id));
    await subscribe(bob, `events.${f.orgId}.>`);
    const carol = await createUser(f.apiKey, "Carol");
    const room = await createRoom(f.apiKey, [{ accountId: carol.id }, { accountId: f.bob.id }]);
    const created = await eventOn(bob, "room.created", (e) => e.resourceId === room.id);
    expect(created.event.data.participants.map((p: any) => p.accountId).sort()).toEqual([carol.id, f.bob.id].sort());
    const conv = await createConversation(f.apiKey, room.id);
    await eventOn(bob, "conversation.created", (e) => e.resourceId === conv.id);
    const message = await postOk(f.apiKey, conv.id, { text: "welcome", authorId: carol.id });
    await messageOn(bob, message);
  });

  it("never delivers another org's events, and refuses another org's topics", async () => {
    const a = await createFixture();
    const b = await createFixture();
    const witnessB = await witnessOf(b);
    const keyA = await witnessOf(a);
    const bobA = await openHub(await accountToken(a.apiKey, a.bob.id));
    await subscribe(bobA, `events.${a.orgId}.>`);
    for (const socket of [keyA, bobA]) {
      const refused = await request(socket, { type: "subscribe", id: "foreign", topic: `events.${b.orgId}.>` });
      expect(refused).toMatchObject({ type: "error", id: "foreign", error: { code: "FORBIDDEN" } });
    }
    const foreign = await postOk(b.apiKey, b.conversation.id, { text: "org b", authorId: b.alice.id });
    await messageOn(witnessB, foreign);
    const own = await postOk(a.apiKey, a.conversation.id, { text: "org a", authorId: a.alice.id });
    await messageOn(keyA, own);
    await messageOn(bobA, own);
    for (const socket of [keyA, bobA]) {
      await socket.flush();
      expect(
        socket.events().filter((e) => e.event.orgId !== a.orgId || !e.topic.startsWith(`events.${a.orgId}.`)),
      ).toEqual([]);
    }
    expect(witnessB.events().every((e) => e.event.orgId === b.orgId)).toBe(true);
  });

  it("delivers notification events only to their own account", async () => {
    const f = await createFixture();
    const witness = await witnessOf(f);
    const bob = await openHub(await accountToken(f.apiKey, f.bob.id));
    const alice = await openHub(await accountToken(f.apiKey, f.alice.id));
    for (const topic of [
      `events.${f.orgId}.notifications.notification.created.${f.bob.id}`,
      `events.${f.orgId}.notifications.notification.created.${f.alice.id}`,
      `events.${f.orgId}.notifications.>`,
      `events.${f.orgId}.>`,
    ]) {
      await subscribe(bob, topic);
    }
    await subscribe(alice, `events.${f.orgId}.notifications.notification.created.*`);
    const forAlice = notificationEvent(f.orgId, f.alice.id, "For Alice");
    const forBob = notificationEvent(f.orgId, f.bob.id, "For Bob");
    await hubStub(env, f.orgId).publish(null, [forAlice]);
    await hubStub(env, f.orgId).publish(null, [forBob]);

    const got = await eventOn(bob, "notification.created");
    expect(got.topic).toBe(`events.${f.orgId}.notifications.notification.created.${f.bob.id}`);
    expect(got.event).toEqual(forBob);
    expect((await eventOn(alice, "notification.created")).event).toEqual(forAlice);
    await eventOn(witness, "notification.created", (e) => e.id === forBob.id);
    expect(witness.events((e) => e.event.type === "notification.created").map((e) => e.event.id)).toEqual([
      forAlice.id,
      forBob.id,
    ]);
    for (const socket of [bob, alice]) await socket.flush();
    expect(bob.events().map((e) => e.event.id)).toEqual([forBob.id]);
    expect(alice.events().map((e) => e.event.id)).toEqual([forAlice.id]);
    // a republished event (same id) is not delivered twice
    await hubStub(env, f.orgId).publish(null, [forBob]);
    await bob.flush();
    expect(bob.events().map((e) => e.event.id)).toEqual([forBob.id]);
  });

  it("a session token sees only its own conversation", async () => {
    const f = await twoRooms();
    const sibling = await createConversation(f.apiKey, f.room.id, "Sibling");
    const witness = await witnessOf(f);
    const session = await openHub(await sessionToken(f.apiKey, f.conversation.id, f.bob.id));
    for (const topic of [
      `events.${f.orgId}.>`,
      `events.${f.orgId}.*.*.*.*`,
      conversationTopic(f.orgId, sibling.id),
      conversationTopic(f.orgId, f.conv2.id),
      `events.${f.orgId}.conversations.room.>`,
    ]) {
      await subscribe(session, topic);
    }
    const inSibling = await postOk(f.apiKey, sibling.id, { text: "sibling", authorId: f.alice.id });
    const inRoom2 = await postOk(f.apiKey, f.conv2.id, { text: "room two", authorId: f.alice.id });
    const dave = await createUser(f.apiKey, "Dave");
    await addParticipant(f.apiKey, f.room.id, dave.id);
    const newer = await createConversation(f.apiKey, f.room.id, "Newer");
    const own = await postOk(f.apiKey, f.conversation.id, { text: "mine", authorId: f.alice.id });

    for (const message of [inSibling, inRoom2, own]) await messageOn(witness, message);
    await eventOn(witness, "room.participant_added", (e) => e.data.accountId === dave.id);
    await eventOn(witness, "conversation.created", (e) => e.resourceId === newer.id);
    await messageOn(session, own);
    await session.flush();
    expect(session.events().map((e) => [e.event.type, e.event.resourceId])).toEqual([
      ["conversation.message_posted", f.conversation.id],
    ]);
    // nor can it replay another conversation
    const recovery = await request(session, {
      type: "subscribe",
      topic: conversationTopic(f.orgId, sibling.id),
      sinceSeq: 0,
    });
    expect(recovery).toMatchObject({ type: "ack", recovered: false });
    await session.flush();
    expect(session.events().filter((e) => e.event.resourceId !== f.conversation.id)).toEqual([]);
    // while its own conversation replays
    const own2 = await request(session, {
      type: "subscribe",
      topic: conversationTopic(f.orgId, f.conversation.id),
      sinceSeq: 0,
    });
    expect(own2).toMatchObject({ type: "ack", recovered: true });
  });

  it("a session of a participant removed from the room is closed, receives nothing more and cannot reconnect", async () => {
    const f = await createFixture();
    const witness = await witnessOf(f);
    const token = await sessionToken(f.apiKey, f.conversation.id, f.bob.id);
    const session = await openHub(token);
    await subscribe(session, `events.${f.orgId}.>`);
    const before = await postOk(f.apiKey, f.conversation.id, { text: "before", authorId: f.alice.id });
    await messageOn(session, before);
    await removeParticipant(f.apiKey, f.room.id, f.bob.id);
    expect(await closedWithin(session)).toEqual({ code: 4003, reason: "no longer a participant of this room" });
    // A new connection with the same token is refused, as the room socket's is.
    expectError(await upgrade("/v1/realtime", { token }), 403, "FORBIDDEN");
    // A session that connected before the removal reached the hub still sees nothing of the conversation after it.
    await addParticipant(f.apiKey, f.room.id, f.bob.id);
    const again = await openHub(await sessionToken(f.apiKey, f.conversation.id, f.bob.id));
    await subscribe(again, `events.${f.orgId}.>`);
    await inObject(hubObject(f.orgId), async (hub: any) => {
      hub.memberships.get(f.bob.id)?.delete(f.room.id);
    });
    const after = await postOk(f.apiKey, f.conversation.id, { text: "after", authorId: f.alice.id });
    await messageOn(witness, after);
    await again.flush();
    expect(again.events()).toEqual([]);
  });

  it("a session's org-stream socket closes when its conversation is deleted", async () => {
    const f = await createFixture();
    const other = await createConversation(f.apiKey, f.room.id, "Other");
    const doomed = await openHub(await sessionToken(f.apiKey, f.conversation.id, f.bob.id));
    const kept = await openHub(await sessionToken(f.apiKey, other.id, f.bob.id));
    for (const socket of [doomed, kept]) await subscribe(socket, `events.${f.orgId}.>`);
    expect((await call("DELETE", `/v1/conversations/${f.conversation.id}`, { token: f.apiKey })).status).toBe(204);
    expect(await closedWithin(doomed)).toEqual({ code: 4003, reason: "the conversation was deleted" });
    const posted = await postOk(f.apiKey, other.id, { text: "still here", authorId: f.alice.id });
    await messageOn(kept, posted);
    // Its token connects nowhere any more, as its uploads are refused: it could never see anything.
    const token = await sessionToken(f.apiKey, other.id, f.bob.id);
    expect((await call("DELETE", `/v1/conversations/${other.id}`, { token: f.apiKey })).status).toBe(204);
    for (const path of ["/v1/realtime", `/v1/rooms/${f.room.id}/realtime`]) {
      expectError(await upgrade(path, { token }), 403, "FORBIDDEN");
    }
  });

  it("a session token does not receive its account's notifications (they are account-wide, not of its conversation)", async () => {
    const f = await createFixture();
    const witness = await witnessOf(f);
    const session = await openHub(await sessionToken(f.apiKey, f.conversation.id, f.bob.id));
    await subscribe(session, `events.${f.orgId}.>`);
    await subscribe(session, `events.${f.orgId}.notifications.notification.created.${f.bob.id}`);
    const forBob = notificationEvent(f.orgId, f.bob.id, "About another room");
    await hubStub(env, f.orgId).publish(null, [forBob]);
    await eventOn(witness, "notification.created", (e) => e.id === forBob.id);
    await session.flush();
    expect(session.events()).toEqual([]);
  });

  it("while no org socket is open a room skips the hub for typing and deltas; a socket that connects gets the next ones", async () => {
    const f = await createFixture();
    const alice = await openRoom(f.room.id, await accountToken(f.apiKey, f.alice.id));
    const quietRooms = () =>
      inObject(hubObject(f.orgId), async (_hub, state) => [...(await state.storage.list({ prefix: "quiet:" })).keys()]);
    const hubQuiet = () => inObject(roomObject(f.room.id), (room) => ({ ...room.hubQuiet }));
    expect(await request(alice, { type: "typing", id: "q-1", conversationId: f.conversation.id })).toMatchObject({
      type: "ack",
    });
    // The hub answered that nobody listens: it remembers the room, and the room skips its next hub calls.
    for (let i = 0; i < 100 && (await hubQuiet()).epoch < 0; i++) await sleep(20);
    expect(await hubQuiet()).toMatchObject({ epoch: 0, listening: 0 });
    expect(await quietRooms()).toEqual([`quiet:${f.room.id}`]);
    await request(alice, { type: "typing", id: "q-2", conversationId: f.conversation.id });

    // Even after an eviction the hub knows whom to tell when a socket arrives, before it can subscribe.
    await evictDurableObject(hubObject(f.orgId));
    const witness = await openHub(f.apiKey);
    expect(await hubQuiet()).toMatchObject({ epoch: 0, listening: 1 });
    expect(await quietRooms()).toEqual([]);
    await subscribe(witness, `events.${f.orgId}.conversations.conversation.typing.*`);
    await request(alice, { type: "typing", id: "q-3", conversationId: f.conversation.id });
    const typing = await eventOn(witness, "conversation.typing");
    expect(typing.event.data).toMatchObject({ accountId: f.alice.id, conversationId: f.conversation.id });
    await witness.flush();
    expect(witness.events()).toHaveLength(1);

    // With the last socket gone, the next hub call is answered quiet again, at the new epoch.
    witness.close();
    await closedWithin(witness, 5_000).catch(() => {});
    for (let i = 0; i < 100 && (await hubQuiet()).epoch < 1; i++) {
      await request(alice, { type: "typing", id: `q-4-${i}`, conversationId: f.conversation.id });
      await sleep(20);
    }
    expect(await hubQuiet()).toMatchObject({ epoch: 1, listening: 1 });
  });

  it("while no org socket is open a room skips the hub for its messages, not for membership; a socket then gets them", async () => {
    const f = await createFixture();
    const hubRecent = () => inObject(hubObject(f.orgId), (hub) => new Set<string>(hub.recent));
    const room = roomObject(f.room.id);
    const drained = async () => {
      for (let i = 0; i < 100 && (await inObject(room, (r) => r.outbox.pending())) > 0; i++) await sleep(20);
    };
    const eventIdOf = (message: { id: string }) => `evt_${message.id.slice("msg_".length)}`;
    // The room's first events (its creation, its conversation) went to the hub, which answered that nobody listens.
    for (let i = 0; i < 100 && (await inObject(room, (r) => r.hubQuiet.epoch)) < 0; i++) await sleep(20);
    expect(await inObject(room, (r) => ({ ...r.hubQuiet }))).toMatchObject({ epoch: 0, listening: 0 });

    // So a message is not sent to the hub at all; a participant added meanwhile still reaches its memberships.
    const second = await postOk(f.apiKey, f.conversation.id, { text: "two", authorId: f.alice.id });
    const carol = await createUser(f.apiKey, "Carol");
    await addParticipant(f.apiKey, f.room.id, carol.id);
    await drained();
    expect((await hubRecent()).has(eventIdOf(second))).toBe(false);
    const log = await inObject(hubObject(f.orgId), (hub) => hub.membershipLog as { accountId: string }[]);
    expect(log.map((change) => change.accountId)).toContain(carol.id);

    // A socket that connects is told to the room before it can subscribe: the next message reaches it.
    const witness = await openHub(f.apiKey);
    await subscribe(witness, conversationTopic(f.orgId, f.conversation.id));
    const third = await postOk(f.apiKey, f.conversation.id, { text: "three", authorId: f.alice.id });
    expect((await eventOn(witness, "conversation.message_posted")).event.id).toBe(eventIdOf(third));
  });

  it("reads an outbox row's event type from its envelope, never from a client's text or data", () => {
    const event = createEvent({
      orgId: "org_1",
      source: "conversations",
      resource: "conversation",
      event: "message_posted",
      resourceId: "conv_1",
      data: { text: '{"event":{"id":"x","type":"room.created"}', data: { type: "room.participant_added" } },
    });
    const body = JSON.stringify({ event, agents: [] });
    expect(outboxEventType(body)).toBe("conversation.message_posted");
    expect(outboxEventType('{"agents":[],"event":{"id":"e","type":"conversation.message_posted"}}')).toBe("");
  });

  it("refuses message.post and typing on the hub with error frames, and stays open", async () => {
    const f = await createFixture();
    for (const token of [f.apiKey, await accountToken(f.apiKey, f.alice.id)]) {
      const socket = await openHub(token);
      const posted = await request(socket, {
        type: "message.post",
        id: "hp-1",
        conversationId: f.conversation.id,
        text: "not here",
        authorId: f.alice.id,
      });
      expect(posted).toMatchObject({ type: "error", id: "hp-1", error: { code: "BAD_REQUEST" } });
      expect(typeof posted.error.message).toBe("string");
      const typing = await request(socket, { type: "typing", id: "hp-2", conversationId: f.conversation.id });
      expect(typing).toMatchObject({ type: "error", id: "hp-2" });
      await socket.flush();
      await subscribe(socket, conversationTopic(f.orgId, f.conversation.id));
    }
    const history = await call("GET", `/v1/conversations/${f.conversation.id}/messages`, { token: f.apiKey });
    expect(history.body.items).toEqual([]);
  });

  it("answers grammar errors on the hub like the room socket", async () => {
    const f = await createFixture();
    const socket = await openHub(await accountToken(f.apiKey, f.bob.id));
    for (const [topic, code] of [
      [`events.${f.orgId}.conversations.conversation.message_posted.conv*`, "BAD_REQUEST"],
      [`events.${f.orgId}.>.conversation.a.b`, "BAD_REQUEST"],
      [`events.${f.orgId}.a.b.c`, "BAD_REQUEST"],
      [`events.*.>`, null],
    ] as const) {
      const answer = await request(socket, { type: "subscribe", topic });
      expect(answer.type, topic).toBe("error");
      if (code) expect(answer.error.code).toBe(code);
    }
    socket.sendRaw("{oops");
    await socket.waitLog((frame) => frame.type === "error" && frame.id === undefined);
    await socket.flush();
  });
});

describe("hub recovery", () => {
  it("replays with sinceSeq while messages are being posted: no gap, no duplicate", async () => {
    const f = await createFixture();
    await pool(20, 5, async (i) => {
      await postOk(f.apiKey, f.conversation.id, { text: `before ${i}`, authorId: f.alice.id });
    });
    const socket = await openHub(await accountToken(f.apiKey, f.bob.id));
    await expectRecoveryWhilePosting(socket, f, { before: 20, racing: 60, sinceSeq: 10 });
  });

  it("a sinceSeq replay skips what another subscription of the connection delivered, and fills what it missed", async () => {
    const f = await createFixture();
    await expectReplaySkipsWhatTheConnectionHas(await openHub(await accountToken(f.apiKey, f.bob.id)), f);
  });

  it("recovers across repeated reconnects to the hub while posting", async () => {
    const TOTAL = 200;
    const f = await createFixture();
    const token = await accountToken(f.apiKey, f.bob.id);
    const topic = conversationTopic(f.orgId, f.conversation.id);
    const posted = new Counter();
    const posting = pool(TOTAL, 6, async (i) => {
      await postOk(f.apiKey, f.conversation.id, { text: `m${i}`, authorId: f.alice.id });
      posted.increment();
    });
    posting.catch(() => {});
    const received: number[] = [];
    let last = 0;
    for (let connection = 0; connection <= 5; connection++) {
      const socket = await openHub(token);
      const ack = await request(socket, { type: "subscribe", id: "r", topic, sinceSeq: last });
      expect(ack).toMatchObject({ type: "ack", recovered: true });
      // The conversation's last stored seq, which the replay reaches (posts go on meanwhile).
      expect(ack.lastSeq).toBeGreaterThanOrEqual(last);
      if (connection < 5) {
        await posted.reached(Math.round(((connection + 1) * TOTAL) / 6));
        if (connection % 2 === 0) await socket.flush();
      } else {
        await posting;
        if (last < TOTAL) await socket.waitLog((frame) => frame.type === "event" && frame.event.data.seq === TOTAL);
        await socket.flush();
      }
      const seen = socket.log.slice();
      socket.ws.close(4000, "forced");
      const seqs = seqsOf(seen);
      expect(seqs, `connection ${connection} after ${last}`).toEqual(range(last + 1, last + seqs.length));
      received.push(...seqs);
      if (seqs.length > 0) last = seqs[seqs.length - 1];
    }
    expect(received).toEqual(range(1, TOTAL));
  });

  it("acks recovered: false for a room the account is not in, and replays none of it", async () => {
    const f = await twoRooms();
    await postOk(f.apiKey, f.conv2.id, { text: "secret one", authorId: f.carol.id });
    await postOk(f.apiKey, f.conv2.id, { text: "secret two", authorId: f.carol.id });
    const bob = await openHub(await accountToken(f.apiKey, f.bob.id));
    const ack = await request(bob, { type: "subscribe", topic: conversationTopic(f.orgId, f.conv2.id), sinceSeq: 0 });
    expect(ack).toMatchObject({ type: "ack", recovered: false });
    const wildcard = await request(bob, {
      type: "subscribe",
      topic: `events.${f.orgId}.conversations.conversation.message_posted.*`,
      sinceSeq: 0,
    });
    expect(wildcard).toMatchObject({ type: "ack", recovered: false });
    await bob.flush();
    expect(bob.events()).toEqual([]);
    // the API key may replay it
    const key = await openHub(f.apiKey);
    expect(
      await request(key, { type: "subscribe", topic: conversationTopic(f.orgId, f.conv2.id), sinceSeq: 0 }),
    ).toMatchObject({ type: "ack", recovered: true });
    await key.waitLog((frame) => frame.type === "event" && frame.event.data.seq === 2);
    expect(seqsOf(key.log)).toEqual([1, 2]);
  });
});

describe("hub hibernation", () => {
  it("keeps subscriptions and memberships (reloaded from D1) after eviction, and still filters", async () => {
    const f = await twoRooms();
    const room3 = await createRoom(f.apiKey, [{ accountId: f.carol.id }]);
    const conv3 = await createConversation(f.apiKey, room3.id);
    const witness = await witnessOf(f);
    const bob = await openHub(await accountToken(f.apiKey, f.bob.id));
    await subscribe(bob, `events.${f.orgId}.conversations.conversation.message_posted.*`);
    // a membership learned from an event while the hub is awake, before it hibernates
    await addParticipant(f.apiKey, room3.id, f.bob.id);
    await eventOn(witness, "room.participant_added", (e) => e.resourceId === room3.id);

    const stub = hubObject(f.orgId);
    await runDurableObjectAlarm(stub); // no sweep alarm wakes the hub during the test
    await inObject(stub, (instance) => {
      instance.probe = "before eviction";
    });
    await evictDurableObject(stub, { webSockets: "hibernate" });
    expect(await inObject(stub, (instance) => instance.probe)).toBeUndefined();
    await evictDurableObject(stub, { webSockets: "hibernate" });

    const inRoom1 = await postOk(f.apiKey, f.conversation.id, { text: "room one", authorId: f.alice.id });
    const inRoom2 = await postOk(f.apiKey, f.conv2.id, { text: "room two", authorId: f.alice.id });
    const inRoom3 = await postOk(f.apiKey, conv3.id, { text: "room three", authorId: f.carol.id });
    for (const message of [inRoom1, inRoom2, inRoom3]) await messageOn(witness, message);
    await messageOn(bob, inRoom1);
    await messageOn(bob, inRoom3);
    await bob.flush();
    expect(
      bob
        .events()
        .map((e) => e.event.data.id)
        .sort(),
    ).toEqual([inRoom1.id, inRoom3.id].sort());

    // a ping is still answered by the runtime, and the principal kept: bob cannot replay room two
    expect(await autoPing(bob)).toEqual({ type: "pong" });
    await evictDurableObject(stub, { webSockets: "hibernate" });
    const replay = await request(bob, {
      type: "subscribe",
      topic: conversationTopic(f.orgId, f.conv2.id),
      sinceSeq: 0,
    });
    expect(replay).toMatchObject({ type: "ack", recovered: false });
    // a removal after the wake-up still applies
    await removeParticipant(f.apiKey, room3.id, f.bob.id);
    await eventOn(witness, "room.participant_removed", (e) => e.resourceId === room3.id);
    const afterRemoval = await postOk(f.apiKey, conv3.id, { text: "gone", authorId: f.carol.id });
    await messageOn(witness, afterRemoval);
    await bob.flush();
    expect(bob.events((e) => e.event.data?.id === afterRemoval.id)).toEqual([]);
  });

  it("answers a client ping on a hibernated hub without waking it", async () => {
    const f = await createFixture();
    const bob = await openHub(await accountToken(f.apiKey, f.bob.id));
    await subscribe(bob, `events.${f.orgId}.>`);
    const stub = hubObject(f.orgId);
    await runDurableObjectAlarm(stub);
    await evictDurableObject(stub, { webSockets: "hibernate" });
    const before = Date.now();
    expect(await autoPing(bob)).toEqual({ type: "pong" });
    // see the room test for the method: no handler ran on the instance alive after the ping, and the runtime
    // recorded its own answer
    const probe = await inObject(stub, (instance, state) => ({
      handled: instance.sockets.live.size as number,
      autoResponse: state.getWebSockets().map((ws) => state.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0),
    }));
    expect(probe.handled).toBe(0);
    expect(probe.autoResponse).toHaveLength(1);
    expect(probe.autoResponse[0]).toBeGreaterThanOrEqual(before - 1_000);
  });

  it("the hub's alarm closes a socket silent for 80 s and pings one silent for 65 s", async () => {
    const f = await createFixture();
    const idle = await openHub(await accountToken(f.apiKey, f.alice.id));
    const quiet = await openHub(await accountToken(f.apiKey, f.bob.id));
    const fresh = await openHub(f.apiKey);
    const stub = hubObject(f.orgId);
    await inObject(stub, (_instance, state) => {
      const age = (tag: string, ms: number) => {
        for (const ws of state.getWebSockets(tag)) {
          ws.serializeAttachment({ ...(ws.deserializeAttachment() as object), seen: Date.now() - ms });
        }
      };
      age(`acc:${f.alice.id}`, 80_000);
      age(`acc:${f.bob.id}`, 65_000);
    });
    await evictDurableObject(stub, { webSockets: "hibernate" });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await closedWithin(idle);
    expect(await quiet.waitLog((frame) => frame.type === "ping")).toEqual({ type: "ping" });
    await quiet.flush();
    await fresh.flush();
    expect(fresh.log.filter((frame) => frame.type === "ping")).toEqual([]);
    // the next sweep comes when the pinged socket will have been silent for 75 s, not a fixed period later
    const sweepAt = await inObject(stub, (_instance, state) => state.storage.getAlarm());
    expect(sweepAt).not.toBeNull();
    expect(sweepAt! - Date.now()).toBeLessThanOrEqual(10_000);
  });
});
