import { env, runInDurableObject, SELF } from "cloudflare:test";
import { expect } from "vitest";
import { call, createAccount, readResponse } from "./api";
import { connect, type TestSocket } from "./sockets";

/**
 * Helpers for the realtime tests, on top of `connect()`: a socket that also keeps a log of every frame in arrival
 * order, a `flush` round trip, subscriptions that wait for their answer, and REST shortcuts.
 */

/** A test socket with an ordered log of every frame it received (the `frames`/`next` queue is left as it is). */
export interface LoggedSocket extends TestSocket {
  /** Every frame received, in arrival order (never consumed). */
  log: any[];
  /** Sends raw text (or bytes) exactly as given. */
  sendRaw(data: string | ArrayBuffer | Uint8Array): void;
  /**
   * A round trip: sends a ping with a fresh id and waits for its ack. The server writes frames to one connection in
   * order, so every frame it sent to this socket before it handled the ping has arrived once this resolves.
   */
  flush(timeoutMs?: number): Promise<void>;
  /** Resolves once the log holds a frame matching `predicate` (searching from index `from`); answers it. */
  waitLog(predicate: (frame: any) => boolean, timeoutMs?: number, from?: number): Promise<any>;
  /** Event frames in the log, optionally filtered. */
  events(filter?: (frame: any) => boolean): any[];
}

let flushes = 0;

/** Opens a realtime socket and logs its frames. */
export async function open(path: string, token: string): Promise<LoggedSocket> {
  const socket = await connect(path, token);
  const log: any[] = [];
  const listeners = new Set<() => void>();
  socket.ws.addEventListener("message", (event) => {
    log.push(JSON.parse(event.data as string));
    for (const listener of [...listeners]) listener();
  });
  const waitLog = (predicate: (frame: any) => boolean, timeoutMs = 5_000, from = 0) =>
    new Promise<any>((resolve, reject) => {
      const check = () => {
        const found = log.slice(from).find(predicate);
        if (found === undefined) return false;
        listeners.delete(check);
        clearTimeout(timer);
        resolve(found);
        return true;
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(new Error(`no matching frame within ${timeoutMs} ms; log: ${JSON.stringify(log).slice(-2_000)}`));
      }, timeoutMs);
      listeners.add(check);
      check();
    });
  return Object.assign(socket, {
    log,
    sendRaw: (data: string | ArrayBuffer | Uint8Array) => socket.ws.send(data),
    waitLog,
    async flush(timeoutMs = 5_000) {
      const id = `flush-${++flushes}`;
      socket.ws.send(JSON.stringify({ type: "ping", id }));
      await waitLog((frame) => frame.type === "ack" && frame.id === id, timeoutMs);
    },
    events: (filter: (frame: any) => boolean = () => true) =>
      log.filter((frame) => frame.type === "event").filter(filter),
  });
}

/** Opens a room socket. */
export function openRoom(roomId: string, token: string) {
  return open(`/v1/rooms/${roomId}/realtime`, token);
}

/** Opens an org hub socket. */
export function openHub(token: string) {
  return open(`/v1/realtime`, token);
}

let frameIds = 0;

/** Sends a frame with a fresh id and answers the ack or error frame that answers it. */
export async function request(socket: LoggedSocket, frame: Record<string, unknown>, timeoutMs = 5_000) {
  const id = String(frame.id ?? `req-${++frameIds}`);
  const from = socket.log.length;
  socket.send({ ...frame, id });
  return socket.waitLog((f) => (f.type === "ack" || f.type === "error") && f.id === id, timeoutMs, from);
}

/** Subscribes and asserts the ack. */
export async function subscribe(socket: LoggedSocket, topic: string, sinceSeq?: number) {
  const answer = await request(socket, { type: "subscribe", topic, ...(sinceSeq !== undefined ? { sinceSeq } : {}) });
  expect(answer, JSON.stringify(answer)).toMatchObject({ type: "ack" });
  return answer;
}

/** `events.{org}.conversations.conversation.{event}.{conversationId}` */
export function conversationTopic(orgId: string, conversationId: string, event = "message_posted") {
  return `events.${orgId}.conversations.conversation.${event}.${conversationId}`;
}

/** The seqs of the `message_posted` events in a list of frames. */
export function seqsOf(frames: any[], conversationId?: string): number[] {
  return frames
    .filter(
      (f) =>
        f.type === "event" &&
        f.event.type === "conversation.message_posted" &&
        (!conversationId || f.event.resourceId === conversationId),
    )
    .map((f) => f.event.data.seq as number);
}

