import type { ParleyEvent } from "../protocol/events";
import {
  CLOSE_CODES,
  PING_TEXT,
  PONG_TEXT,
  REALTIME_LIMITS,
  refilled,
  type MessagePostFrame,
} from "../protocol/frames";
import type { Message } from "../protocol/messages";
import { recoverableConversationOf } from "../protocol/topics";

/** The part of the WebSocket API this client uses: browsers, Node 22 and the `ws` package all provide it. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** A WebSocket constructor, e.g. the global `WebSocket` or the `ws` package's default export. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** A credential, or a function answering a fresh one before each connection (tokens expire). */
export type TokenSource = string | (() => string | Promise<string>);

/** The error code of a refused upgrade when its answer names none. */
const REFUSED_CODES: Record<number, string> = { 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND" };

/** Options of `RealtimeClient`. */
export interface RealtimeClientOptions {
  /** The realtime endpoint (`/v1/realtime` or `/v1/rooms/{roomId}/realtime`), as `http(s)://` or `ws(s)://`; see `realtimeUrl`. */
  url: string;
  /** Sent as `?token=` (browsers cannot set headers on a WebSocket). */
  token: TokenSource;
  /** A WebSocket constructor, for environments without a global one. */
  WebSocket?: WebSocketConstructor;
  /** Connect at construction (default true); otherwise call `connect()`. */
  connect?: boolean;
  /** How often to ping while connected (default 25 s; the server closes connections silent for 75 s). */
  pingIntervalMs?: number;
  /** A connection that answers nothing this long after a ping is dropped and reconnected (default 10 s). */
  pongTimeoutMs?: number;
  /** Exponential backoff with full jitter between reconnection attempts (default base 250 ms, max 10 s). */
  backoff?: { baseMs?: number; maxMs?: number };
  /**
   * How long a request waits for its ack once sent (default 30 s; 0 waits for ever). A subscribe or unsubscribe then
   * rejects with `TIMEOUT`; a post is not given up: the connection is taken for dead and the post goes again on the
   * next one (with its `clientMessageId`, so it is posted once).
   */
  requestTimeoutMs?: number;
  /** Most `message.post` frames waiting to be sent or acked (default 100); beyond it `post` rejects with `BUFFER_FULL`. */
  maxPendingPosts?: number;
  /** Least time between two `typing` frames of one conversation (default 2 s). */
  typingIntervalMs?: number;
  /** A connection not open this long after it was asked for is dropped and tried again (default 10 s). */
  connectTimeoutMs?: number;
  /**
   * Asks the endpoint over plain HTTP why a connection never opened (the global `fetch` by default; null never asks):
   * browsers report a refused upgrade only as 1006, so a refused credential would otherwise be tried for ever.
   */
  fetch?: typeof fetch | null;
}

/** Options of `subscribe`. */
export interface SubscribeOptions {
  /**
   * For one conversation's `message_posted` topic: replay every message after this seq, then continue live. Later
   * reconnections recover from the highest seq delivered, so pass it (e.g. 0, or the last seq read over REST) to have
   * no gap from the start.
   */
  sinceSeq?: number;
}

/** What the server acked for a subscription: `recovered` answers a `sinceSeq`. */
export interface SubscribeResult {
  topic: string;
  recovered?: boolean;
}

/** The fields of a room socket `message.post` (the REST post's rules). */
export type RealtimePostInput = Omit<MessagePostFrame, "type" | "id" | "conversationId">;

/** Why a connection closed, and whether the client reconnects. */
export interface CloseInfo {
  code: number;
  reason: string;
  reconnecting: boolean;
  /** The wait before the next attempt, when reconnecting. */
  delayMs?: number;
}

/**
 * A conversation whose messages after `afterSeq` may differ from what was delivered: read them over REST. Either the
 * server could not replay them (`recovered: false`), or messages delivered after `afterSeq` were never stored (the
 * room failed before they were durable) and other messages took, or will take, their seqs.
 */
export interface GapInfo {
  topic: string;
  conversationId: string;
  afterSeq: number;
}

/** The events of `RealtimeClient.on` and their arguments. */
export interface RealtimeEventMap {
  /** A connection opened (the first one and every reconnection); subscriptions are being restored. */
  open: [];
  /** A reconnection opened after a drop; `attempt` counts the tries it took. */
  reconnect: [info: { attempt: number }];
  /** A connection closed. */
  close: [info: CloseInfo];
  /** An error frame without a request, a failed resubscription, or a protocol problem. */
  error: [error: RealtimeError];
  /**
   * An event of a subscription, each delivered once; a conversation's messages in increasing seq, except a message
   * that replaces one never stored (a `gap` follows it).
   */
  event: [event: ParleyEvent];
  /** The message of a `conversation.message_posted` event, after the `event` listeners. */
  message: [message: Message, event: ParleyEvent<Message>];
  /** Messages after `afterSeq` may be missing or differ from what was delivered (see `GapInfo`). */
  gap: [info: GapInfo];
}

/** Connection states of `RealtimeClient`. */
export type RealtimeState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** An error frame of the server (its `code`, `message` and `details`), or a client-side failure (`TIMEOUT`, `CLOSED`, ...). */
export class RealtimeError extends Error {
  readonly code: string;
  readonly details?: { path: string; message: string }[];

  constructor(code: string, message: string, details?: { path: string; message: string }[]) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
    if (details) this.details = details;
  }
}

