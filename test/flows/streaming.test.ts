import { evictDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { openHub, openRoom, roomObject, subscribe } from "../helpers/realtime";
import { agentRoom, historyOf, runsOf, say, streamEvents } from "./helpers";

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

  it("an eviction of the room mid-stream loses nothing: one bot message with the whole reply", async () => {
    const { apiKey, user, bot, room, socket, conversationId } = await agentRoom(SLOW);
    await say(apiKey, conversationId, user.id, QUESTION);
    await socket.waitLog((f) => f.type === "event" && f.event.data?.index === 1, 10_000);
    await evictDurableObject(roomObject(room.id));

    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed", 30_000);
    expect(runs).toHaveLength(1);
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history).toHaveLength(2);
    expect(history[1]).toMatchObject({ authorId: bot.id, type: "bot", text: ANSWER });

    // The socket may have been dropped with the object; what it did get is contiguous and never duplicated.
    const events = streamEvents(socket);
    const indexes = events.map((d) => d.index);
    expect(new Set(indexes).size).toBe(indexes.length);
    expect(indexes).toEqual(indexes.map((_, i) => i));
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
    const snapshot = events.find((d) => d.text !== undefined)!;
    expect(snapshot.done).toBe(false);
    expect(snapshot.index).toBeGreaterThanOrEqual(2);
    const after = events.filter((d) => !d.done && d.index > snapshot.index);
    expect(snapshot.text + after.map((d) => d.delta).join("")).toBe(ANSWER);
    expect(done.event.data.text).toBe(ANSWER);
    hub.close();
    socket.close();
  });
});