/** 1..n */
export function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` in flight. */
export async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

/** Posts a message with the API key and asserts 201. */
export async function postOk(apiKey: string, conversationId: string, body: Record<string, unknown>) {
  const response = await call("POST", `/v1/conversations/${conversationId}/messages`, { token: apiKey, body });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body;
}

/** Creates a standard room with these participants. */
export async function createRoom(apiKey: string, participants: { accountId: string; role?: string }[]) {
  const response = await call("POST", "/v1/rooms", { token: apiKey, body: { type: "standard", participants } });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body;
}

/** Starts a conversation in a room. */
export async function createConversation(apiKey: string, roomId: string, name = "Another") {
  const response = await call("POST", `/v1/rooms/${roomId}/conversations`, { token: apiKey, body: { name } });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body;
}

/** Adds a participant to a room. */
export async function addParticipant(apiKey: string, roomId: string, accountId: string, role?: string) {
  const response = await call("POST", `/v1/rooms/${roomId}/participants`, {
    token: apiKey,
    body: { accountId, ...(role ? { role } : {}) },
  });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body;
}

/** Removes a participant from a room. */
export async function removeParticipant(apiKey: string, roomId: string, accountId: string) {
  const response = await call("DELETE", `/v1/rooms/${roomId}/participants/${accountId}`, { token: apiKey });
  expect(response.status, JSON.stringify(response.body)).toBe(204);
}

/** Issues a session token for one participant in one conversation. */
export async function sessionToken(apiKey: string, conversationId: string, accountId: string) {
  const response = await call("POST", `/v1/conversations/${conversationId}/sessions`, {
    token: apiKey,
    body: { accountId },
  });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body.token as string;
}

/** A user account. */
export function createUser(apiKey: string, name: string) {
  return createAccount(apiKey, { type: "user", name });
}

/** An upgrade (or plain GET) to a realtime path, answering the raw response and its parsed body. */
export async function upgrade(path: string, options: { token?: string; header?: string; upgrade?: boolean } = {}) {
  const url = new URL(`https://parley.test${path}`);
  if (options.token) url.searchParams.set("token", options.token);
  const headers: Record<string, string> = {};
  if (options.upgrade !== false) headers.upgrade = "websocket";
  if (options.header) headers.authorization = `Bearer ${options.header}`;
  const response = await SELF.fetch(url.toString(), { headers });
  if (response.status === 101) {
    response.webSocket?.accept();
    response.webSocket?.close(1000, "done");
    return { status: 101, headers: response.headers, body: null };
  }
  return readResponse(response);
}

/** The stub of a room's object, untyped (for `runInDurableObject`, `evictDurableObject` and alarms). */
export function roomObject(roomId: string): DurableObjectStub {
  return env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as DurableObjectStub;
}

/** The stub of an org's hub object, untyped (for `runInDurableObject`, `evictDurableObject` and alarms). */
export function hubObject(orgId: string): DurableObjectStub {
  return env.HUBS.get(env.HUBS.idFromName(orgId)) as unknown as DurableObjectStub;
}

/** Waits a little (for "nothing arrives" checks, always after a positive witness). */
export function sleep(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * `runInDurableObject` with the instance untyped: tests reach into private state (the socket registry) on purpose,
 * and the typed overloads are too deep for the compiler with our RPC classes.
 */
export function inObject<R>(
  stub: DurableObjectStub,
  callback: (instance: any, state: DurableObjectState) => R | Promise<R>,
): Promise<R> {
  return runInDurableObject(stub, callback as (instance: DurableObject, state: DurableObjectState) => R | Promise<R>);
}

/**
 * A counter whose thresholds can be awaited. Progress is signalled from the work itself, not polled with timers:
 * in the Workers runtime a test's `setTimeout` may not fire while requests keep the isolate busy.
 */
export class Counter {
  value = 0;
  private waiters: { at: number; resolve: () => void }[] = [];

  increment(): void {
    this.value++;
    this.waiters = this.waiters.filter((waiter) => {
      if (waiter.at > this.value) return true;
      waiter.resolve();
      return false;
    });
  }

  /** Resolves once the counter reached `at`. */
  reached(at: number): Promise<void> {
    if (this.value >= at) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ at, resolve }));
  }
}

/** Sends the exact client ping text (`{"type":"ping"}`, answered by the runtime) and answers the pong that follows. */
export async function autoPing(socket: LoggedSocket) {
  const from = socket.log.length;
  socket.sendRaw('{"type":"ping"}');
  return socket.waitLog((frame) => frame.type === "pong", 5_000, from);
}

