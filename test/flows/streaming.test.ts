import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { call } from "../helpers/api";
import { roomStub } from "../../src/room/client";
import { UNSAVED_INDEXES } from "../../src/room/streams";
import { describe, expect, it } from "vitest";
import { inObject, openHub, openRoom, roomObject, sessionToken, sleep, subscribe } from "../helpers/realtime";
import { agentRoom, historyOf, newConversation, runsOf, say, streamEvents } from "./helpers";

// The model server streams "Model reply to: <question>" a word at a time, 120 ms apart.
const SLOW = { model: "openai:echo@120" };
const QUESTION = "please tell me a rather long story about streams";
const ANSWER = `Model reply to: ${QUESTION}`;

describe("streaming through the room", () => {
  it("a client that subscribes mid-stream first gets the text so far, then the following deltas", async () => {
    const { apiKey, user, token, room, orgId, socket, conversationId } = await agentRoom(SLOW);
    await say(apiKey, conversationId, user.id, QUESTION);
    await socket.waitLog((f) => f.type === "event" && f.event.data?.index === 2, 10_000);

    const late = await openRoom(room.id, token);
    await subscribe(late, `events.${orgId}.conversations.conversation.message_stream.${conversationId}`);
    const done = await late.waitLog((f) => f.type === "event" && f.event.data?.done === true, 15_000);
    const events = streamEvents(late);
    const [snapshot, ...rest] = events;
    expect(snapshot.index).toBeGreaterThanOrEqual(2);
    expect(snapshot.done).toBe(false);
    expect(ANSWER.startsWith(snapshot.text)).toBe(true);
    expect(rest.map((d) => d.index)).toEqual(rest.map((_, i) => snapshot.index + 1 + i));
    expect(
      snapshot.text +
        rest
          .slice(0, -1)
          .map((d) => d.delta)
          .join(""),
    ).toBe(ANSWER);
    expect(done.event.data.text).toBe(ANSWER);
    late.close();
    socket.close();
  });

  it("a reply whose conversation is deleted mid-stream stops the model and ends at once with the reason", async () => {
    const { apiKey, user, socket, conversationId } = await agentRoom(SLOW);
    await say(apiKey, conversationId, user.id, QUESTION);
    await socket.waitLog((f) => f.type === "event" && f.event.data?.index === 1, 10_000);
    expect((await call("DELETE", `/v1/conversations/${conversationId}`, { token: apiKey })).status).toBe(204);
    const done = await socket.waitLog((f) => f.type === "event" && f.event.data?.done === true, 10_000);
    expect(done.event.data.error).toBe("the conversation was deleted");
    // The model was stopped at the next token: far fewer deltas than the whole answer's words.
    const deltas = streamEvents(socket).filter((d) => !d.done);
    expect(deltas.length).toBeLessThan(ANSWER.split(" ").length - 3);
    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "failed", 15_000);
    expect(runs[0].error).toContain("the conversation was deleted");
    socket.close();
  });

  it("the org hub delivers message_stream events to subscribed account sockets", async () => {
    const { apiKey, user, token, orgId, socket, conversationId } = await agentRoom();
    const hub = await openHub(token);
    await subscribe(hub, `events.${orgId}.conversations.conversation.message_stream.*`);
    await say(apiKey, conversationId, user.id, "via the hub");
    const done = await hub.waitLog((f) => f.type === "event" && f.event.data?.done === true, 10_000);
    const events = streamEvents(hub);
    expect(events.map((d) => d.index)).toEqual(events.map((_, i) => i));
    expect(done.event.data.text).toBe("Echo: via the hub");
    hub.close();
    socket.close();
  });

  it("an eviction of the room waits for the reply in flight, which loses nothing: one bot message", async () => {
    const { apiKey, user, bot, room, socket, conversationId } = await agentRoom(SLOW);
    await say(apiKey, conversationId, user.id, QUESTION);
    await socket.waitLog((f) => f.type === "event" && f.event.data?.index === 1, 10_000);
    await evictDurableObject(roomObject(room.id));

    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed", 30_000);
    expect(runs).toHaveLength(1);
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history).toHaveLength(2);
    expect(history[1]).toMatchObject({ authorId: bot.id, type: "bot", text: ANSWER });
    const events = streamEvents(socket);
    const indexes = events.map((d) => d.index);
    expect(indexes).toEqual(indexes.map((_, i) => i));
    socket.close();
  });

  // A reset (a deploy) fails the calls in flight, the reply's among them, and drops the room's sockets.
  it.each([
    { when: "after the stream's first save", index: 4 },
    { when: "before the stream's first save", index: 0 },
  ])("a reset of the room mid-stream, $when, loses nothing of the reply", async ({ index }) => {
    const { apiKey, user, bot, room, orgId, token, socket, conversationId } = await agentRoom(SLOW);
    await say(apiKey, conversationId, user.id, QUESTION);
    await socket.waitLog((f) => f.type === "event" && f.event.data?.index === index, 10_000);
    await runInDurableObject(roomObject(room.id), (_instance, state: DurableObjectState) => {
      try {
        state.abort("reset for the test");
      } catch {
        // the reset also ends this call
      }
    }).catch(() => {});

    const again = await openRoom(room.id, token);
    await subscribe(again, `events.${orgId}.conversations.conversation.message_stream.${conversationId}`);
    const done = await again.waitLog((f) => f.type === "event" && f.event.data?.done === true, 20_000);
    expect(done.event.data.text).toBe(ANSWER);
    const events = streamEvents(again).filter((d) => !d.done);
    // The room had the text of its last save (the new socket's snapshot), or had forgotten the stream (reset before
    // its first save). Either way the step's retry restarted it past every index the old socket had: its first
    // delta carries the whole new text, so a client that kept the old deltas replaces its text and never takes an
    // index twice. Then deltas in index order, none twice, and the text a client builds is the reply.
    const sent = Math.max(...streamEvents(socket).map((d) => d.index));
    expect(sent).toBeGreaterThanOrEqual(index);
    expect(events[0].text).toBeDefined();
    expect(events[0].index).toBeGreaterThan(sent);
    for (const [i, d] of events.entries()) {
      if (i > 0)
        expect(d.index === events[i - 1].index + 1 || (d.index > events[i - 1].index && d.text !== undefined)).toBe(
          true,
        );
    }
    expect(events.reduce((text, d) => (d.text !== undefined ? d.text : text + d.delta), "")).toBe(ANSWER);

    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed", 30_000);
    expect(runs).toHaveLength(1);
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history).toHaveLength(2);
    expect(history[1]).toMatchObject({ authorId: bot.id, type: "bot", text: ANSWER });
    again.close();
    socket.close();
  });
});

