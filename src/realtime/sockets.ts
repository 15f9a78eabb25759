import { errorBody, type ErrorCode } from "../errors";
import { detailsOf } from "../http/validate";
import { isTopicError, parseTopicPattern, segmentsMatch, type TopicPattern } from "../protocol/topics";
import type { ParleyEvent } from "../protocol/events";
import { parseClientJson } from "../lib/json";
import {
  CLOSE_CODES,
  parseClientFrame,
  refilled,
  PING_TEXT,
  PONG_TEXT,
  REALTIME_LIMITS,
  type ClientFrame,
  type ServerFrame,
} from "../protocol/frames";

/** Who holds a socket; checked once before the socket is accepted, kept in its attachment. */
export interface SocketActor {
  orgId: string;
  kind: "apiKey" | "account" | "session";
  accountId?: string;
  conversationId?: string;
  /** When the token behind the socket expires (ms since the epoch); the sweep closes the socket then, with 4001. */
  expiresAt?: number;
  /** The API key behind the socket; the sweep checks it is still live. */
  keyId?: string;
  /** The API key that issued the token behind the socket: its revocation closes the socket (`closeKeys`). */
  issuerKeyId?: string;
}

/** What survives hibernation: the socket attachment (at most 16 KiB). */
interface Attachment {
  actor: SocketActor;
  subs: string[];
  /** Last time the client was heard from (ms), persisted at most every `SEEN_PERSIST_MS`. */
  seen: number;
}

/** A socket's state in memory, rebuilt from its attachment after the object wakes. */
export interface LiveSocket {
  actor: SocketActor;
  subs: Map<string, TopicPattern>;
  seen: number;
  persistedSeen: number;
  tokens: number;
  refilledAt: number;
  /** What is left of the connection's frame budget (negative: a flood's debt), and when it was last refilled. */
  frames: number;
  framesAt: number;
  /**
   * Per conversation, the messages this connection already has: every seq from `from` to `to` (live deliveries and
   * replays). A `sinceSeq` replay skips them, so an event reaches a connection once however its subscriptions overlap.
   * In memory only: after the object hibernates a replay may resend what the connection had (never skip what it lacks).
   */
  received: Map<string, SeqRange>;
}

/** Every seq from `from` to `to`, both included. */
interface SeqRange {
  from: number;
  to: number;
}

/** Header the Worker uses to hand the checked principal to an object with the upgrade request. */
export const ACTOR_HEADER = "x-parley-actor";
const SEEN_PERSIST_MS = 20_000;
/**
 * The least time between two sweeps, however soon a socket's next deadline falls: a silent socket is closed at most
 * this long after its 75 s (measured under `wrangler dev`: 5 s let a socket go 79.5 s).
 */
const SWEEP_GAP_MS = 2_000;
/** The longest a new socket waits for its first sweep. */
const FIRST_SWEEP_MS = 30_000;
/** How often the sweep runs while API keys hold sockets: a revoked key's sockets close within this time. */
const KEY_CHECK_MS = 30_000;
const ATTACHMENT_BYTES = 15 * 1024;
/**
 * How long an object remembers the keys it was told were revoked: an upgrade checked before the revoke may reach the
 * object after it, and is refused then.
 */
const REVOKED_KEYS_MS = 10 * 60_000;
/** How many conversations' received ranges a connection keeps; beyond them a replay may resend (see `received`). */
const RECEIVED_CONVERSATIONS = 256;
/** How many topics' subscriber lists the delivery cache keeps before it starts again. */
const SUBSCRIBER_CACHE_TOPICS = 256;
const utf8 = new TextEncoder();

/**
 * The hibernating sockets of one Durable Object (a room or an org hub): acceptance, per-socket state in the
 * attachment, frame parsing and limits, subscriptions, matching delivery, rate limits and the idle sweep. It never
 * throws into the runtime's socket handlers: failures become error frames or close codes.
 */
export class SocketRegistry {
  private readonly live = new Map<WebSocket, LiveSocket>();
  /**
   * The sockets with a subscription matching a topic, per topic delivered lately: a stream's deltas, or a busy
   * conversation's messages, then visit only their subscribers. Dropped whenever a subscription or socket changes.
   */
  private readonly subscribers = new Map<string, WebSocket[]>();
  /** When the sweep must run next (the earliest ping, close or expiry it found); alarms that come sooner skip it. */
  private sweepAt = 0;
  /** The keys this object was told were revoked lately, and until when it refuses their upgrades. */
  private readonly revokedKeys = new Map<string, number>();