/** The realtime URL of a server: the org stream, or one room's socket when `roomId` is given. */
export function realtimeUrl(baseUrl: string, roomId?: string): string {
  const base = baseUrl.replace(/\/+$/, "").replace(/\/v1$/, "");
  return roomId ? `${base}/v1/rooms/${encodeURIComponent(roomId)}/realtime` : `${base}/v1/realtime`;
}

/** The topic of one kind of event of one resource, e.g. `topicOf(orgId, "conversation", "message_posted", convId)`. */
export function topicOf(orgId: string, resource: string, event: string, resourceId = "*", source = "conversations") {
  return `events.${orgId}.${source}.${resource}.${event}.${resourceId}`;
}

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (error: RealtimeError) => void;
}

interface Subscription {
  topic: string;
  conversationId: string | null;
  sinceSeq?: number;
  /** The frame id of the subscribe in flight on the current connection. */
  frameId?: string;
  /** The last seq this client had delivered when the in-flight subscribe asked to recover. */
  hadSeq?: number;
  waiters: Waiter<SubscribeResult>[];
}

interface PendingPost extends Waiter<Message> {
  id: string;
  text: string;
}

type InFlight =
  | { kind: "subscribe"; topic: string; timer?: ReturnType<typeof setTimeout> }
  | { kind: "unsubscribe"; waiter: Waiter<void>; timer?: ReturnType<typeof setTimeout> }
  | { kind: "post"; post: PendingPost; timer?: ReturnType<typeof setTimeout> };

const OPEN = 1;
const SEEN_EVENT_IDS = 10_000;
/** Message ids kept per conversation: they tell a message delivered again from a different one at the same seq. */
const RECENT_MESSAGES = 32;
/**
 * How many delivered seqs a recovering subscription asks for again. A room sends a post to its sockets before the
 * post is durable; if the room fails before it is, the next stored message takes that seq, and only an overlap
 * replays it to a client that reconnected after it was stored.
 */
const RECOVERY_OVERLAP = 8;
const STABLE_AFTER_MS = 5_000;
/** How long a connection that erred before it opened gets to close before it is dropped. */
const ERROR_GRACE_MS = 1_000;
/** Added to a wait for the posting budget, so the server, whose clock runs apart, has refilled it too. */
const PACE_SLACK_MS = 20;
const utf8 = new TextEncoder();