describe("mid-stream subscriptions on the org hub", () => {
  it("a hub subscription naming the conversation gets the text so far, then the following deltas", async () => {
    const { apiKey, user, token, orgId, socket, conversationId } = await agentRoom(SLOW);
    await say(apiKey, conversationId, user.id, QUESTION);
    await socket.waitLog((f) => f.type === "event" && f.event.data?.index === 2, 10_000);
    const hub = await openHub(token);
    await subscribe(hub, `events.${orgId}.conversations.conversation.*.${conversationId}`);
    const done = await hub.waitLog((f) => f.type === "event" && f.event.data?.done === true, 15_000);
    const events = streamEvents(hub);
    const [snapshot, ...rest] = events;
    expect(snapshot.done).toBe(false);
    expect(snapshot.index).toBeGreaterThanOrEqual(2);
    expect(rest.map((d) => d.index)).toEqual(rest.map((_, i) => snapshot.index + 1 + i));
    const after = rest.filter((d) => !d.done);
    expect(snapshot.text + after.map((d) => d.delta).join("")).toBe(ANSWER);
    expect(done.event.data.text).toBe(ANSWER);
    hub.close();
    socket.close();
  });

  // The first hub socket arrives mid-stream (the room had stopped sending deltas to a hub nobody listened to), then
  // more sockets subscribe while deltas keep coming: each gets the text so far first, then every later delta once.
  it.each([
    { name: "the conversation's stream topic", topic: (org: string, c: string) => `${streamTopicOf(org)}.${c}` },
    { name: "every stream (*)", topic: (org: string) => `${streamTopicOf(org)}.*` },
    { name: "everything (>)", topic: (org: string) => `events.${org}.>` },
  ])("a hub subscription to $name made mid-stream gets the text so far first", async ({ topic }) => {
    const { bot, room, orgId, socket, conversationId, token } = await agentRoom({ flow: { onMessage: [] } });
    const stub = roomStub(env, room.id);
    await stub.openStream({ orgId }, conversationId, "s-1", bot.id);
    let text = "";
    const append = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const delta = `w${text.length} `;
        text += delta;
        await stub.appendStream("s-1", delta);
      }
    };
    await append(3);
    await socket.waitLog((f) => f.event?.data?.index === 2);
    const late = [];
    for (let i = 0; i < 4; i++) {
      const hub = await openHub(token);
      late.push(hub);
      await Promise.all([subscribe(hub, topic(orgId, conversationId)), append(3)]);
    }
    await append(2);
    const closed = await stub.closeStream("s-1");
    expect(closed.ok && closed.value.message?.text).toBe(text);
    for (const hub of late) {
      await hub.waitLog((f) => f.event?.data?.done === true);
      const [snapshot, ...rest] = streamEvents(hub, "s-1");
      expect(snapshot.text).toBeDefined();
      expect(snapshot.index).toBeGreaterThanOrEqual(2);
      expect(rest.map((d) => d.index)).toEqual(rest.map((_, i) => snapshot.index + 1 + i));
      expect(snapshot.text + rest.map((d) => d.delta).join("")).toBe(text);
      hub.close();
    }
    socket.close();
  });
});

