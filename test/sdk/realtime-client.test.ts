import { afterEach, describe, expect, it, vi } from "vitest";
import { PING_TEXT, PONG_TEXT } from "../../src/protocol/frames";
import { RealtimeClient, type RealtimeClientOptions, type WebSocketLike } from "../../src/sdk";

// The realtime client's own logic against a scripted fake socket: ids and acks, keep-alive, duplicate dropping,
// backoff, resubscription and recovery, buffered posts. The same client against the real server is in test/e2e.

const ORG = "org_0000000000aaaa";
const CONV = "conv_0000000000bbbb";
const TOPIC = `events.${ORG}.conversations.conversation.message_posted.${CONV}`;
const WILDCARD = `events.${ORG}.conversations.conversation.*.*`;

/** A WebSocket the test drives: it records what the client sends and delivers what the test makes the server say. */
class FakeSocket implements WebSocketLike {
  readyState = 0;
  readonly sent: string[] = [];
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  closedWith: { code?: number; reason?: string } | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? "" }));
  }

  /** The server accepts the connection. */
  accept(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** The server sends a frame. */
  receive(frame: unknown): void {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  /** The connection breaks. */
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** The JSON frames the client sent (pings included). */
  frames(): any[] {
    return this.sent.map((text) => JSON.parse(text));
  }

  /** The last frame of a type the client sent. */
  last(type: string): any {
    return this.frames()
      .filter((frame) => frame.type === type)
      .at(-1);
  }
}

const clients: RealtimeClient[] = [];

afterEach(() => {
  for (const client of clients.splice(0)) client.close();
  vi.restoreAllMocks();
});

/** A client on fake sockets; `sockets` lists every socket it opened. */
function setup(options: Partial<RealtimeClientOptions> = {}) {
  const sockets: FakeSocket[] = [];
  class Socket extends FakeSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  const client = new RealtimeClient({
    url: "http://127.0.0.1:8787/v1/realtime",
    token: "sk_test",
    WebSocket: Socket,
    backoff: { baseMs: 1, maxMs: 4 },
    fetch: null,
    ...options,
  });
  clients.push(client);
  const socket = async (index: number) => {
    await waitFor(() => sockets[index]);
    return sockets[index];
  };
  return { client, sockets, socket };
}

async function waitFor<T>(check: () => T | undefined | null | false, timeoutMs = 2_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

let eventCount = 0;

/** A `message_posted` event frame of a conversation. */
function posted(seq: number, conversationId = CONV, id = `evt_${++eventCount}`, messageId = `msg_${seq}`) {
  const topic = `events.${ORG}.conversations.conversation.message_posted.${conversationId}`;
  return {
    type: "event",
    topic,
    event: {
      id,
      type: "conversation.message_posted",
      topic,
      orgId: ORG,
      source: "conversations",
      resource: "conversation",
      event: "message_posted",
      resourceId: conversationId,
      occurredAt: new Date().toISOString(),
      data: { id: messageId, conversationId, seq, text: `m${seq}` },
    },
  };
}

describe("RealtimeClient: connection and requests", () => {
  it("connects to the ws URL with ?token=, resolves subscribe on its ack and rejects on its error frame", async () => {
    const { client, socket } = setup();
    const ws = await socket(0);
    expect(ws.url).toBe("ws://127.0.0.1:8787/v1/realtime?token=sk_test");
    const first = client.subscribe(TOPIC);
    const second = client.subscribe(WILDCARD);
    expect(ws.sent).toEqual([]);
    ws.accept();
    const [a, b] = ws.frames();
    expect(a).toEqual({ type: "subscribe", id: a.id, topic: TOPIC });
    expect(b).toEqual({ type: "subscribe", id: b.id, topic: WILDCARD });
    expect(a.id).not.toBe(b.id);

    ws.receive({ type: "error", id: b.id, error: { code: "FORBIDDEN", message: "no" } });
    ws.receive({ type: "ack", id: a.id, topic: TOPIC });
    await expect(first).resolves.toEqual({ topic: TOPIC, recovered: undefined });
    await expect(second).rejects.toMatchObject({ name: "RealtimeError", code: "FORBIDDEN", message: "no" });
    expect(client.topics).toEqual([TOPIC]);
  });

  it("sends the exact ping text on an interval, answers server pings, and drops a connection that stops answering", async () => {
    const { client, socket } = setup({ pingIntervalMs: 20, pongTimeoutMs: 30 });
    const ws = await socket(0);
    ws.accept();
    ws.receive({ type: "ping" });
    expect(ws.sent[0]).toBe(PONG_TEXT);
    await waitFor(() => ws.sent.includes(PING_TEXT));
    expect(ws.sent.filter((text) => text === PING_TEXT).length).toBeGreaterThan(0);
    const closes: unknown[] = [];
    client.on("close", (info) => closes.push(info));
    const next = await socket(1);
    expect(ws.closedWith).toEqual({ code: 4000, reason: "ping timeout" });
    expect(closes[0]).toMatchObject({ code: 4000, reconnecting: true });
    expect(next.url).toBe(ws.url);
  });

  it("rejects a subscribe never acked with TIMEOUT; a post never acked goes again on a new connection, once", async () => {
    const { client, socket } = setup({ requestTimeoutMs: 20 });
    const ws = await socket(0);
    ws.accept();
    await expect(client.subscribe(TOPIC)).rejects.toMatchObject({ code: "TIMEOUT" });
    // The connection acks nothing: it is taken for dead, and the post is sent again with its clientMessageId.
    const posted = client.post(CONV, { text: "hi" });
    const next = await socket(1);
    expect(ws.closedWith).toEqual({ code: 4000, reason: "ack timeout" });
    next.accept();
    const again = await waitFor(() => next.last("message.post"));
    expect(again.clientMessageId).toBe(ws.last("message.post").clientMessageId);
    next.receive({ type: "ack", id: again.id, message: { id: "msg_1", seq: 1, text: "hi" } });
    await expect(posted).resolves.toMatchObject({ id: "msg_1" });
  });

  it("refuses a frame larger than the limit before sending it", async () => {
    const { client, socket } = setup();
    const ws = await socket(0);
    ws.accept();
    await expect(client.post(CONV, { text: "x".repeat(70_000) })).rejects.toMatchObject({ code: "PAYLOAD_TOO_LARGE" });
    expect(ws.sent).toEqual([]);
  });

  it("throttles typing per conversation and drops it while disconnected", async () => {
    const { client, socket } = setup({ typingIntervalMs: 10_000 });
    const ws = await socket(0);
    client.typing(CONV);
    ws.accept();
    client.typing(CONV);
    client.typing(CONV);
    client.typing("conv_other0000000");
    expect(ws.frames()).toEqual([
      { type: "typing", conversationId: CONV },
      { type: "typing", conversationId: "conv_other0000000" },
    ]);
  });
});

describe("RealtimeClient: delivery", () => {
  it("delivers each event once, and a conversation's messages only in increasing seq", async () => {
    const { client, socket } = setup();
    const ws = await socket(0);
    ws.accept();
    const seen: number[] = [];
    const messages: string[] = [];
    client.on("event", (event) => seen.push((event.data as { seq: number }).seq));
    client.on("message", (message) => messages.push(`${message.conversationId}:${message.seq}`));
    const one = posted(1);
    ws.receive(one);
    ws.receive(one);
    ws.receive(posted(2));
    ws.receive(posted(2));
    ws.receive(posted(1));
    ws.receive(posted(3));
    ws.receive(posted(1, "conv_other0000000"));
    expect(seen).toEqual([1, 2, 3, 1]);
    expect(messages).toEqual([`${CONV}:1`, `${CONV}:2`, `${CONV}:3`, "conv_other0000000:1"]);
    expect(client.lastSeq(CONV)).toBe(3);
  });

  it("keeps delivering when a listener throws, reporting the error", async () => {
    const { client, socket } = setup();
    const ws = await socket(0);
    ws.accept();
    const host = globalThis as { reportError?: (error: unknown) => void };
    const original = host.reportError;
    const reported: unknown[] = [];
    host.reportError = (error) => reported.push(error);
    try {
      const seen: number[] = [];
      client.on("event", () => {
        throw new Error("listener bug");
      });
      client.on("event", (event) => seen.push((event.data as { seq: number }).seq));
      ws.receive(posted(1));
      ws.receive(posted(2));
      expect(seen).toEqual([1, 2]);
      expect(reported).toHaveLength(2);
    } finally {
      host.reportError = original;
    }
  });
});

describe("RealtimeClient: reconnection", () => {
  it("backs off exponentially with full jitter, capped", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.999);
    const { client, socket } = setup({ backoff: { baseMs: 10, maxMs: 40 } });
    const delays: number[] = [];
    client.on("close", (info) => delays.push(info.delayMs!));
    for (let i = 0; i < 5; i++) (await socket(i)).drop();
    expect(delays).toEqual([9, 19, 39, 39, 39]);
    vi.spyOn(Math, "random").mockReturnValue(0);
    (await socket(5)).drop();
    expect(delays.at(-1)).toBe(0);
  });

  it("resubscribes every topic after a reconnection, recovering a conversation from a few seqs before the last delivered", async () => {
    const { client, socket } = setup();
    const reconnects: number[] = [];
    client.on("reconnect", ({ attempt }) => reconnects.push(attempt));
    const ws = await socket(0);
    ws.accept();
    const exact = client.subscribe(TOPIC, { sinceSeq: 0 });
    const wildcard = client.subscribe(WILDCARD);
    ws.receive({ type: "ack", id: ws.frames()[0].id, recovered: true });
    ws.receive({ type: "ack", id: ws.frames()[1].id });
    await Promise.all([exact, wildcard]);
    ws.receive(posted(1));
    ws.receive(posted(2));
    ws.drop();

    const again = await socket(1);
    again.accept();
    expect(reconnects).toEqual([1]);
    const [first, second] = again.frames();
    // The overlap (8 seqs, here down to 0) replays what this client has, so it can tell a message that took the seq
    // of one never stored; what it has is dropped.
    expect(first).toEqual({ type: "subscribe", id: first.id, topic: TOPIC, sinceSeq: 0 });
    expect(second).toEqual({ type: "subscribe", id: second.id, topic: WILDCARD });
    const messages: number[] = [];
    const gaps: unknown[] = [];
    client.on("message", (message) => messages.push(message.seq));
    client.on("gap", (gap) => gaps.push(gap));
    again.receive({ type: "ack", id: first.id, recovered: true, lastSeq: 4 });
    for (const seq of [1, 2, 3, 4]) again.receive(posted(seq));
    expect(messages).toEqual([3, 4]);
    expect(gaps).toEqual([]);
  });

  it("recovers from a delivered message the room never stored: the message that takes its seq, and its lastSeq ack", async () => {
    const { client, socket } = setup();
    const ws = await socket(0);
    ws.accept();
    const subscribed = client.subscribe(TOPIC, { sinceSeq: 0 });
    ws.receive({ type: "ack", id: ws.last("subscribe").id, recovered: true, lastSeq: 0 });
    await subscribed;
    const messages: string[] = [];
    const gaps: unknown[] = [];
    client.on("message", (message) => messages.push(`${message.seq}:${message.id}`));
    client.on("gap", (gap) => gaps.push(gap));
    for (const seq of [1, 2, 3, 4, 5]) ws.receive(posted(seq));

    // Live: seq 5 again, as another message (the delivered one was never stored), is delivered once, with a gap.
    ws.receive(posted(5, CONV, undefined, "msg_other5"));
    ws.receive(posted(5, CONV, undefined, "msg_other5"));
    ws.receive(posted(4));
    expect(messages.slice(5)).toEqual(["5:msg_other5"]);
    expect(gaps).toEqual([{ topic: TOPIC, conversationId: CONV, afterSeq: 4 }]);
    expect(client.lastSeq(CONV)).toBe(5);

    // Recovery: the room stored up to 3 only. The client forgets 4 and 5, reports the gap, and the next messages at
    // those seqs are delivered in order.
    ws.drop();
    const again = await socket(1);
    again.accept();
    const frame = again.last("subscribe");
    expect(frame.sinceSeq).toBe(0);
    again.receive({ type: "ack", id: frame.id, recovered: true, lastSeq: 3 });
    for (const seq of [1, 2, 3]) again.receive(posted(seq));
    expect(client.lastSeq(CONV)).toBe(3);
    expect(gaps.at(-1)).toEqual({ topic: TOPIC, conversationId: CONV, afterSeq: 3 });
    again.receive(posted(4, CONV, undefined, "msg_new4"));
    again.receive(posted(5, CONV, undefined, "msg_new5"));
    expect(messages.slice(6)).toEqual(["4:msg_new4", "5:msg_new5"]);
    expect(gaps).toHaveLength(2);
  });

  it("resolves a subscribe made while disconnected with the ack of the next connection, and reports a gap", async () => {
    const { client, socket } = setup();
    const ws = await socket(0);
    ws.accept();
    ws.drop();
    const pending = client.subscribe(TOPIC, { sinceSeq: 7 });
    const gaps: unknown[] = [];
    client.on("gap", (gap) => gaps.push(gap));
    const again = await socket(1);
    again.accept();
    const frame = again.last("subscribe");
    expect(frame.sinceSeq).toBe(7);
    again.receive({ type: "ack", id: frame.id, recovered: false });
    await expect(pending).resolves.toEqual({ topic: TOPIC, recovered: false });
    expect(gaps).toEqual([{ topic: TOPIC, conversationId: CONV, afterSeq: 7 }]);
  });

  it("buffers posts while disconnected and re-sends unacked posts, after the subscriptions, with the same clientMessageId", async () => {
    const { client, socket } = setup();
    const ws = await socket(0);
    ws.accept();
    client.subscribe(TOPIC).catch(() => {});
    const inFlight = client.post(CONV, { text: "in flight" });
    const sentFirst = ws.last("message.post");
    expect(sentFirst.clientMessageId).toEqual(expect.any(String));
    ws.drop();
    const buffered = client.post(CONV, { text: "buffered", clientMessageId: "mine" });

    const again = await socket(1);
    again.accept();
    const frames = again.frames();
    expect(frames.map((f) => f.type)).toEqual(["subscribe", "message.post", "message.post"]);
    expect(frames[1]).toEqual(sentFirst);
    expect(frames[2]).toMatchObject({ text: "buffered", clientMessageId: "mine", conversationId: CONV });
    again.receive({ type: "ack", id: frames[2].id, message: { id: "msg_2", seq: 2 } });
    again.receive({ type: "ack", id: frames[1].id, message: { id: "msg_1", seq: 1 } });
    await expect(inFlight).resolves.toEqual({ id: "msg_1", seq: 1 });
    await expect(buffered).resolves.toEqual({ id: "msg_2", seq: 2 });
  });

  it("paces buffered posts to the server's budget (20 at once, then 10 a second) and re-sends one refused RATE_LIMITED", async () => {
    const { client, socket } = setup();
    const posts = Array.from({ length: 30 }, (_, i) => client.post(CONV, { text: `p${i}` }));
    const ws = await socket(0);
    ws.accept();
    const sent = () => ws.frames().filter((f) => f.type === "message.post");
    expect(sent()).toHaveLength(20);
    await waitFor(() => sent().length === 30, 2_000);
    expect(sent().map((f) => f.text)).toEqual(posts.map((_, i) => `p${i}`));

    // The server refuses one anyway (its clock runs apart): it is sent again, not rejected.
    const refused = sent()[25];
    ws.receive({ type: "error", id: refused.id, error: { code: "RATE_LIMITED", message: "slow down" } });
    await waitFor(() => sent().length === 31, 2_000);
    expect(sent()[30]).toEqual(refused);
    for (const [i, frame] of sent().slice(0, 30).entries()) {
      ws.receive({ type: "ack", id: frame.id, message: { id: `msg_${i}`, seq: i + 1 } });
    }
    await expect(Promise.all(posts)).resolves.toHaveLength(30);
  });

  it("drops a connection that errs without a close event, or never opens, and connects again", async () => {
    // Node 22's WebSocket, on a refused connection, fires error and stays CONNECTING, with no close event.
    const refused = setup();
    const first = await refused.socket(0);
    first.onerror?.({});
    const second = await refused.socket(1);
    expect(first.closedWith).toMatchObject({ code: 4000 });
    second.accept();
    expect(refused.client.state).toBe("open");

    const silent = setup({ connectTimeoutMs: 50 });
    await silent.socket(0);
    await silent.socket(1);
    expect(silent.sockets[0].closedWith).toMatchObject({ code: 4000, reason: "connect timeout" });
  });

  it("bounds the buffer of pending posts", async () => {
    const { client } = setup({ maxPendingPosts: 2 });
    const a = client.post(CONV, { text: "a" });
    const b = client.post(CONV, { text: "b" });
    await expect(client.post(CONV, { text: "c" })).rejects.toMatchObject({ code: "BUFFER_FULL" });
    client.close();
    await expect(a).rejects.toMatchObject({ code: "CLOSED" });
    await expect(b).rejects.toMatchObject({ code: "CLOSED" });
  });

  it("asks a token source for a fresh token on every connection", async () => {
    let n = 0;
    const { socket } = setup({ token: async () => `tok_${++n}` });
    (await socket(0)).drop();
    expect((await socket(1)).url).toContain("token=tok_2");
  });

  it("stops for good on close(), and when the server refuses a static token", async () => {
    const { client, socket, sockets } = setup();
    const ws = await socket(0);
    ws.accept();
    const pending = client.subscribe(TOPIC);
    client.close();
    await expect(pending).rejects.toMatchObject({ code: "CLOSED" });
    await expect(client.subscribe(TOPIC)).rejects.toMatchObject({ code: "CLOSED" });
    expect(ws.closedWith).toEqual({ code: 1000, reason: "client closed" });
    expect(client.state).toBe("closed");

    const refused = setup();
    const closes: unknown[] = [];
    refused.client.on("close", (info) => closes.push(info));
    const rs = await refused.socket(0);
    rs.accept();
    rs.drop(4001, "token expired");
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(refused.sockets).toHaveLength(1);
    expect(refused.client.state).toBe("closed");
    expect(closes).toEqual([{ code: 4001, reason: "token expired", reconnecting: false }]);
    expect(sockets).toHaveLength(1);
  });

  it("stops on 4003 even with a token source: a fresh token does not make a participant again", async () => {
    const { client, socket, sockets } = setup({ token: async () => "tok" });
    const ws = await socket(0);
    ws.accept();
    const pending = client.post(CONV, { text: "too late" });
    ws.drop(4003, "no longer a participant of this room");
    await expect(pending).rejects.toMatchObject({ code: "FORBIDDEN" });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(sockets).toHaveLength(1);
    expect(client.state).toBe("closed");
  });

  it("asks why a connection never opened: a refused credential ends the client with the server's error", async () => {
    const asked: { url: string; authorization: string | null }[] = [];
    const refusing = (status: number, code: string) =>
      (async (url: string, init?: RequestInit) => {
        asked.push({ url, authorization: new Headers(init?.headers).get("authorization") });
        return Response.json({ error: { code, message: "no", requestId: "req_1" } }, { status });
      }) as typeof fetch;
    const refused = setup({ fetch: refusing(403, "FORBIDDEN") });
    const errors: unknown[] = [];
    refused.client.on("error", (error) => errors.push(error));
    const pending = refused.client.subscribe(TOPIC);
    (await refused.socket(0)).drop(1006);
    await expect(pending).rejects.toMatchObject({ code: "FORBIDDEN" });
    expect(asked).toEqual([{ url: "http://127.0.0.1:8787/v1/realtime", authorization: "Bearer sk_test" }]);
    expect(errors).toEqual([expect.objectContaining({ code: "FORBIDDEN" })]);
    expect(refused.client.state).toBe("closed");

    // A token source gets one more try after a 401 (its next token may be good), not a second.
    let n = 0;
    const expired = setup({ token: async () => `tok_${++n}`, fetch: refusing(401, "UNAUTHORIZED") });
    const subscribed = expired.client.subscribe(TOPIC);
    (await expired.socket(0)).drop(1006);
    (await expired.socket(1)).drop(1006);
    await expect(subscribed).rejects.toMatchObject({ code: "UNAUTHORIZED" });
    expect(expired.sockets).toHaveLength(2);

    // A credential that is fine (400: only the upgrade is missing) or no answer at all: it keeps reconnecting.
    const fine = setup({ fetch: refusing(400, "BAD_REQUEST") });
    (await fine.socket(0)).drop(1006);
    (await fine.socket(1)).accept();
    expect(fine.client.state).toBe("open");
  });
});