/** A random id for `clientMessageId`, so a post re-sent after a reconnection is never posted twice. */
function randomId(): string {
  const c = (
    globalThis as { crypto?: { randomUUID?: () => string; getRandomValues?: (bytes: Uint8Array) => Uint8Array } }
  ).crypto;
  if (c?.randomUUID) return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function reportListenerError(error: unknown): void {
  const report = (globalThis as { reportError?: (error: unknown) => void }).reportError;
  if (typeof report === "function") report(error);
  else console.error("parley realtime listener failed", error);
}

/**
 * A realtime connection (contract section 8) that survives drops: it pings, reconnects with backoff and full jitter,
 * restores its subscriptions (recovering one conversation's messages with `sinceSeq`), re-sends unacknowledged posts,
 * and delivers every event once, each conversation's messages in increasing seq.
 */
export class RealtimeClient {
  readonly url: string;
  readonly #token: TokenSource;
  readonly #WebSocket: WebSocketConstructor;
  readonly #pingIntervalMs: number;
  readonly #pongTimeoutMs: number;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #requestTimeoutMs: number;
  readonly #maxPendingPosts: number;
  readonly #typingIntervalMs: number;
  readonly #connectTimeoutMs: number;
  readonly #fetch: typeof fetch | null;

  #state: RealtimeState = "idle";
  #ws: WebSocketLike | null = null;
  #openedAt = 0;
  #healthy = false;
  #everOpened = false;
  #attempt = 0;
  #opening = false;
  /** Connections in a row whose credential the server refused (see `#askWhy`). */
  #refusals = 0;
  #nextFrameId = 1;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #pongTimer: ReturnType<typeof setTimeout> | undefined;
  /** Drops a connection that does not open in time, or that failed without a close event. */
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * The server's posting budget of this connection (`REALTIME_LIMITS`: a burst, then a rate), kept here so that posts
   * buffered across a reconnection are paced rather than refused with `RATE_LIMITED`.
   */
  #postTokens: number = REALTIME_LIMITS.postBurst;
  #postTokensAt = 0;
  /** Posts waiting for the budget, in order; `#postTimer` sends them when it allows. */
  #paced: PendingPost[] = [];
  #postTimer: ReturnType<typeof setTimeout> | undefined;

  readonly #subscriptions = new Map<string, Subscription>();
  readonly #posts = new Map<string, PendingPost>();
  readonly #inFlight = new Map<string, InFlight>();
  readonly #lastSeq = new Map<string, number>();
  /** Per conversation, the ids of its last `RECENT_MESSAGES` delivered messages by seq, oldest first. */
  readonly #recent = new Map<string, Map<number, string>>();
  readonly #seen = new Set<string>();
  readonly #typingSentAt = new Map<string, number>();
  readonly #listeners = new Map<keyof RealtimeEventMap, Set<(...args: never[]) => void>>();
  readonly #openWaiters: Waiter<void>[] = [];

  constructor(options: RealtimeClientOptions) {
    const url = new URL(options.url);
    if (url.protocol === "http:") url.protocol = "ws:";
    else if (url.protocol === "https:") url.protocol = "wss:";
    this.url = url.toString();
    this.#token = options.token;
    const Ctor =
      options.WebSocket ?? ((globalThis as { WebSocket?: unknown }).WebSocket as WebSocketConstructor | undefined);
    if (typeof Ctor !== "function") {
      throw new TypeError("no global WebSocket: pass options.WebSocket (e.g. the `ws` package)");
    }
    this.#WebSocket = Ctor;
    this.#pingIntervalMs = options.pingIntervalMs ?? 25_000;
    this.#pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
    this.#baseMs = options.backoff?.baseMs ?? 250;
    this.#maxMs = options.backoff?.maxMs ?? 10_000;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#maxPendingPosts = options.maxPendingPosts ?? 100;
    this.#typingIntervalMs = options.typingIntervalMs ?? 2_000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    const globalFetch = (globalThis as { fetch?: typeof fetch }).fetch;
    this.#fetch = options.fetch === undefined ? (globalFetch ? globalFetch.bind(globalThis) : null) : options.fetch;
    if (options.connect !== false) this.connect();
  }

  /** The connection's state. */
  get state(): RealtimeState {
    return this.#state;
  }

  /** The current underlying socket, or null between connections: for diagnostics and tests (closing it forces a reconnection). */
  get socket(): WebSocketLike | null {
    return this.#ws;
  }

  /** The topics subscribed to, restored after every reconnection. */
  get topics(): string[] {
    return [...this.#subscriptions.keys()];
  }

  /** The highest message seq delivered for a conversation, if any. */
  lastSeq(conversationId: string): number | undefined {
    return this.#lastSeq.get(conversationId);
  }

  /** Starts connecting, if not connected or connecting already. */
  connect(): void {
    if (this.#state === "idle") void this.#open();
  }

  /** Resolves when a connection is open (at once if one is); rejects if the client is closed first. */
  opened(): Promise<void> {
    if (this.#state === "open") return Promise.resolve();
    if (this.#state === "closed") return Promise.reject(new RealtimeError("CLOSED", "the client is closed"));
    return new Promise((resolve, reject) => this.#openWaiters.push({ resolve, reject }));
  }

  /** Adds a listener; answers a function that removes it. */
  on<K extends keyof RealtimeEventMap>(name: K, listener: (...args: RealtimeEventMap[K]) => void): () => void {
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(listener as (...args: never[]) => void);
    return () => this.off(name, listener);
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof RealtimeEventMap>(name: K, listener: (...args: RealtimeEventMap[K]) => void): void {
    this.#listeners.get(name)?.delete(listener as (...args: never[]) => void);
  }

  /**
   * Subscribes to a topic pattern (contract section 8 grammar); resolves with the server's ack, rejects with its
   * error frame. The subscription is restored after every reconnection.
   */
  subscribe(topic: string, options: SubscribeOptions = {}): Promise<SubscribeResult> {
    if (this.#state === "closed") return Promise.reject(new RealtimeError("CLOSED", "the client is closed"));
    const conversationId = recoverableConversationOf(topic);
    const subscription: Subscription = this.#subscriptions.get(topic) ?? { topic, conversationId, waiters: [] };
    if (options.sinceSeq !== undefined) subscription.sinceSeq = options.sinceSeq;
    this.#subscriptions.set(topic, subscription);
    const result = new Promise<SubscribeResult>((resolve, reject) => subscription.waiters.push({ resolve, reject }));
    if (this.#isOpen()) this.#sendSubscribe(subscription);
    return result;
  }

  /** Ends a subscription; resolves with the server's ack (at once when disconnected: a new connection starts without it). */
  unsubscribe(topic: string): Promise<void> {
    const subscription = this.#subscriptions.get(topic);
    this.#subscriptions.delete(topic);
    if (subscription) {
      if (subscription.frameId) this.#untrack(subscription.frameId);
      for (const waiter of subscription.waiters.splice(0)) {
        waiter.reject(new RealtimeError("UNSUBSCRIBED", `unsubscribed from ${topic} before the ack`));
      }
    }
    if (!this.#isOpen()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const id = this.#frameId();
      this.#track(id, { kind: "unsubscribe", waiter: { resolve, reject } });
      this.#sendText(JSON.stringify({ type: "unsubscribe", id, topic }));
    });
  }

  /**
   * Posts a message over a room socket (`message.post`); resolves with the acked message. A `clientMessageId` is
   * generated when absent, so a post buffered across a reconnection is posted exactly once.
   */
  post(conversationId: string, body: RealtimePostInput): Promise<Message> {
    if (this.#state === "closed") return Promise.reject(new RealtimeError("CLOSED", "the client is closed"));
    if (this.#posts.size >= this.#maxPendingPosts) {
      return Promise.reject(new RealtimeError("BUFFER_FULL", `more than ${this.#maxPendingPosts} posts are pending`));
    }
    const id = this.#frameId();
    const text = JSON.stringify({
      type: "message.post",
      id,
      conversationId,
      ...body,
      clientMessageId: body.clientMessageId ?? randomId(),
    });
    if (utf8.encode(text).byteLength > REALTIME_LIMITS.frameBytes) {
      return Promise.reject(
        new RealtimeError("PAYLOAD_TOO_LARGE", `a frame is at most ${REALTIME_LIMITS.frameBytes} bytes`),
      );
    }
    return new Promise<Message>((resolve, reject) => {
      const post: PendingPost = { id, text, resolve, reject };
      this.#posts.set(id, post);
      if (this.#isOpen()) this.#sendPost(post);
    });
  }

  /** Tells the room the account is typing (room sockets); throttled per conversation, dropped while disconnected. */
  typing(conversationId: string): void {
    if (!this.#isOpen()) return;
    const now = Date.now();
    const last = this.#typingSentAt.get(conversationId);
    if (last !== undefined && now - last < this.#typingIntervalMs) return;
    // The server counts typing frames against the posting budget; a post waiting for it goes first.
    if (this.#paced.length > 0 || !this.#takePostToken()) return;
    this.#typingSentAt.set(conversationId, now);
    this.#sendText(JSON.stringify({ type: "typing", conversationId }));
  }

  /** Drops the current connection and reconnects at once, e.g. after the network changed. */
  reconnect(): void {
    if (this.#state === "closed") return;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#attempt = 0;
    const ws = this.#ws;
    if (ws) {
      this.#detach(ws, 4000, "client reconnecting");
      this.#disconnected(4000, "client reconnecting", 0);
    } else if (!this.#opening) {
      void this.#open();
    }
  }

  /** Closes for good: no reconnection; pending requests reject with `CLOSED`. */
  close(code: number = CLOSE_CODES.normal, reason = "client closed"): void {
    this.#shutdown(code, reason, new RealtimeError("CLOSED", "the client is closed"));
  }

  /** Ends the client for good; pending requests reject with `error`. */
  #shutdown(code: number, reason: string, error: RealtimeError): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#postTimer);
    this.#paced = [];
    this.#stopHeartbeat();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) this.#detach(ws, code, reason);
    const closed = () => error;
    for (const entry of this.#inFlight.values()) {
      clearTimeout(entry.timer);
      if (entry.kind === "unsubscribe") entry.waiter.resolve();
    }
    this.#inFlight.clear();
    for (const subscription of this.#subscriptions.values()) {
      for (const waiter of subscription.waiters.splice(0)) waiter.reject(closed());
    }
    this.#subscriptions.clear();
    for (const post of this.#posts.values()) post.reject(closed());
    this.#posts.clear();
    for (const waiter of this.#openWaiters.splice(0)) waiter.reject(closed());
    this.#emit("close", { code, reason, reconnecting: false });
  }

  #isClosed(): boolean {
    return this.#state === "closed";
  }

  #isOpen(): boolean {
    return this.#state === "open" && this.#ws !== null && this.#ws.readyState === OPEN;
  }

  #frameId(): string {
    return String(this.#nextFrameId++);
  }

  async #open(): Promise<void> {
    this.#state = this.#everOpened ? "reconnecting" : "connecting";
    let token: string;
    this.#opening = true;
    try {
      token = typeof this.#token === "function" ? await this.#token() : this.#token;
    } catch (error) {
      if (this.#isClosed()) return;
      this.#emit("error", new RealtimeError("TOKEN", `the token source failed: ${String(error)}`));
      this.#scheduleReconnect({ code: 1006, reason: "no token" });
      return;
    } finally {
      this.#opening = false;
    }
    if (this.#isClosed()) return;
    const url = new URL(this.url);
    url.searchParams.set("token", token);
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(url.toString());
    } catch (error) {
      this.#emit("error", new RealtimeError("CONNECT", `cannot open a WebSocket: ${String(error)}`));
      this.#scheduleReconnect({ code: 1006, reason: "connect failed" });
      return;
    }
    this.#ws = ws;
    this.#healthy = false;
    this.#watchConnect(ws, this.#connectTimeoutMs, token);
    ws.onopen = () => {
      if (ws === this.#ws) this.#opened();
    };
    ws.onmessage = (event) => {
      if (ws === this.#ws) this.#received(event.data);
    };
    ws.onclose = (event) => {
      if (ws !== this.#ws) return;
      const opened = this.#state === "open";
      this.#disconnected(event.code, event.reason);
      if (!opened) void this.#askWhy(token);
    };
    ws.onerror = () => {
      // Browsers follow an error with a close event, which reconnects. Node 22's WebSocket does not when a connection
      // is refused (it stays CONNECTING): one that errs before it opens is dropped a moment later, unless closed by then.
      if (ws === this.#ws && ws.readyState !== OPEN) this.#watchConnect(ws, ERROR_GRACE_MS, token);
    };
  }

  /** Drops `ws` and reconnects if it is still the connection and not open `ms` from now (and asks why). */
  #watchConnect(ws: WebSocketLike, ms: number, token: string): void {
    clearTimeout(this.#connectTimer);
    this.#connectTimer = setTimeout(() => {
      this.#connectTimer = undefined;
      if (ws !== this.#ws || ws.readyState === OPEN) return;
      this.#detach(ws, 4000, "connect timeout");
      this.#disconnected(1006, "the connection did not open");
      void this.#askWhy(token);
    }, ms);
  }

  /**
   * After a connection that never opened: asks the endpoint with a plain GET why, as a browser reports a refused
   * upgrade only as 1006. A credential refused there (401, 403 or 404, in the contract's error shape) ends the client
   * with that error, except a first 401 with a token source (the next connection brings a fresh token). Anything else
   * (no network, a 400 for the missing upgrade: the credential is fine) leaves the reconnection scheduled.
   */
  async #askWhy(token: string): Promise<void> {
    if (!this.#fetch) return;
    const url = new URL(this.url);
    url.protocol = url.protocol === "wss:" ? "https:" : "http:";
    let response: Response;
    try {
      response = await this.#fetch(url.toString(), { headers: { authorization: `Bearer ${token}` } });
    } catch {
      return;
    }
    const { status } = response;
    if (status !== 401 && status !== 403 && status !== 404) {
      await response.body?.cancel().catch(() => {});
      return;
    }
    const body = (await response.json().catch(() => null)) as { error?: { code?: unknown; message?: unknown } } | null;
    if (this.#isClosed() || this.#state === "open") return;
    const code = typeof body?.error?.code === "string" ? body.error.code : REFUSED_CODES[status];
    const message = typeof body?.error?.message === "string" ? body.error.message : `the server answered ${status}`;
    const error = new RealtimeError(code, `the connection was refused: ${message}`);
    this.#emit("error", error);
    if (status === 401 && typeof this.#token === "function" && this.#refusals++ === 0) return;
    const closeCode = status === 401 ? CLOSE_CODES.unauthorized : CLOSE_CODES.forbidden;
    this.#shutdown(closeCode, error.message, error);
  }

  #opened(): void {
    this.#refusals = 0;
    const reconnected = this.#everOpened;
    const attempt = this.#attempt;
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    this.#postTokens = REALTIME_LIMITS.postBurst;
    this.#postTokensAt = Date.now();
    this.#state = "open";
    this.#everOpened = true;
    this.#openedAt = Date.now();
    this.#startHeartbeat();
    for (const subscription of this.#subscriptions.values()) this.#sendSubscribe(subscription);
    for (const post of this.#posts.values()) this.#sendPost(post);
    for (const waiter of this.#openWaiters.splice(0)) waiter.resolve();
    this.#emit("open");
    if (reconnected) this.#emit("reconnect", { attempt });
  }

  #sendSubscribe(subscription: Subscription): void {
    if (subscription.frameId) this.#untrack(subscription.frameId);
    const id = this.#frameId();
    subscription.frameId = id;
    const last = subscription.conversationId ? this.#lastSeq.get(subscription.conversationId) : undefined;
    const sinceSeq =
      last !== undefined && subscription.conversationId
        ? Math.max(last - RECOVERY_OVERLAP, subscription.sinceSeq ?? 0, 0)
        : subscription.sinceSeq;
    subscription.hadSeq = last !== undefined ? Math.max(last, sinceSeq ?? 0) : sinceSeq;
    this.#track(id, { kind: "subscribe", topic: subscription.topic });
    this.#sendText(
      JSON.stringify({
        type: "subscribe",
        id,
        topic: subscription.topic,
        ...(sinceSeq !== undefined ? { sinceSeq } : {}),
      }),
    );
  }

  /** Sends a post when the connection's budget allows, else queues it behind the posts already waiting. */
  #sendPost(post: PendingPost): void {
    if (this.#paced.length > 0 || !this.#takePostToken()) {
      this.#paced.push(post);
      this.#pacePosts();
      return;
    }
    this.#track(post.id, { kind: "post", post });
    this.#sendText(post.text);
  }

  /** Takes one frame of the posting budget, refilled as the server refills it; false when it is spent. */
  #takePostToken(): boolean {
    const now = Date.now();
    const { postsPerSecond, postBurst } = REALTIME_LIMITS;
    this.#postTokens = refilled(this.#postTokens, this.#postTokensAt, now, postsPerSecond, postBurst);
    this.#postTokensAt = now;
    if (this.#postTokens < 1) return false;
    this.#postTokens -= 1;
    return true;
  }

  /** Sends the waiting posts as the budget refills, in order. */
  #pacePosts(): void {
    if (this.#postTimer !== undefined) return;
    const wait = Math.ceil(((1 - this.#postTokens) / REALTIME_LIMITS.postsPerSecond) * 1000) + PACE_SLACK_MS;
    this.#postTimer = setTimeout(
      () => {
        this.#postTimer = undefined;
        if (!this.#isOpen()) return;
        const waiting = this.#paced.splice(0);
        for (const post of waiting) if (this.#posts.has(post.id)) this.#sendPost(post);
      },
      Math.max(wait, PACE_SLACK_MS),
    );
  }

  #track(id: string, entry: InFlight): void {
    if (this.#requestTimeoutMs > 0) {
      entry.timer = setTimeout(() => this.#timedOut(id), this.#requestTimeoutMs);
    }
    this.#inFlight.set(id, entry);
  }

  #untrack(id: string): void {
    clearTimeout(this.#inFlight.get(id)?.timer);
    this.#inFlight.delete(id);
  }

  #timedOut(id: string): void {
    const entry = this.#inFlight.get(id);
    if (!entry) return;
    if (entry.kind === "post") {
      // A connection that acks nothing is taken for dead (a ping finds out only later): the post stays pending, and
      // the next connection sends it again with its clientMessageId, so it is posted once and its promise settles.
      const ws = this.#ws;
      if (ws) {
        this.#detach(ws, 4000, "ack timeout");
        this.#disconnected(4000, "ack timeout");
      }
      return;
    }
    this.#inFlight.delete(id);
    const error = new RealtimeError("TIMEOUT", `no ack for frame ${id} in ${this.#requestTimeoutMs} ms`);
    if (entry.kind === "unsubscribe") {
      entry.waiter.reject(error);
    } else {
      const subscription = this.#subscriptions.get(entry.topic);
      if (subscription?.frameId === id) {
        subscription.frameId = undefined;
        for (const waiter of subscription.waiters.splice(0)) waiter.reject(error);
      }
    }
  }

  #sendText(text: string): void {
    try {
      this.#ws?.send(text);
    } catch (error) {
      // The socket is closing: its close event reconnects, and what was in flight is re-sent from its records.
      this.#emit("error", new RealtimeError("SEND", `send failed: ${String(error)}`));
    }
  }

  #received(data: unknown): void {
    clearTimeout(this.#pongTimer);
    this.#pongTimer = undefined;
    if (typeof data !== "string") {
      this.#emit("error", new RealtimeError("BAD_FRAME", "the server sent a binary frame"));
      return;
    }
    let frame: { type?: unknown; id?: unknown; [key: string]: unknown };
    try {
      frame = JSON.parse(data);
    } catch {
      this.#emit("error", new RealtimeError("BAD_FRAME", "the server sent a frame that is not JSON"));
      return;
    }
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "ping":
        this.#sendText(PONG_TEXT);
        return;
      case "pong":
        return;
      case "ack":
        this.#healthy = true;
        if (typeof frame.id === "string") {
          this.#acked(frame.id, frame as { message?: unknown; recovered?: unknown; lastSeq?: unknown });
        }
        return;
      case "error":
        this.#failed(frame as { id?: string; error?: { code?: string; message?: string; details?: [] } });
        return;
      case "event":
        this.#healthy = true;
        this.#deliver(frame.event as ParleyEvent);
        return;
      default:
        return;
    }
  }

  #acked(id: string, frame: { message?: unknown; recovered?: unknown; lastSeq?: unknown }): void {
    const entry = this.#inFlight.get(id);
    if (!entry) return;
    this.#inFlight.delete(id);
    clearTimeout(entry.timer);
    if (entry.kind === "post") {
      this.#posts.delete(id);
      if (frame.message && typeof frame.message === "object") entry.post.resolve(frame.message as Message);
      else entry.post.reject(new RealtimeError("BAD_FRAME", "the post's ack carries no message"));
      return;
    }
    if (entry.kind === "unsubscribe") {
      entry.waiter.resolve();
      return;
    }
    const subscription = this.#subscriptions.get(entry.topic);
    if (!subscription || subscription.frameId !== id) return;
    subscription.frameId = undefined;
    const recovered = typeof frame.recovered === "boolean" ? frame.recovered : undefined;
    for (const waiter of subscription.waiters.splice(0)) waiter.resolve({ topic: entry.topic, recovered });
    const conversationId = subscription.conversationId;
    if (!conversationId || subscription.hadSeq === undefined) return;
    if (recovered === false) {
      this.#emit("gap", { topic: entry.topic, conversationId, afterSeq: subscription.hadSeq });
    } else if (typeof frame.lastSeq === "number" && frame.lastSeq < (this.#lastSeq.get(conversationId) ?? 0)) {
      // Delivered messages past what the room stored were never stored: forget them, so the messages that take
      // their seqs are delivered, and report the gap.
      this.#lastSeq.set(conversationId, frame.lastSeq);
      const recent = this.#recent.get(conversationId);
      for (const seq of recent?.keys() ?? []) if (seq > frame.lastSeq) recent!.delete(seq);
      this.#emit("gap", { topic: entry.topic, conversationId, afterSeq: frame.lastSeq });
    }
  }

  #failed(frame: { id?: string; error?: { code?: string; message?: string; details?: [] } }): void {
    const error = new RealtimeError(
      frame.error?.code ?? "INTERNAL",
      frame.error?.message ?? "the server answered an error",
      frame.error?.details,
    );
    const entry = typeof frame.id === "string" ? this.#inFlight.get(frame.id) : undefined;
    if (!entry || frame.id === undefined) {
      this.#emit("error", error);
      return;
    }
    this.#inFlight.delete(frame.id);
    clearTimeout(entry.timer);
    if (entry.kind === "post" && error.code === "RATE_LIMITED") {
      // Not posted: sent again once the budget allows (its clientMessageId keeps it to one message).
      this.#postTokens = 0;
      this.#paced.unshift(entry.post);
      this.#pacePosts();
    } else if (entry.kind === "post") {
      this.#posts.delete(frame.id);
      entry.post.reject(error);
    } else if (entry.kind === "unsubscribe") {
      entry.waiter.reject(error);
    } else {
      const subscription = this.#subscriptions.get(entry.topic);
      if (!subscription || subscription.frameId !== frame.id) return;
      this.#subscriptions.delete(entry.topic);
      const waiters = subscription.waiters.splice(0);
      for (const waiter of waiters) waiter.reject(error);
      if (waiters.length === 0) this.#emit("error", error);
    }
  }

  #deliver(event: ParleyEvent | undefined): void {
    if (!event || typeof event !== "object" || typeof event.id !== "string") return;
    if (this.#seen.has(event.id)) return;
    const isMessage = event.type === "conversation.message_posted";
    const replaced = isMessage && this.#admitMessage(event.resourceId, event.data as Message | undefined);
    if (replaced === null) return;
    this.#seen.add(event.id);
    if (this.#seen.size > SEEN_EVENT_IDS) this.#seen.delete(this.#seen.values().next().value!);
    this.#emit("event", event);
    if (isMessage) this.#emit("message", event.data as Message, event as ParleyEvent<Message>);
    if (replaced) {
      const afterSeq = (event.data as Message).seq - 1;
      this.#emit("gap", { topic: event.topic, conversationId: event.resourceId, afterSeq });
    }
  }

  /**
   * Whether to deliver a conversation's message: null to drop it (delivered already, or older than the last one),
   * true when it is a different message at a seq delivered before (that one was never stored), false otherwise.
   */
  #admitMessage(conversationId: string, message: Message | undefined): boolean | null {
    if (typeof message?.seq !== "number") return false;
    const { seq, id } = message;
    const last = this.#lastSeq.get(conversationId);
    let recent = this.#recent.get(conversationId);
    const had = recent?.get(seq);
    const replaced = last !== undefined && seq <= last;
    if (replaced && (had === undefined || had === id)) return null;
    if (!recent) this.#recent.set(conversationId, (recent = new Map()));
    recent.delete(seq);
    recent.set(seq, id);
    if (recent.size > RECENT_MESSAGES) recent.delete(recent.keys().next().value!);
    if (!replaced) this.#lastSeq.set(conversationId, seq);
    return replaced;
  }

  #startHeartbeat(): void {
    this.#stopHeartbeat();
    this.#pingTimer = setInterval(() => {
      if (!this.#isOpen()) return;
      this.#sendText(PING_TEXT);
      if (this.#pongTimer === undefined && this.#pongTimeoutMs > 0) {
        this.#pongTimer = setTimeout(() => {
          this.#pongTimer = undefined;
          const ws = this.#ws;
          if (!ws) return;
          this.#detach(ws, 4000, "ping timeout");
          this.#disconnected(4000, "ping timeout");
        }, this.#pongTimeoutMs);
      }
    }, this.#pingIntervalMs);
  }

  #stopHeartbeat(): void {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#pongTimer);
    this.#pingTimer = undefined;
    this.#pongTimer = undefined;
  }

  /** Stops listening to a socket and closes it, without waiting for its close event. */
  #detach(ws: WebSocketLike, code: number, reason: string): void {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try {
      ws.close(code, reason);
    } catch {
      // Already closed.
    }
  }

  #disconnected(code: number, reason: string, delayMs?: number): void {
    if (this.#state === "closed") return;
    const wasOpen = this.#state === "open";
    this.#ws = null;
    this.#stopHeartbeat();
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#postTimer);
    this.#connectTimer = this.#postTimer = undefined;
    // Every unacknowledged post is sent again, in order, by the next connection.
    this.#paced = [];
    for (const [id, entry] of this.#inFlight) {
      clearTimeout(entry.timer);
      if (entry.kind === "unsubscribe") entry.waiter.resolve();
      if (entry.kind === "subscribe") {
        const subscription = this.#subscriptions.get(entry.topic);
        if (subscription?.frameId === id) subscription.frameId = undefined;
      }
    }
    this.#inFlight.clear();
    if (wasOpen && (this.#healthy || Date.now() - this.#openedAt >= STABLE_AFTER_MS)) this.#attempt = 0;
    if (!this.#shouldReconnect(code)) {
      const refusal = code === CLOSE_CODES.unauthorized ? "UNAUTHORIZED" : "FORBIDDEN";
      this.#shutdown(code, reason, new RealtimeError(refusal, `the server closed the connection: ${reason}`));
      return;
    }
    this.#scheduleReconnect({ code, reason }, delayMs);
  }

  #shouldReconnect(code: number): boolean {
    // 4003 (no longer a participant, the conversation deleted) stays so whatever the token; a 4001 (an expired or
    // revoked credential) only a token source can mend, with a fresh token.
    if (code === CLOSE_CODES.forbidden) return false;
    return !(code === CLOSE_CODES.unauthorized && typeof this.#token === "string");
  }

  #scheduleReconnect(info: { code: number; reason: string }, delayMs?: number): void {
    this.#state = "reconnecting";
    const ceiling = Math.min(this.#maxMs, this.#baseMs * 2 ** this.#attempt);
    const delay = delayMs ?? Math.floor(Math.random() * ceiling);
    this.#attempt++;
    this.#emit("close", { ...info, reconnecting: true, delayMs: delay });
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (this.#state === "reconnecting") void this.#open();
    }, delay);
  }

  #emit<K extends keyof RealtimeEventMap>(name: K, ...args: RealtimeEventMap[K]): void {
    const set = this.#listeners.get(name) as Set<(...args: RealtimeEventMap[K]) => void> | undefined;
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (error) {
        reportListenerError(error);
      }
    }
  }
}
