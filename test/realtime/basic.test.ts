import { describe, expect, it } from "vitest";
import { accountToken, createFixture, post } from "../helpers/api";
import { connect } from "../helpers/sockets";

describe("realtime basics", () => {
  it("room socket: subscribe, receive, post, recover", async () => {
    const f = await createFixture();
    const token = await accountToken(f.apiKey, f.alice.id);
    const socket = await connect(`/v1/rooms/${f.room.id}/realtime`, token);
    const topic = `events.${f.orgId}.conversations.conversation.message_posted.${f.conversation.id}`;
    socket.send({ type: "subscribe", id: "1", topic });
    expect(await socket.next((fr) => fr.type === "ack")).toMatchObject({ id: "1" });
    await post(f.apiKey, f.conversation.id, { text: "one", authorId: f.bob.id });
    const ev = await socket.next((fr) => fr.type === "event");
    expect(ev.event.data.text).toBe("one");
    socket.send({ type: "message.post", id: "2", conversationId: f.conversation.id, text: "two" });
    const ack = await socket.next((fr) => fr.type === "ack" && fr.id === "2");
    expect(ack.message.seq).toBe(2);
    socket.send({ type: "ping" });
    expect(await socket.next((fr) => fr.type === "pong")).toEqual({ type: "pong" });
    const s2 = await connect(`/v1/rooms/${f.room.id}/realtime`, token);
    s2.send({ type: "subscribe", id: "r", topic, sinceSeq: 0 });
    expect(await s2.next((fr) => fr.type === "ack")).toMatchObject({ id: "r", recovered: true });
    expect((await s2.next()).event.data.seq).toBe(1);
    expect((await s2.next()).event.data.seq).toBe(2);
  });

  it("org socket: gets events of the account's rooms only", async () => {
    const f = await createFixture();
    const token = await accountToken(f.apiKey, f.bob.id);
    const socket = await connect(`/v1/realtime`, token);
    socket.send({ type: "subscribe", id: "1", topic: `events.${f.orgId}.>` });
    await socket.next((fr) => fr.type === "ack");
    await post(f.apiKey, f.conversation.id, { text: "hello", authorId: f.alice.id });
    const ev = await socket.next((fr) => fr.type === "event");
    expect(ev.event.data.text).toBe("hello");
    socket.send({
      type: "subscribe",
      id: "2",
      topic: `events.${f.orgId}.conversations.conversation.message_posted.${f.conversation.id}`,
      sinceSeq: 0,
    });
    expect(await socket.next((fr) => fr.type === "ack" && fr.id === "2")).toMatchObject({ recovered: true });
  });
});