/** The close of a socket by the server, failing after `timeoutMs` instead of hanging until the test's timeout. */
export function closedWithin(socket: LoggedSocket, timeoutMs = 5_000): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the socket was not closed within ${timeoutMs} ms`)), timeoutMs);
    socket.closed.then((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/**
 * Recovery while posts race the replay: with `before` messages already in the conversation, subscribes with
 * `sinceSeq` while more are posted. A third of the `racing` posts go out before the subscribe frame, a third between
 * the frame and its ack, the rest after the ack, so the ack always lands in the middle of the posting however fast
 * posts are. Then asserts the socket got no event before the ack and every seq after `sinceSeq` exactly once, in order.
 */
export async function expectRecoveryWhilePosting(
  socket: LoggedSocket,
  f: { apiKey: string; orgId: string; conversation: { id: string }; alice: { id: string } },
  { before, racing, sinceSeq }: { before: number; racing: number; sinceSeq: number },
) {
  const sent = new Counter();
  const acked = new Counter();
  const third = Math.floor(racing / 3);
  const posting = pool(racing, 4, async (i) => {
    if (i >= third) await sent.reached(1);
    if (i >= 2 * third) await acked.reached(1);
    await postOk(f.apiKey, f.conversation.id, { text: `during ${i}`, authorId: f.alice.id });
  });
  posting.catch(() => {}); // awaited below; keeps an early failure from being reported as unhandled
  const topic = `events.${f.orgId}.conversations.conversation.message_posted.${f.conversation.id}`;
  const answer = request(socket, { type: "subscribe", id: "rec", topic, sinceSeq });
  sent.increment();
  const ack = await answer;
  acked.increment();
  expect(ack).toMatchObject({ type: "ack", id: "rec", recovered: true });
  await posting;
  const total = before + racing;
  await socket.waitLog((frame) => frame.type === "event" && frame.event.data.seq === total, 10_000);
  await socket.flush();
  const ackAt = socket.log.indexOf(ack);
  expect(socket.log.slice(0, ackAt).filter((frame) => frame.type === "event")).toEqual([]);
  expect(seqsOf(socket.log)).toEqual(range(sinceSeq + 1, total));
}

/**
 * Overlapping subscriptions and recovery: a connection that gets a conversation's messages through a wildcard, then
 * subscribes to the conversation with `sinceSeq`, is replayed only the messages it lacks; an event reaches it once.
 * After an unsubscribe leaves it without the conversation for a while, a replay still fills the gap.
 */
export async function expectReplaySkipsWhatTheConnectionHas(
  socket: LoggedSocket,
  f: { apiKey: string; orgId: string; conversation: { id: string }; alice: { id: string } },
) {
  const post = (text: string) => postOk(f.apiKey, f.conversation.id, { text, authorId: f.alice.id });
  const waitSeq = (seq: number) =>
    socket.waitLog((frame) => frame.type === "event" && frame.event.data?.seq === seq, 5_000);
  const exact = conversationTopic(f.orgId, f.conversation.id);
  const wildcard = `events.${f.orgId}.conversations.conversation.message_posted.*`;

  for (const text of ["1", "2"]) await post(text); // before any subscription
  await subscribe(socket, wildcard);
  for (const text of ["3", "4"]) await post(text);
  await waitSeq(4);
  expect(await subscribe(socket, exact, 0)).toMatchObject({ recovered: true });
  await post("5");
  await waitSeq(5);
  await socket.flush();
  expect(seqsOf(socket.log)).toEqual([3, 4, 1, 2, 5]);

  // the connection has 1..5 now: asking again replays nothing
  expect(await subscribe(socket, exact, 0)).toMatchObject({ recovered: true });
  await post("6");
  await waitSeq(6);
  await socket.flush();
  expect(seqsOf(socket.log)).toEqual([3, 4, 1, 2, 5, 6]);

  // without a subscription for a while: the replay brings what was missed
  for (const topic of [exact, wildcard]) await request(socket, { type: "unsubscribe", topic });
  await post("7");
  await subscribe(socket, wildcard);
  await post("8");
  await waitSeq(8);
  expect(await subscribe(socket, exact, 6)).toMatchObject({ recovered: true });
  await waitSeq(7);
  await socket.flush();
  expect(seqsOf(socket.log)).toEqual([3, 4, 1, 2, 5, 6, 8, 7]);
}