describe("mid-stream wildcard subscriptions on the org hub", () => {
  it("get a snapshot of every stream in flight they match, in every conversation of the room, and none of others", async () => {
    const { apiKey, user, bot, room, orgId, socket, conversationId, token } = await agentRoom({
      flow: { onMessage: [] },
    });
    const second = await newConversation(apiKey, room.id);
    const stub = roomStub(env, room.id);
    for (const [streamId, conversation] of [
      ["s-a", conversationId],
      ["s-b", second],
    ]) {
      await stub.openStream({ orgId }, conversation, streamId, bot.id);
      await stub.appendStream(streamId, `${streamId} text`);
    }
    await socket.waitLog((f) => f.event?.data?.streamId === "s-b");
    const hub = await openHub(token);
    const session = await openHub(await sessionToken(apiKey, second, user.id));
    for (const s of [hub, session]) await subscribe(s, `${streamTopicOf(orgId)}.*`);
    for (const id of ["s-a", "s-b"]) await stub.closeStream(id);
    await hub.waitLog((f) => f.event?.data?.streamId === "s-a" && f.event.data.done === true);
    await hub.waitLog((f) => f.event?.data?.streamId === "s-b" && f.event.data.done === true);
    for (const id of ["s-a", "s-b"]) {
      expect(streamEvents(hub, id).map((d) => [d.index, d.text, d.done])).toEqual([
        [0, `${id} text`, false],
        [1, `${id} text`, true],
      ]);
    }
    // A session sees its own conversation's stream only.
    await session.waitLog((f) => f.event?.data?.streamId === "s-b" && f.event.data.done === true);
    expect(streamEvents(session, "s-a")).toEqual([]);
    expect(streamEvents(session, "s-b")[0].text).toBe("s-b text");
    for (const s of [hub, session, socket]) s.close();
  });
});

const streamTopicOf = (orgId: string) => `events.${orgId}.conversations.conversation.message_stream`;

describe("a second subscription matching a stream", () => {
  it("brings no second snapshot to a socket that had the stream, on the room or the hub; a new socket gets one", async () => {
    const { apiKey, bot, room, orgId, socket, conversationId, token } = await agentRoom({ flow: { onMessage: [] } });
    const stub = roomStub(env, room.id);
    const streamTopic = `events.${orgId}.conversations.conversation.message_stream.${conversationId}`;
    const roomSocket = await openRoom(room.id, apiKey);
    const hub = await openHub(token);
    for (const s of [roomSocket, hub]) await subscribe(s, streamTopic);
    await stub.openStream({ orgId }, conversationId, "s-9", bot.id);
    await stub.appendStream("s-9", "a");
    for (const s of [roomSocket, hub]) await s.waitLog((f) => f.event?.data?.streamId === "s-9");
    // Another topic that matches the stream, and the same one again.
    for (const s of [roomSocket, hub]) {
      await subscribe(s, `events.${orgId}.conversations.conversation.*.${conversationId}`);
      await subscribe(s, streamTopic);
    }
    await stub.appendStream("s-9", "b");
    const late = await openRoom(room.id, apiKey);
    await subscribe(late, streamTopic);
    await stub.closeStream("s-9");
    for (const s of [roomSocket, hub, late]) await s.waitLog((f) => f.event?.data?.done === true);
    for (const s of [roomSocket, hub]) {
      expect(streamEvents(s, "s-9").map((d) => [d.index, d.delta, d.text])).toEqual([
        [0, "a", undefined],
        [1, "b", undefined],
        [2, "", "ab"],
      ]);
    }
    expect(streamEvents(late, "s-9").map((d) => [d.index, d.delta, d.text])).toEqual([
      [1, "", "ab"],
      [2, "", "ab"],
    ]);
    for (const s of [roomSocket, hub, late, socket]) s.close();
  });
});

