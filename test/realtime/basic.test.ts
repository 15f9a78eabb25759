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

describe("token expiry on open sockets", () => {
  it("closes a socket with 4001 once its token has expired", async () => {
    const { env, evictDurableObject, runInDurableObject, runDurableObjectAlarm } = await import("cloudflare:test");
    const f = await createFixture();
    const token = await accountToken(f.apiKey, f.alice.id, 60);
    const socket = await connect(`/v1/rooms/${f.room.id}/realtime`, token);
    const stub = env.ROOMS.get(env.ROOMS.idFromName(f.room.id));
    // The token outlives the test, so its expiry is moved into the past in the socket's attachment, and the room
    // hibernates so that it reads the attachment afresh.
    await runInDurableObject(stub, (_instance, state) => {
      for (const ws of state.getWebSockets()) {
        const attachment = ws.deserializeAttachment();
        expect(attachment.actor.expiresAt).toBeGreaterThan(Date.now());
        ws.serializeAttachment({ ...attachment, actor: { ...attachment.actor, expiresAt: Date.now() - 1 } });
      }
    });
    await evictDurableObject(stub, { webSockets: "hibernate" });
    await runDurableObjectAlarm(stub);
    expect((await socket.closed).code).toBe(4001);
  });
});