  constructor(private readonly ctx: DurableObjectState) {
    // Client pings are answered by the runtime itself, without waking a hibernated object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_TEXT, PONG_TEXT));
  }

  /** Accepts a new hibernating socket for a checked actor; answers the 101 response. */
  accept(actor: SocketActor, tags: string[] = []): Response {
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server, tags);
    const now = Date.now();
    // A token that expires before the next sweep brings the sweep forward (the object's alarm: `firstSweep`).
    if (actor.expiresAt !== undefined && this.sweepAt > actor.expiresAt) this.sweepAt = actor.expiresAt;
    server.serializeAttachment({ actor, subs: [], seen: now } satisfies Attachment);
    this.live.set(server, {
      actor,
      subs: new Map(),
      seen: now,
      persistedSeen: now,
      tokens: REALTIME_LIMITS.postBurst,
      refilledAt: now,
      frames: REALTIME_LIMITS.frameBurst,
      framesAt: now,
      received: new Map(),
    });
    return new Response(null, { status: 101, webSocket: client });
  }

  /** When the object's alarm must sweep after accepting a socket for `actor`: within 30 s, or at its token's expiry. */
  firstSweep(actor: SocketActor, now = Date.now()): number {
    return Math.min(now + FIRST_SWEEP_MS, actor.expiresAt ?? Number.POSITIVE_INFINITY);
  }

  /** Every accepted socket, with its state. */
  all(): [WebSocket, LiveSocket][] {
    return this.ctx.getWebSockets().map((ws) => [ws, this.state(ws)] as [WebSocket, LiveSocket]);
  }

  /** The number of open sockets. */
  count(): number {
    return this.ctx.getWebSockets().length;
  }

  /** A socket's state, rebuilt from its attachment when the object woke from hibernation. */
  state(ws: WebSocket): LiveSocket {
    let state = this.live.get(ws);
    if (!state) {
      const attachment = ws.deserializeAttachment() as Attachment;
      const subs = new Map<string, TopicPattern>();
      for (const topic of attachment.subs) {
        const pattern = parseTopicPattern(topic, attachment.actor.orgId);
        if (!isTopicError(pattern)) subs.set(topic, pattern);
      }
      state = {
        actor: attachment.actor,
        subs,
        seen: attachment.seen,
        persistedSeen: attachment.seen,
        tokens: REALTIME_LIMITS.postBurst,
        refilledAt: Date.now(),
        frames: REALTIME_LIMITS.frameBurst,
        framesAt: Date.now(),
        received: new Map(),
      };
      this.live.set(ws, state);
    }
    return state;
  }

  /**
   * Parses a client frame. Oversize frames close the socket with 1009; binary, malformed or unknown frames get an
   * error frame and answer null. Any frame counts as a sign of life.
   */
  parse(ws: WebSocket, message: string | ArrayBuffer): ClientFrame | null {
    this.touch(ws);
    const state = this.state(ws);
    const now = Date.now();
    if (expired(state.actor, now)) {
      this.close(ws, CLOSE_CODES.unauthorized, "token expired");
      return null;
    }
    if (!spendFrame(state, now)) {
      if (state.frames < -REALTIME_LIMITS.frameBurst) this.close(ws, CLOSE_CODES.policy, "too many frames");
      else this.error(ws, undefined, "RATE_LIMITED", `at most ${REALTIME_LIMITS.framesPerSecond} frames per second`);
      return null;
    }
    if (overFrameLimit(message)) {
      this.close(ws, CLOSE_CODES.tooLarge, "frame larger than 64 KiB");
      return null;
    }
    if (typeof message !== "string") {
      this.error(ws, undefined, "BAD_REQUEST", "frames are JSON text");
      return null;
    }
    // The usual answer to a server ping, from every silent socket at once: nothing to parse.
    if (message === PONG_TEXT) return { type: "pong" };
    let json: unknown;
    try {
      json = parseClientJson(message);
    } catch {
      this.error(ws, undefined, "BAD_REQUEST", "the frame is not valid JSON");
      return null;
    }
    const result = parseClientFrame(json);
    if (!result.success) {
      const id = typeof (json as { id?: unknown })?.id === "string" ? (json as { id: string }).id : undefined;
      const type = (json as { type?: unknown })?.type;
      const known = ["subscribe", "unsubscribe", "ping", "pong", "message.post", "typing"];
      const message =
        typeof type === "string" && !known.includes(type) ? `unknown frame type '${type}'` : "invalid frame";
      this.error(ws, id, "BAD_REQUEST", message, detailsOf(result.error, "(frame)"));
      return null;
    }
    return result.data;
  }

  /** Answers the frames every socket understands (ping, pong); true when the frame was handled. */
  handleCommon(ws: WebSocket, frame: ClientFrame): boolean {
    if (frame.type === "ping") {
      this.send(ws, { type: "pong", ...(frame.id ? { id: frame.id } : {}) });
      if (frame.id) this.send(ws, { type: "ack", id: frame.id });
      return true;
    }
    if (frame.type === "pong") {
      if (frame.id) this.send(ws, { type: "ack", id: frame.id });
      return true;
    }
    if (frame.type === "unsubscribe") {
      const state = this.state(ws);
      // A topic outside the grammar (or of another org) is an error, as for `subscribe`, not a silent no-op.
      const pattern = parseTopicPattern(frame.topic, state.actor.orgId);
      if (isTopicError(pattern)) {
        this.error(ws, frame.id, pattern.code, pattern.message);
        return true;
      }
      state.subs.delete(frame.topic);
      // What it receives from here on may have gaps: no range stays sure.
      state.received.clear();
      this.subscribers.clear();
      this.persist(ws, state);
      if (frame.id) this.send(ws, { type: "ack", id: frame.id, topic: frame.topic });
      return true;
    }
    return false;
  }

  /**
   * Adds a subscription after checking the topic grammar, the org and the limits. Answers the parsed pattern, or
   * null after sending the error frame.
   */
  subscribe(ws: WebSocket, topic: string, id: string | undefined): TopicPattern | null {
    const state = this.state(ws);
    const pattern = parseTopicPattern(topic, state.actor.orgId);
    if (isTopicError(pattern)) {
      this.error(ws, id, pattern.code, pattern.message);
      return null;
    }
    if (!state.subs.has(topic) && state.subs.size >= REALTIME_LIMITS.subscriptions) {
      this.error(ws, id, "BAD_REQUEST", `at most ${REALTIME_LIMITS.subscriptions} subscriptions per connection`);
      return null;
    }
    state.subs.set(topic, pattern);
    if (!this.persist(ws, state)) {
      state.subs.delete(topic);
      this.error(ws, id, "BAD_REQUEST", "the connection's subscriptions are too large");
      return null;
    }
    this.subscribers.clear();
    return pattern;
  }

  /**
   * Whether a subscription of the socket other than `added` (the topic of a subscribe frame) matches `topic`: its
   * events reached the socket already, and a stream's snapshot is not sent again.
   */
  matchedElsewhere(ws: WebSocket, added: string, topic: string): boolean {
    const parts = topic.split(".");
    for (const [key, pattern] of this.state(ws).subs) if (key !== added && segmentsMatch(pattern, parts)) return true;
    return false;
  }

  /**
   * Acks a `subscribe` frame that has an id; `recovered` only for subscriptions made with `sinceSeq`, and with it the
   * conversation's `lastSeq` when the room knows it.
   */
  ackSubscribe(ws: WebSocket, frame: { id?: string; topic: string }, recovered?: boolean, lastSeq?: number): void {
    if (!frame.id) return;
    this.send(ws, {
      type: "ack",
      id: frame.id,
      topic: frame.topic,
      ...(recovered === undefined ? {} : { recovered }),
      ...(lastSeq === undefined ? {} : { lastSeq }),
    });
  }

  /**
   * Sends an event to every socket with a matching subscription that `visible` admits, once per socket however
   * many subscriptions match; a socket whose token expired gets nothing more and is closed with 4001. Answers the
   * number of sockets it was sent to.
   */
  deliver(event: ParleyEvent, visible: (actor: SocketActor, ws: WebSocket) => boolean): number {
    let text: string | undefined;
    let sent = 0;
    const now = Date.now();
    const seq = event.type === "conversation.message_posted" ? (event.data as { seq: number }).seq : undefined;
    let lapsed: WebSocket[] | undefined;
    for (const ws of this.subscribersOf(event.topic)) {
      const state = this.state(ws);
      if (expired(state.actor, now)) {
        (lapsed ??= []).push(ws);
        continue;
      }
      if (!visible(state.actor, ws)) continue;
      text ??= JSON.stringify({ type: "event", topic: event.topic, event } satisfies ServerFrame);
      if (!this.sendText(ws, text)) continue;
      sent++;
      if (seq !== undefined) noteReceived(state, event.resourceId, seq, seq);
    }
    for (const ws of lapsed ?? []) this.close(ws, CLOSE_CODES.unauthorized, "token expired");
    return sent;
  }

  /** The sockets with a subscription matching `topic`, from the cache when it has them. */
  private subscribersOf(topic: string): WebSocket[] {
    let found = this.subscribers.get(topic);
    if (found) return found;
    const parts = topic.split(".");
    found = this.ctx.getWebSockets().filter((ws) => {
      const state = this.state(ws);
      return state.subs.size > 0 && matchesAny(state, parts);
    });
    if (this.subscribers.size >= SUBSCRIBER_CACHE_TOPICS) this.subscribers.clear();
    this.subscribers.set(topic, found);
    return found;
  }

  /** Takes one token of the socket's posting budget; sends `RATE_LIMITED` and answers false when it is spent. */
  take(ws: WebSocket, id: string | undefined): boolean {
    const state = this.state(ws);
    const now = Date.now();
    const { postsPerSecond, postBurst } = REALTIME_LIMITS;
    state.tokens = refilled(state.tokens, state.refilledAt, now, postsPerSecond, postBurst);
    state.refilledAt = now;
    if (state.tokens < 1) {
      this.error(ws, id, "RATE_LIMITED", `at most ${REALTIME_LIMITS.postsPerSecond} posts per second per connection`);
      return false;
    }
    state.tokens -= 1;
    return true;
  }

  /** Sends a frame; false when the socket is gone. */
  send(ws: WebSocket, frame: ServerFrame): boolean {
    return this.sendText(ws, JSON.stringify(frame));
  }

  /** Sends an error frame; the socket stays open. */
  error(
    ws: WebSocket,
    id: string | undefined,
    code: ErrorCode,
    message: string,
    details?: { path: string; message: string }[],
  ): void {
    this.send(ws, {
      type: "error",
      ...(id ? { id } : {}),
      error: { code, message, ...(details?.length ? { details } : {}) },
    });
  }

  /**
   * Whether the connection already has a message of a conversation (see `LiveSocket.received`), as of this call: a
   * replay asks it of each message before it sends it.
   */
  hadAlready(ws: WebSocket, conversationId: string): (seq: number) => boolean {
    const range = this.state(ws).received.get(conversationId);
    if (!range) return () => false;
    const { from, to } = range;
    return (seq) => seq >= from && seq <= to;
  }

  /** Records that a replay gave the connection every message of a conversation from `from` to `to`. */
  replayed(ws: WebSocket, conversationId: string, from: number, to: number): void {
    if (to >= from) noteReceived(this.state(ws), conversationId, from, to);
  }

  /** How many sockets have a subscription matching `topic`. */
  subscriberCount(topic: string): number {
    return this.subscribersOf(topic).length;
  }

  /** Closes every socket with a subscription matching `topic`. */
  closeSubscribers(topic: string, code: number, reason: string): void {
    for (const ws of [...this.subscribersOf(topic)]) this.close(ws, code, reason);
  }

  /** Closes a socket with a code and reason, forgetting its state. */
  close(ws: WebSocket, code: number, reason: string): void {
    this.forget(ws);
    try {
      ws.close(code, reason);
    } catch {
      // already closed
    }
  }

  /** Forgets a socket the client closed, answering its close frame. */
  closed(ws: WebSocket, code: number, reason: string): void {
    this.forget(ws);
    try {
      ws.close(code === 1005 || code === 1006 ? CLOSE_CODES.normal : code, reason);
    } catch {
      // the runtime already answered the close
    }
  }

  /**
   * The keep-alive sweep: a socket whose token expired is closed with 4001; one silent (no frame, no auto-answered
   * ping) for more than 75 s is closed; one silent for 60 s is sent a ping. Answers when it must run next (the
   * earliest of the sockets' next ping, close or expiry, at least 2 s ahead, and within 30 s while API keys hold
   * sockets: `revoked` answers which of their keys are no longer live, and their sockets are closed with 4001), or
   * null when no socket remains. An earlier call (another alarm of the object) does nothing and answers the same time.
   */
  async sweep(revoked: (keyIds: string[]) => Promise<Set<string>>, now = Date.now()): Promise<number | null> {
    if (now < this.sweepAt) return this.count() > 0 ? this.sweepAt : null;
    let next = Number.POSITIVE_INFINITY;
    const keys = new Set<string>();
    for (const ws of this.ctx.getWebSockets()) {
      const state = this.state(ws);
      const autoPing = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
      const heard = Math.max(state.seen, autoPing);
      if (expired(state.actor, now)) {
        this.close(ws, CLOSE_CODES.unauthorized, "token expired");
        continue;
      }
      if (now - heard > REALTIME_LIMITS.idleCloseMs) {
        this.close(ws, CLOSE_CODES.goingAway, "idle: no ping for 75 s");
        continue;
      }
      if (now - heard >= REALTIME_LIMITS.pingAfterMs) {
        this.sendText(ws, PING_TEXT);
        next = Math.min(next, heard + REALTIME_LIMITS.idleCloseMs + 1);
      } else {
        next = Math.min(next, heard + REALTIME_LIMITS.pingAfterMs);
      }
      if (state.actor.expiresAt !== undefined) next = Math.min(next, state.actor.expiresAt);
      if (state.actor.keyId !== undefined) {
        keys.add(state.actor.keyId);
        next = Math.min(next, now + KEY_CHECK_MS);
      }
    }
    this.sweepAt = Number.isFinite(next) ? Math.max(next, now + SWEEP_GAP_MS) : 0;
    if (keys.size > 0) await this.closeRevokedKeys([...keys], revoked);
    return Number.isFinite(next) ? this.sweepAt : null;
  }

  /** Closes the sockets of the keys `revoked` answers are no longer live; a failed check waits for the next sweep. */
  private async closeRevokedKeys(keys: string[], revoked: (keyIds: string[]) => Promise<Set<string>>): Promise<void> {
    let gone: Set<string>;
    try {
      gone = await revoked(keys);
    } catch (error) {
      console.error("checking the sockets' API keys failed", String(error));
      return;
    }
    this.closeKeys(gone);
  }

  /**
   * Closes the sockets accepted with a tag (`acc:<id>`, `conv:<id>`), those of them `which` picks if given: an account
   * removed or deleted, a conversation deleted.
   */
  closeTagged(tag: string, code: number, reason: string, which?: (actor: SocketActor) => boolean): void {
    for (const ws of this.ctx.getWebSockets(tag)) {
      if (!which || which(this.state(ws).actor)) this.close(ws, code, reason);
    }
  }

  /**
   * Whether an upgrade comes with a key (its own, or its token's issuer) this object was told was revoked: it was
   * checked before the revoke and reached the object after it.
   */
  revokedKey(actor: SocketActor, now = Date.now()): boolean {
    for (const [keyId, until] of this.revokedKeys) if (until <= now) this.revokedKeys.delete(keyId);
    const key = keyOf(actor);
    return key !== undefined && this.revokedKeys.has(key);
  }

  /**
   * Closes the sockets opened with any of these (revoked) API keys, or with tokens they issued, with 4001, and refuses
   * their upgrades that still come (`revokedKey`).
   */
  closeKeys(keyIds: Set<string>): void {
    if (keyIds.size === 0) return;
    for (const keyId of keyIds) this.revokedKeys.set(keyId, Date.now() + REVOKED_KEYS_MS);
    for (const ws of this.ctx.getWebSockets()) {
      const key = keyOf(this.state(ws).actor);
      if (key !== undefined && keyIds.has(key)) this.close(ws, CLOSE_CODES.unauthorized, "API key revoked");
    }
  }

  private touch(ws: WebSocket): void {
    const state = this.state(ws);
    state.seen = Date.now();
    // Only `seen` changed: the size was checked when the subscriptions last changed.
    if (state.seen - state.persistedSeen > SEEN_PERSIST_MS) this.persist(ws, state, false);
  }

  /** Stores a socket's state in its attachment; `checkSize`: answers false, storing nothing, when it is too large. */
  private persist(ws: WebSocket, state: LiveSocket, checkSize = true): boolean {
    const attachment: Attachment = { actor: state.actor, subs: [...state.subs.keys()], seen: state.seen };
    if (checkSize && utf8.encode(JSON.stringify(attachment)).byteLength > ATTACHMENT_BYTES) return false;
    try {
      ws.serializeAttachment(attachment);
      state.persistedSeen = state.seen;
    } catch (error) {
      console.error("could not store socket attachment", String(error));
      return false;
    }
    return true;
  }

  private sendText(ws: WebSocket, text: string): boolean {
    try {
      ws.send(text);
      return true;
    } catch {
      this.forget(ws);
      return false;
    }
  }

  private forget(ws: WebSocket): void {
    this.live.delete(ws);
    this.subscribers.clear();
  }
}

