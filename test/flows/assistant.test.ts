import { describe, expect, it } from "vitest";
import { call } from "../helpers/api";
import { agentRoom, historyOf, runsOf, say, streamEvents } from "./helpers";

describe("assistant replies (local:echo)", () => {
  it("streams the reply token by token to the room, then posts exactly one bot message", async () => {
    const { apiKey, user, bot, socket, conversationId } = await agentRoom();
    const question = await say(apiKey, conversationId, user.id, "how are you today?");

    const history = await historyOf(apiKey, conversationId, 2);
    expect(history.map((m) => [m.seq, m.authorId, m.type])).toEqual([
      [1, user.id, "user"],
      [2, bot.id, "bot"],
    ]);
    const reply = history[1];
    expect(reply.text).toBe("Echo: how are you today?");

    const posted = await socket.waitLog(
      (f) => f.type === "event" && f.event.type === "conversation.message_posted" && f.event.data.id === reply.id,
    );
    const stream = streamEvents(socket);
    expect(stream.length).toBeGreaterThanOrEqual(2);
    expect(stream.map((d) => d.index)).toEqual(stream.map((_, i) => i));
    expect(stream.every((d) => d.streamId === stream[0].streamId && d.authorId === bot.id)).toBe(true);
    const last = stream[stream.length - 1];
    expect(last).toMatchObject({ done: true, text: reply.text, messageId: reply.id });
    expect(stream.slice(0, -1).every((d) => d.done === false)).toBe(true);
    expect(
      stream
        .slice(0, -1)
        .map((d) => d.delta)
        .join(""),
    ).toBe(reply.text);
    // The stream ends before its message is posted.
    const order = socket.log.indexOf(posted);
    expect(socket.log.findIndex((f) => f.type === "event" && f.event.data?.done === true)).toBeLessThan(order);

    const runs = await runsOf(apiKey, conversationId, (r) => r.length === 1 && r[0].status === "completed");
    expect(runs[0]).toMatchObject({ agentId: bot.id, conversationId, trigger: "message", messageId: question.id });
    socket.close();
  });

  it("runs onStart steps when a conversation starts, and reply steps post their text", async () => {
    const { apiKey, bot, room, socket } = await agentRoom(
      { flow: { onStart: [{ type: "reply", text: "Welcome! Ask me anything." }] } },
      { conversation: false },
    );
    const created = await call("POST", `/v1/rooms/${room.id}/conversations`, { token: apiKey, body: {} });
    const history = await historyOf(apiKey, created.body.id, 1);
    expect(history).toHaveLength(1);
    expect(history[0]).toMatchObject({ authorId: bot.id, type: "bot", text: "Welcome! Ask me anything.", seq: 1 });
    const runs = await runsOf(apiKey, created.body.id, (r) => r[0]?.status === "completed");
    expect(runs).toHaveLength(1);
    expect(runs[0].trigger).toBe("start");
    expect(runs[0].messageId).toBeUndefined();
    socket.close();
  });
});
