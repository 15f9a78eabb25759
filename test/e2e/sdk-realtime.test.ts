import { afterEach, describe, expect, it } from "vitest";
import {
  RealtimeClient,
  RealtimeError,
  realtimeUrl,
  topicOf,
  type Message,
  type ParleyEvent,
  type RealtimeClientOptions,
} from "../../src/sdk";
import { baseUrl, collect, createFixture, eventually, range } from "./helpers";

// The realtime client of src/sdk against `npm run dev`, in Node: contract section 8 as an application uses it.
const realtime = it;

const clients: RealtimeClient[] = [];

/** A client closed after the test; backoff kept short so force-closed sockets come back quickly. */
function connect(options: RealtimeClientOptions): RealtimeClient {
  const client = new RealtimeClient({ backoff: { baseMs: 50, maxMs: 1_000 }, ...options });
  clients.push(client);
  return client;
}

afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

/** Every message the application receives from a client, in delivery order. */
function received(client: RealtimeClient): Message[] {
  const messages: Message[] = [];
  client.on("message", (message) => messages.push(message));
  return messages;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("RealtimeClient: subscriptions", () => {
  realtime("receives message_posted events of messages posted over REST, in order, until it unsubscribes", async () => {
    const f = await createFixture();
    const client = connect({ url: realtimeUrl(baseUrl), token: f.apiKey });
    const events: ParleyEvent[] = [];
    client.on("event", (event) => events.push(event));
    const messages = received(client);
    const topic = topicOf(f.org.id, "conversation", "message_posted", f.conversation.id);

    expect(await client.subscribe(topic)).toMatchObject({ topic });
    const posted: Message[] = [];
    for (const i of range(1, 5)) {
      posted.push(await f.client.messages.post(f.conversation.id, { text: `m${i}`, authorId: f.alice.id }));
    }
    await eventually(() => messages.length >= 5);
    expect(messages).toEqual(posted);
    expect(events[0]).toMatchObject({
      type: "conversation.message_posted",
      topic,
      orgId: f.org.id,
      source: "conversations",
      resource: "conversation",
      event: "message_posted",
      resourceId: f.conversation.id,
    });
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
    expect(client.lastSeq(f.conversation.id)).toBe(5);

    await client.unsubscribe(topic);
    await f.client.messages.post(f.conversation.id, { text: "unheard", authorId: f.alice.id });
    await sleep(500);
    expect(messages).toHaveLength(5);
  });

  realtime("replays history after sinceSeq, then continues live", async () => {
    const f = await createFixture();
    for (const i of range(1, 4)) {
      await f.client.messages.post(f.conversation.id, { text: `old ${i}`, authorId: f.alice.id });
    }
    const { token } = await f.client.tokens.create({ accountId: f.bob.id });
    const client = connect({ url: realtimeUrl(baseUrl, f.room.id), token });
    const messages = received(client);
    const topic = topicOf(f.org.id, "conversation", "message_posted", f.conversation.id);
    expect(await client.subscribe(topic, { sinceSeq: 2 })).toEqual({ topic, recovered: true });
    await f.client.messages.post(f.conversation.id, { text: "new", authorId: f.alice.id });
    await eventually(() => messages.length >= 3);
    expect(messages.map((m) => [m.seq, m.text])).toEqual([
      [3, "old 3"],
      [4, "old 4"],
      [5, "new"],
    ]);
  });

  realtime("rejects subscriptions the server refuses with the error frame's code", async () => {
    const f = await createFixture();
    const client = connect({ url: realtimeUrl(baseUrl), token: f.apiKey });
    const foreign = client.subscribe("events.org_someoneelse0000.conversations.conversation.message_posted.*");
    await expect(foreign).rejects.toBeInstanceOf(RealtimeError);
    await expect(foreign).rejects.toMatchObject({ code: "FORBIDDEN" });
    await expect(client.subscribe(`events.${f.org.id}.too.few`)).rejects.toMatchObject({ code: "BAD_REQUEST" });
    expect(client.topics).toEqual([]);
    await expect(client.subscribe(topicOf(f.org.id, "conversation", "*"))).resolves.toBeTruthy();
  });
});

describe("RealtimeClient: room socket posting", () => {
  realtime(
    "posts over the room socket: the ack carries the message, which is in history and in the stream",
    async () => {
      const f = await createFixture();
      const { token } = await f.client.tokens.create({ accountId: f.alice.id });
      const client = connect({ url: realtimeUrl(baseUrl, f.room.id), token });
      const messages = received(client);
      await client.subscribe(topicOf(f.org.id, "conversation", "message_posted", f.conversation.id));

      const message = await client.post(f.conversation.id, { text: "over the socket", data: { via: "ws" } });
      expect(message).toMatchObject({
        conversationId: f.conversation.id,
        roomId: f.room.id,
        seq: 1,
        authorId: f.alice.id,
        type: "user",
        text: "over the socket",
        data: { via: "ws" },
      });
      expect(message.clientMessageId).toEqual(expect.any(String));
      const again = await client.post(f.conversation.id, {
        text: "over the socket",
        clientMessageId: message.clientMessageId!,
      });
      expect(again).toEqual(message);

      await eventually(() => messages.length >= 1);
      expect(messages).toEqual([message]);
      expect((await f.client.messages.list(f.conversation.id)).items).toEqual([message]);
      await expect(client.post(f.conversation.id, {})).rejects.toMatchObject({ code: "BAD_REQUEST" });
    },
  );

  realtime("sends typing to the room's other sockets", async () => {
    const f = await createFixture();
    const alice = connect({
      url: realtimeUrl(baseUrl, f.room.id),
      token: (await f.client.tokens.create({ accountId: f.alice.id })).token,
    });
    const bob = connect({
      url: realtimeUrl(baseUrl, f.room.id),
      token: (await f.client.sessions.create(f.conversation.id, { accountId: f.bob.id })).token,
    });
    const events: ParleyEvent[] = [];
    alice.on("event", (event) => events.push(event));
    await alice.subscribe(topicOf(f.org.id, "conversation", "typing", f.conversation.id));
    await bob.opened();

    bob.typing(f.conversation.id);
    const typing = await eventually(() => events.find((e) => e.type === "conversation.typing"));
    expect(typing).toMatchObject({
      topic: topicOf(f.org.id, "conversation", "typing", f.conversation.id),
      resourceId: f.conversation.id,
      data: expect.objectContaining({ accountId: f.bob.id }),
    });
  });
});

describe.each([
  ["room socket", true],
  ["org stream", false],
])("RealtimeClient: recovery on the %s", (_, roomSocket) => {
  realtime("delivers every message exactly once, in order, across forced disconnections", async () => {
    const f = await createFixture();
    // A session token for an end user's browser, issued afresh for every connection. The gate holds a reconnection
    // back, so that messages are certainly posted while the client is disconnected.
    let issued = 0;
    let gate: Promise<void> = Promise.resolve();
    const client = connect({
      url: realtimeUrl(baseUrl, roomSocket ? f.room.id : undefined),
      token: async () => {
        await gate;
        issued++;
        return (await f.client.sessions.create(f.conversation.id, { accountId: f.bob.id })).token;
      },
    });
    const messages = received(client);
    let reconnects = 0;
    client.on("reconnect", () => reconnects++);
    const topic = topicOf(f.org.id, "conversation", "message_posted", f.conversation.id);
    await client.subscribe(topic, { sinceSeq: 0 });

    const drops = 5;
    let n = 0;
    const postOverRest = async (count: number) => {
      for (let i = 0; i < count; i++) {
        await f.client.messages.post(f.conversation.id, { text: `rest ${++n}`, authorId: f.alice.id });
      }
    };
    const bufferedPosts: Promise<Message>[] = [];
    for (const round of range(1, drops)) {
      await client.opened();
      await postOverRest(4);
      let release!: () => void;
      gate = new Promise((resolve) => (release = resolve));
      client.socket!.close();
      await eventually(() => client.state === "reconnecting");
      await postOverRest(3);
      // Posted while the socket is down: buffered, then sent on reconnection, exactly once.
      if (roomSocket) bufferedPosts.push(client.post(f.conversation.id, { text: `socket ${round}` }));
      release();
    }
    await postOverRest(4);
    await Promise.all(bufferedPosts);
    const history = await collect(f.client.messages.iterate(f.conversation.id));
    expect(history).toHaveLength(n + bufferedPosts.length);
    await eventually(() => messages.length >= history.length, 15_000).catch(() => undefined);
    await sleep(300);

    expect(messages.map((m) => m.seq)).toEqual(range(1, history.length));
    expect(messages).toEqual(history);
    expect(reconnects).toBeGreaterThanOrEqual(drops);
    expect(issued).toBeGreaterThanOrEqual(reconnects + 1);
    expect(client.lastSeq(f.conversation.id)).toBe(history.length);
  });
});