describe("the room's stream log", () => {
  it("a restarted stream keeps its indexes, sends its new text as a snapshot, and posts only the new text once", async () => {
    const { apiKey, bot, room, orgId, socket, conversationId } = await agentRoom({ flow: { onMessage: [] } });
    const stub = roomStub(env, room.id);
    const actor = { orgId };
    expect(await stub.openStream(actor, conversationId, "s-1", bot.id)).toEqual({
      ok: true,
      value: { message: null, next: 0 },
    });
    expect(await stub.appendStream("s-1", "first ")).toEqual({ ok: true, value: { index: 0 } });
    expect(await stub.appendStream("s-1", "try")).toEqual({ ok: true, value: { index: 1 } });
    // The step is retried: the stream restarts, and says where its indexes are.
    expect(await stub.openStream(actor, conversationId, "s-1", bot.id)).toEqual({
      ok: true,
      value: { message: null, next: 2 },
    });
    expect(await stub.appendStream("s-1", "second")).toEqual({ ok: true, value: { index: 2 } });
    await stub.appendStream("s-1", " try");
    const closed = await stub.closeStream("s-1");
    expect(closed.ok && closed.value.message?.text).toBe("second try");
    // Closing again, or opening after the post, answers the posted message and posts nothing.
    const again = await stub.openStream(actor, conversationId, "s-1", bot.id);
    expect(again.ok && again.value.message?.id).toBe(closed.ok && closed.value.message?.id);
    expect((await stub.appendStream("s-1", "late")).ok).toBe(false);

    const done = await socket.waitLog((f) => f.type === "event" && f.event.data?.done === true);
    const events = streamEvents(socket, "s-1");
    expect(events.map((d) => [d.index, d.delta, d.text])).toEqual([
      [0, "first ", undefined],
      [1, "try", undefined],
      [2, "second", "second"],
      [3, " try", undefined],
      [4, "", "second try"],
    ]);
    expect(done.event.data.messageId).toBe(closed.ok && closed.value.message?.id);
    expect(await historyOf(apiKey, conversationId, 1)).toHaveLength(1);
    socket.close();
  });

  it("saves its streams together, 250 ms after a delta, and reads back its last save after an eviction", async () => {
    const { apiKey, bot, room, orgId, socket, conversationId } = await agentRoom({ flow: { onMessage: [] } });
    const stub = roomStub(env, room.id);
    const stored = () =>
      inObject(roomObject(room.id), (_instance, state) =>
        state.storage.sql.exec("SELECT stream_id, idx, delta FROM stream_chunks ORDER BY stream_id, idx").toArray(),
      );
    await stub.openStream({ orgId }, conversationId, "s-3", bot.id);
    await stub.openStream({ orgId }, conversationId, "s-6", bot.id);
    expect(await stub.appendStream("s-3", "one ")).toEqual({ ok: true, value: { index: 0 } });
    await stub.appendStream("s-6", "x");
    // A stream's first delta writes nothing: the save comes 250 ms later, for every stream that changed.
    expect(await stored()).toEqual([]);
    await sleep(300);
    await stub.appendStream("s-3", "two ");
    expect(await stored()).toEqual([
      { stream_id: "s-3", idx: 1, delta: "one two " },
      { stream_id: "s-6", idx: 0, delta: "x" },
    ]);
    await stub.appendStream("s-3", "three ");
    await stub.appendStream("s-3", "four ");

    await evictDurableObject(roomObject(room.id));
    // The room reads back its last save, "one two " at index 1 (a reply in flight, whose call an eviction waits for,
    // never meets this; after a reset, the step's retry restarts the stream). The indexes its sockets may have had
    // since (2 and 3 here) are never given again: the next delta moves past them, with the whole text.
    const resumed = 2 + UNSAVED_INDEXES;
    expect(await stub.appendStream("s-3", "five")).toEqual({ ok: true, value: { index: resumed } });
    const closed = await stub.closeStream("s-3");
    expect(closed.ok && closed.value.message?.text).toBe("one two five");
    const other = await stub.closeStream("s-6");
    expect(other.ok && other.value.message?.text).toBe("x");

    // A stream evicted before its first save is forgotten (the step's retry opens it again).
    await stub.openStream({ orgId }, conversationId, "s-7", bot.id);
    await stub.appendStream("s-7", "lost");
    await evictDurableObject(roomObject(room.id));
    expect(await stub.appendStream("s-7", "more")).toMatchObject({ ok: false, error: { code: "NOT_FOUND" } });

    // A socket that subscribes after an eviction gets the saved text as a snapshot, then the following deltas.
    await stub.openStream({ orgId }, conversationId, "s-4", bot.id);
    await stub.appendStream("s-4", "a");
    await sleep(300);
    await stub.appendStream("s-4", "b");
    await evictDurableObject(roomObject(room.id));
    const again = await openRoom(room.id, apiKey);
    await subscribe(again, `events.${orgId}.conversations.conversation.message_stream.${conversationId}`);
    await stub.appendStream("s-4", "c");
    await stub.closeStream("s-4");
    await again.waitLog((f) => f.type === "event" && f.event.data?.done === true);
    expect(streamEvents(again, "s-4").map((d) => [d.index, d.delta, d.text])).toEqual([
      [resumed - 1, "", "ab"],
      [resumed, "c", "abc"],
      [resumed + 1, "", "abc"],
    ]);
    expect(await historyOf(apiKey, conversationId, 3)).toHaveLength(3);
    socket.close();
    again.close();
  });

  it("a second call for a reply under way joins it: one model call, one message, one stream", async () => {
    const { apiKey, user, bot, room, orgId, socket, conversationId } = await agentRoom({ flow: { onMessage: [] } });
    await say(apiKey, conversationId, user.id, QUESTION);
    const stub = roomStub(env, room.id);
    const request = { conversationId, agentId: bot.id, streamId: "s-5", model: SLOW.model, instructions: [] };
    const first = stub.assistantReply({ orgId }, request);
    await socket.waitLog((f) => f.type === "event" && f.event.data?.streamId === "s-5" && f.event.data.index === 1);
    const second = await stub.assistantReply({ orgId }, request);
    expect(second.ok && second.value.message?.text).toBe(ANSWER);
    expect(await first).toEqual(second);
    // The stream went on as it was: indexes in order from 0, no snapshot, its deltas the reply once.
    const events = streamEvents(socket, "s-5");
    expect(events.map((d) => d.index)).toEqual(events.map((_, i) => i));
    expect(events.slice(0, -1).every((d) => d.text === undefined)).toBe(true);
    expect(
      events
        .slice(0, -1)
        .map((d) => d.delta)
        .join(""),
    ).toBe(ANSWER);
    // A retried step finds the posted reply and asks no model.
    const again = await stub.assistantReply({ orgId }, request);
    expect(again.ok && again.value.message?.id).toBe(second.ok && second.value.message?.id);
    expect(await historyOf(apiKey, conversationId, 2)).toHaveLength(2);
    socket.close();
  });

  it("an empty reply posts nothing and ends the stream with an error", async () => {
    const { apiKey, bot, room, orgId, socket, conversationId } = await agentRoom({ flow: { onMessage: [] } });
    const stub = roomStub(env, room.id);
    await stub.openStream({ orgId }, conversationId, "s-2", bot.id);
    const closed = await stub.closeStream("s-2");
    expect(closed).toEqual({ ok: true, value: { message: null, error: "the model returned no text" } });
    const done = await socket.waitLog((f) => f.type === "event" && f.event.data?.done === true);
    expect(done.event.data.error).toMatch(/no text/);
    expect((await call("GET", `/v1/conversations/${conversationId}/messages`, { token: apiKey })).body.items).toEqual(
      [],
    );
    socket.close();
  });
});