/**
 * Adds `from`..`to` to what a connection has of a conversation, when it joins the range known (a live delivery
 * follows it; a replay reaches back from it); a disjoint range replaces it.
 */
function noteReceived(state: LiveSocket, conversationId: string, from: number, to: number): void {
  const range = state.received.get(conversationId);
  if (!range) {
    if (state.received.size < RECEIVED_CONVERSATIONS) state.received.set(conversationId, { from, to });
  } else if (from <= range.to + 1 && to >= range.from - 1) {
    range.from = Math.min(range.from, from);
    range.to = Math.max(range.to, to);
  } else {
    state.received.set(conversationId, { from, to });
  }
}

/** Takes one frame from the connection's budget; false when it is spent (the debt grows while the flood lasts). */
function spendFrame(state: LiveSocket, now: number): boolean {
  const { framesPerSecond, frameBurst } = REALTIME_LIMITS;
  state.frames = refilled(state.frames, state.framesAt, now, framesPerSecond, frameBurst) - 1;
  state.framesAt = now;
  return state.frames >= 0;
}

/** The API key behind a socket: its own, or the one that issued its token. */
function keyOf(actor: SocketActor): string | undefined {
  return actor.keyId ?? actor.issuerKeyId;
}

/** Whether the token behind a socket has expired (API keys do not expire). */
function expired(actor: SocketActor, now: number): boolean {
  return actor.expiresAt !== undefined && now >= actor.expiresAt;
}

function matchesAny(state: LiveSocket, parts: string[]): boolean {
  for (const pattern of state.subs.values()) if (segmentsMatch(pattern, parts)) return true;
  return false;
}

/** An upgrade refused by an object, in the contract's error shape. */
export function refuseUpgrade(request: Request, status: 400 | 401 | 403, code: ErrorCode, message: string): Response {
  return Response.json(errorBody({ code, message }, request.headers.get("x-request-id") ?? "unknown"), { status });
}

/** The actor the Worker attached to an upgrade request, or the 400 that refuses a request that is not one. */
export function upgradeActor(request: Request): SocketActor | Response {
  let actor: SocketActor | null = null;
  try {
    actor = JSON.parse(request.headers.get(ACTOR_HEADER) ?? "null") as SocketActor | null;
  } catch {
    actor = null;
  }
  const valid = actor && typeof actor.orgId === "string" && typeof actor.kind === "string";
  if (!valid || request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return refuseUpgrade(request, 400, "BAD_REQUEST", "expected a WebSocket upgrade from the worker");
  }
  return actor!;
}

/**
 * Whether a frame is larger than the frame limit in bytes. A text frame short enough that even three bytes per UTF-16
 * unit stay within the limit is not encoded to count them.
 */
function overFrameLimit(message: string | ArrayBuffer): boolean {
  const limit = REALTIME_LIMITS.frameBytes;
  if (typeof message !== "string") return message.byteLength > limit;
  return message.length * 3 > limit && utf8.encode(message).byteLength > limit;
}
