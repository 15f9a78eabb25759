import { DurableObject } from "cloudflare:workers";
import { revokedKeyIds } from "../auth/api-keys";
import { AlarmSchedule } from "../lib/alarm";
import { chunks, createDb, D1_MAX_IDS } from "../db/client";
import type { Bindings } from "../env";
import {
  matchesStreams,
  recoverableConversation,
  streamConversation,
  topicMatches,
  type TopicPattern,
} from "../protocol/topics";
import type { ParleyEvent } from "../protocol/events";
import type { MessageStream } from "../protocol/flows";
import { CLOSE_CODES, type SubscribeFrame } from "../protocol/frames";
import type { Participant, Room } from "../protocol/rooms";
import { refuseUpgrade, SocketRegistry, upgradeActor, type SocketActor } from "../realtime/sockets";
import { roomIdOfConversation, roomStub } from "../room/client";

const RECENT_EVENTS = 2_000;
const MEMBERSHIP_LOG_MS = 60_000;
/** How many rooms the hub remembers having told that nobody listens; past it, rooms are told nothing and publish. */
const QUIET_ROOMS_MAX = 1_000;
/** Storage key prefix of those rooms (kept in storage: a hub evicted meanwhile must still tell them). */
const QUIET_PREFIX = "quiet:";
/** Storage key of the epoch: how many times the hub has told quiet rooms that a socket arrived. */
const EPOCH_KEY = "epoch";

/** How many streams in flight the hub keeps track of, and after how long without a delta one is taken as ended. */
const LIVE_STREAMS_MAX = 1_000;
const LIVE_STREAM_STALE_MS = 120_000;

/**
 * A socket's `message_stream` events held while the text so far of their conversations is fetched for it (by
 * conversation, with how many fetches wait), and per stream the index of the snapshot it got: deltas up to it are in
 * the snapshot and are not sent again.
 */
interface StreamHold {
  held: Map<string, { waiting: number; events: ParleyEvent[] }>;
  floors: Map<string, number>;
}

interface MembershipChange {
  accountId: string;
  roomId: string;
  member: boolean;
  at: number;
}

/**
 * The org hub behind `/v1/realtime`: one object per org holding the org-wide sockets and their subscriptions. Every
 * event of the org reaches it (rooms publish from their outboxes); it matches each event against each socket's
 * subscriptions and checks, per event, that the socket's principal may see it: an account sees only the rooms it
 * takes part in and its own notifications, whatever wildcard it subscribed with.
 */
export class Hub extends DurableObject<Bindings> {
  private readonly sockets: SocketRegistry;
  private readonly alarms: AlarmSchedule;
  /** The rooms of each account holding a socket, loaded from D1 on first need and kept current by room events. */
  private readonly memberships = new Map<string, Set<string>>();
  /** Recent membership changes, replayed onto a fresh load so a change racing the load is never lost. */
  private membershipLog: MembershipChange[] = [];
  /** Ids of recently delivered events: a room that republishes after a failure causes no duplicates. */
  private readonly recent = new Set<string>();
  /** Per socket and conversation: events buffered while a `sinceSeq` replay is fetched, then the last seq sent. */
  private readonly recovering = new Map<WebSocket, Map<string, ParleyEvent[]>>();
  private readonly floors = new Map<WebSocket, Map<string, number>>();
  /** The streams in flight the hub has seen, by stream id (their latest event), oldest delta first. */
  private readonly liveStreams = new Map<string, ParleyEvent<MessageStream>>();
  private readonly streamHolds = new Map<WebSocket, StreamHold>();
  /** The rooms told that no socket listens here, and the epoch; loaded from storage on first need. */
  private quiet: { rooms: Set<string>; epoch: number } | null = null;

  constructor(ctx: DurableObjectState, env: Bindings) {
    super(ctx, env);
    this.sockets = new SocketRegistry(ctx);
    this.alarms = new AlarmSchedule(ctx.storage);
  }

  /** Accepts an org socket; the Worker authenticated it before it forwarded the upgrade. */
  override async fetch(request: Request): Promise<Response> {
    const actor = upgradeActor(request);
    if (actor instanceof Response) return actor;
    if (this.sockets.revokedKey(actor)) return refuseUpgrade(request, 401, "UNAUTHORIZED", "API key revoked");
    if (actor.accountId) await this.loadMemberships(actor.orgId, [actor.accountId]);
    const tags = [
      ...(actor.accountId ? [`acc:${actor.accountId}`] : []),
      ...(actor.conversationId ? [`conv:${actor.conversationId}`] : []),
    ];
    const response = this.sockets.accept(actor, tags);
    await this.alarms.noLaterThan(this.sockets.firstSweep(actor));
    // After the accept (so a publish meanwhile is delivered, not answered quiet), before the socket can subscribe.
    await this.wakeQuietRooms();
    return response;
  }

  /**
   * Delivers a room's events (or any org event, with `roomId` null) to the sockets that subscribed and may see
   * them, in the order given. While no socket is open here, a room's call is answered with the hub's `quietEpoch`
   * (the room is remembered, to be told when a socket arrives): the room may then skip its ephemeral events (typing,
   * stream deltas) and its messages until it hears from `hubListening`. Its other events (rooms, participants,
   * conversations) still come, and are still taken: the hub's view of memberships follows them.
   */
  async publish(roomId: string | null, events: ParleyEvent[], ephemeral = false): Promise<{ quietEpoch?: number }> {
    const listening = this.sockets.count() > 0;
    const quietEpoch = roomId && !listening ? await this.markQuiet(roomId) : undefined;
    if (listening || !ephemeral) await this.deliver(roomId, events);
    return quietEpoch === undefined ? {} : { quietEpoch };
  }

  /** Remembers a room told that nobody listens; answers the epoch it was told, or nothing when too many were. */
  private async markQuiet(roomId: string): Promise<number | undefined> {
    const quiet = await this.quietRooms();
    if (quiet.rooms.has(roomId)) return quiet.epoch;
    if (quiet.rooms.size >= QUIET_ROOMS_MAX) return undefined;
    quiet.rooms.add(roomId);
    await this.ctx.storage.put(`${QUIET_PREFIX}${roomId}`, quiet.epoch);
    return quiet.epoch;
  }

  private async deliver(roomId: string | null, events: ParleyEvent[]): Promise<void> {
    const unloaded = this.unloadedAccounts();
    if (unloaded) await this.loadMemberships(unloaded.orgId, unloaded.accountIds);
    for (const event of events) {
      if (this.recent.has(event.id)) continue;
      this.remember(event.id);
      const eventRoom = roomId ?? roomOf(event);
      if (event.type === "conversation.message_stream") this.trackStream(event as ParleyEvent<MessageStream>);
      this.applyMembership(event, true);
      this.sockets.deliver(event, (actor, ws) => this.visible(actor, event, eventRoom) && this.inOrder(ws, event));
      this.applyMembership(event, false);
      if (event.type === "room.participant_removed") this.closeSessions(event);
      if (event.type === "conversation.deleted") {
        // A session's one conversation is gone (its room sockets close the same way).
        this.sockets.closeTagged(`conv:${event.resourceId}`, CLOSE_CODES.forbidden, "the conversation was deleted");
      }
    }
  }

  private async quietRooms(): Promise<{ rooms: Set<string>; epoch: number }> {
    if (!this.quiet) {
      const stored = await this.ctx.storage.list({ prefix: QUIET_PREFIX });
      const epoch = (await this.ctx.storage.get<number>(EPOCH_KEY)) ?? 0;
      this.quiet = { rooms: new Set([...stored.keys()].map((key) => key.slice(QUIET_PREFIX.length))), epoch };
    }
    return this.quiet;
  }

  /**
   * A socket arrived: the rooms told that nobody listened hear of it (with the next epoch) before the socket can
   * subscribe, so it misses none of their ephemeral events. A room that cannot be reached publishes again anyway
   * once its quiet lapses (`HUB_QUIET_MS`).
   */
  private async wakeQuietRooms(): Promise<void> {
    const quiet = await this.quietRooms();
    if (quiet.rooms.size === 0) return;
    const rooms = [...quiet.rooms];
    quiet.rooms.clear();
    quiet.epoch++;
    await this.ctx.storage.put(EPOCH_KEY, quiet.epoch);
    for (const keys of chunks(rooms, 128)) await this.ctx.storage.delete(keys.map((id) => `${QUIET_PREFIX}${id}`));
    const told = await Promise.allSettled(rooms.map((id) => roomStub(this.env, id).hubListening(quiet.epoch)));
    for (const result of told) {
      if (result.status === "fulfilled") for (const event of result.value) this.trackStream(event);
    }
    const failed = told.filter((result) => result.status === "rejected").length;
    if (failed > 0) console.error("telling quiet rooms that a hub socket arrived failed", failed, "of", rooms.length);
  }

  /**
   * An API key of the org was revoked: its sockets here close at once (4001). The sweep, every 30 s, is the backstop,
   * and the only check of room sockets, which no one object knows.
   */
  async keyRevoked(keyId: string): Promise<void> {
    this.sockets.closeKeys(new Set([keyId]));
  }

  /** An account of the org was deleted: the sockets of its tokens here close at once (4001). */
  async accountDeleted(accountId: string): Promise<void> {
    this.sockets.closeTagged(`acc:${accountId}`, CLOSE_CODES.unauthorized, "the account was deleted");
  }

  /** Sweeps idle sockets; runs while any socket is open. */
  override async alarm(): Promise<void> {
    this.alarms.fired();
    const sweepAt = await this.sockets.sweep((keys) => revokedKeyIds(createDb(this.env.DB), keys));
    if (sweepAt !== null) await this.alarms.noLaterThan(sweepAt);
  }

  /** Handles one client frame; never throws: failures become error frames. */
  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    try {
      const frame = this.sockets.parse(ws, message);
      if (!frame || this.sockets.handleCommon(ws, frame)) return;
      if (frame.type === "subscribe") {
        await this.subscribe(ws, frame);
      } else {
        this.sockets.error(ws, frame.id, "BAD_REQUEST", `'${frame.type}' is only accepted on a room socket`);
      }
    } catch (error) {
      console.error("hub socket frame failed", String(error));
      this.sockets.error(ws, undefined, "INTERNAL", "internal error");
    }
  }

  /** Answers a client's close frame and forgets the socket. */
  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.forget(ws);
    this.sockets.closed(ws, code, reason);
  }

  /** Forgets a socket that failed. */
  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    console.error("hub socket error", String(error));
    this.forget(ws);
    this.sockets.closed(ws, CLOSE_CODES.internal, "socket error");
  }

  /**
   * `subscribe`; with `sinceSeq` on one conversation's `message_posted` topic, replays from the conversation's room,
   * holding back live events of that conversation until the replay is sent, then drops anything already sent.
   */
  private async subscribe(ws: WebSocket, frame: SubscribeFrame): Promise<void> {
    const subscribed = this.sockets.state(ws).subs.has(frame.topic);
    const pattern = this.sockets.subscribe(ws, frame.topic, frame.id);
    if (!pattern) return;
    if (frame.sinceSeq === undefined) {
      this.sockets.ackSubscribe(ws, frame);
      return this.sendSnapshots(ws, frame.topic, pattern, subscribed);
    }
    const conversationId = recoverableConversation(pattern);
    const roomId = conversationId ? roomIdOfConversation(conversationId) : null;
    if (!conversationId || !roomId) return this.sockets.ackSubscribe(ws, frame, false);
    // What another subscription of this connection already delivered is not sent again; what arrives meanwhile is held.
    const had = this.sockets.hadAlready(ws, conversationId);
    const buffers = this.recovering.get(ws) ?? new Map<string, ParleyEvent[]>();
    this.recovering.set(ws, buffers);
    buffers.set(conversationId, []);
    let replayed: ParleyEvent[] | null = null;
    let lastSeq: number | undefined;
    try {
      const result = await roomStub(this.env, roomId).replayMessages(
        this.sockets.state(ws).actor,
        conversationId,
        frame.sinceSeq,
      );
      replayed = result.ok && result.value ? result.value.events : null;
      lastSeq = result.ok ? result.value?.lastSeq : undefined;
    } catch (error) {
      console.error("replay from room failed", String(error));
    }
    const buffered = buffers.get(conversationId) ?? [];
    buffers.delete(conversationId);
    this.sockets.ackSubscribe(ws, frame, replayed !== null, lastSeq);
    let last = frame.sinceSeq;
    for (const event of replayed ?? []) {
      const seq = seqOf(event);
      if (seq <= last) continue;
      if (!had(seq)) this.sockets.send(ws, { type: "event", topic: event.topic, event });
      last = seq;
    }
    for (const event of buffered) {
      const seq = seqOf(event);
      if (replayed !== null && seq <= last) continue;
      this.sockets.send(ws, { type: "event", topic: event.topic, event });
      last = Math.max(last, seq);
    }
    // A socket that closed during the replay was forgotten: nothing is kept for it.
    if (replayed !== null && ws.readyState === WebSocket.OPEN) {
      const floors = this.floors.get(ws) ?? new Map<string, number>();
      this.floors.set(ws, floors);
      floors.set(conversationId, last);
      this.sockets.replayed(ws, conversationId, frame.sinceSeq + 1, last);
    }
  }

  /**
   * A subscription that can match `message_stream` events, made while replies stream, gets their text so far from
   * their rooms first: the streams of the conversation it names (the room is asked even if the hub saw none), or for a
   * wildcard those in flight the hub has seen that it matches and its principal may see. Until the snapshots are
   * sent, the socket's events of those conversations' streams are held; then those the snapshots include are dropped.
   * Not for streams the socket had through another subscription.
   */
  private async sendSnapshots(ws: WebSocket, topic: string, pattern: TopicPattern, had: boolean): Promise<void> {
    if (had || !matchesStreams(pattern)) return;
    const { actor } = this.sockets.state(ws);
    const named = streamConversation(pattern);
    const conversationIds = named ? [named] : this.liveConversations(actor, pattern);
    if (conversationIds.length === 0) return;
    const hold = this.holdStreams(ws, conversationIds);
    try {
      const byRoom = new Map<string | null, string[]>();
      for (const id of conversationIds) {
        const roomId = roomIdOfConversation(id);
        byRoom.set(roomId, [...(byRoom.get(roomId) ?? []), id]);
      }
      const snapshots = await Promise.all([...byRoom].map(([roomId, ids]) => this.snapshotsOf(actor, roomId, ids)));
      for (const event of snapshots.flat()) {
        if (!topicMatches(pattern, event.topic) || this.sockets.matchedElsewhere(ws, topic, event.topic)) continue;
        hold.floors.set(event.data.streamId, event.data.index);
        this.sockets.send(ws, { type: "event", topic: event.topic, event });
      }
    } finally {
      this.releaseStreams(ws, hold, conversationIds);
    }
  }

  /** The streams in flight of a room's conversations, from the room (none when it cannot say). */
  private async snapshotsOf(
    actor: SocketActor,
    roomId: string | null,
    conversationIds: string[],
  ): Promise<ParleyEvent<MessageStream>[]> {
    if (!roomId) return [];
    try {
      const result = await roomStub(this.env, roomId).streamSnapshots(actor, conversationIds);
      return result.ok ? result.value : [];
    } catch (error) {
      console.error("stream snapshots from room failed", String(error));
      return [];
    }
  }

  /** The conversations with streams in flight that a pattern matches and a principal may see. */
  private liveConversations(actor: SocketActor, pattern: TopicPattern): string[] {
    const since = Date.now() - LIVE_STREAM_STALE_MS;
    const found = new Set<string>();
    for (const event of this.liveStreams.values()) {
      if (Date.parse(event.occurredAt) < since || found.has(event.resourceId)) continue;
      if (topicMatches(pattern, event.topic) && this.visible(actor, event, roomOf(event))) found.add(event.resourceId);
    }
    return [...found];
  }

  /** Notes a stream's latest event (a delta, a snapshot), or forgets the stream when it is done. */
  private trackStream(event: ParleyEvent<MessageStream>): void {
    this.liveStreams.delete(event.data.streamId);
    if (event.data.done) return;
    // Without its text (a snapshot's can be 32 KiB): what finds and checks the stream is kept.
    const { text: _text, ...data } = event.data;
    this.liveStreams.set(event.data.streamId, { ...event, data: { ...data, delta: "" } });
    if (this.liveStreams.size > LIVE_STREAMS_MAX) this.liveStreams.delete(this.liveStreams.keys().next().value!);
  }

  /** Starts holding a socket's stream events of these conversations. */
  private holdStreams(ws: WebSocket, conversationIds: string[]): StreamHold {
    let hold = this.streamHolds.get(ws);
    if (!hold) this.streamHolds.set(ws, (hold = { held: new Map(), floors: new Map() }));
    for (const id of conversationIds) {
      const held = hold.held.get(id) ?? { waiting: 0, events: [] };
      held.waiting++;
      hold.held.set(id, held);
    }
    return hold;
  }

  /** Ends a fetch's hold: the events held (when no other fetch waits) go out, less those its snapshots included. */
  private releaseStreams(ws: WebSocket, hold: StreamHold, conversationIds: string[]): void {
    if (this.streamHolds.get(ws) !== hold) return; // the socket closed meanwhile
    for (const id of conversationIds) {
      const held = hold.held.get(id)!;
      if (--held.waiting > 0) continue;
      hold.held.delete(id);
      for (const event of held.events) {
        if (afterSnapshot(hold, event)) this.sockets.send(ws, { type: "event", topic: event.topic, event });
      }
    }
    if (hold.held.size === 0 && hold.floors.size === 0) this.streamHolds.delete(ws);
  }

  /** Whether a principal may see an event: the contract's rule, applied to every event whatever the wildcard. */
  private visible(actor: SocketActor, event: ParleyEvent, roomId: string | null): boolean {
    if (actor.kind === "apiKey") return true;
    // Flow runs are the operators' (as `GET /v1/flow-runs`, API keys only): their errors carry the provider's words.
    if (event.source === "flows") return false;
    if (event.source === "notifications") return actor.kind === "account" && event.resourceId === actor.accountId;
    // A session sees its one conversation, and only while its account takes part in the conversation's room.
    if (
      actor.kind === "session" &&
      event.resourceId !== actor.conversationId &&
      conversationOf(event) !== actor.conversationId
    ) {
      return false;
    }
    return roomId !== null && (this.memberships.get(actor.accountId!)?.has(roomId) ?? false);
  }

  /** For a socket recovering or recovered on a conversation: buffers, or drops what it already has. */
  private inOrder(ws: WebSocket, event: ParleyEvent): boolean {
    if (event.type === "conversation.message_stream") return this.streamInOrder(ws, event);
    if (event.type !== "conversation.message_posted") return true;
    const buffer = this.recovering.get(ws)?.get(event.resourceId);
    if (buffer) {
      buffer.push(event);
      return false;
    }
    const floors = this.floors.get(ws);
    const floor = floors?.get(event.resourceId);
    if (floor === undefined) return true;
    const seq = seqOf(event);
    if (seq <= floor) return false;
    floors!.set(event.resourceId, seq);
    return true;
  }

  /**
   * Keeps memberships current from room events: additions apply before the event is delivered (the new member
   * sees it), removals after (the removed member sees its own removal).
   */
  private applyMembership(event: ParleyEvent, before: boolean): void {
    const changes: MembershipChange[] = [];
    const at = Date.now();
    if (before && event.type === "room.created") {
      for (const p of (event.data as Room).participants)
        changes.push({ accountId: p.accountId, roomId: event.resourceId, member: true, at });
    } else if (before && event.type === "room.participant_added") {
      changes.push({ accountId: (event.data as Participant).accountId, roomId: event.resourceId, member: true, at });
    } else if (!before && event.type === "room.participant_removed") {
      changes.push({ accountId: (event.data as Participant).accountId, roomId: event.resourceId, member: false, at });
    }
    if (changes.length === 0) return;
    this.membershipLog = this.membershipLog.filter((c) => at - c.at < MEMBERSHIP_LOG_MS).concat(changes);
    for (const change of changes) applyChange(this.memberships.get(change.accountId), change);
  }

  /** Closes the sessions of a participant removed from a room: they were for its conversations only (4003, as there). */
  private closeSessions(event: ParleyEvent): void {
    const { accountId } = event.data as Participant;
    this.sockets.closeTagged(
      `acc:${accountId}`,
      CLOSE_CODES.forbidden,
      "no longer a participant of this room",
      (actor) => actor.kind === "session" && roomIdOfConversation(actor.conversationId!) === event.resourceId,
    );
  }

  /** Accounts (and sessions' accounts) holding sockets whose rooms are not loaded (a new socket, or after hibernation). */
  private unloadedAccounts(): { orgId: string; accountIds: string[] } | null {
    const ids = new Set<string>();
    let orgId = "";
    for (const [, state] of this.sockets.all()) {
      if (state.actor.accountId && !this.memberships.has(state.actor.accountId)) {
        ids.add(state.actor.accountId);
        orgId = state.actor.orgId;
      }
    }
    return ids.size > 0 ? { orgId, accountIds: [...ids] } : null;
  }

  /** Loads accounts' rooms from D1, holding other events back meanwhile, then replays recent changes onto them. */
  private async loadMemberships(orgId: string, accountIds: string[]): Promise<void> {
    const missing = accountIds.filter((id) => !this.memberships.has(id));
    if (missing.length === 0) return;
    await this.ctx.blockConcurrencyWhile(async () => {
      for (const slice of chunks(missing, D1_MAX_IDS)) {
        const rows = await this.env.DB.prepare(
          `SELECT account_id, room_id FROM participants WHERE org_id = ? AND account_id IN (${slice.map(() => "?").join(",")})`,
        )
          .bind(orgId, ...slice)
          .all<{ account_id: string; room_id: string }>();
        for (const id of slice) this.memberships.set(id, new Set());
        for (const row of rows.results) this.memberships.get(row.account_id)!.add(row.room_id);
      }
      for (const change of this.membershipLog) {
        if (missing.includes(change.accountId)) applyChange(this.memberships.get(change.accountId), change);
      }
    });
  }

  /** For a socket whose stream snapshots are being fetched or were sent: holds, or drops what a snapshot included. */
  private streamInOrder(ws: WebSocket, event: ParleyEvent): boolean {
    const hold = this.streamHolds.get(ws);
    if (!hold) return true;
    const held = hold.held.get(event.resourceId);
    if (held) {
      held.events.push(event);
      return false;
    }
    const pass = afterSnapshot(hold, event);
    if (hold.held.size === 0 && hold.floors.size === 0) this.streamHolds.delete(ws);
    return pass;
  }

  private remember(id: string): void {
    this.recent.add(id);
    if (this.recent.size > RECENT_EVENTS) this.recent.delete(this.recent.values().next().value!);
  }

  private forget(ws: WebSocket): void {
    this.recovering.delete(ws);
    this.floors.delete(ws);
    this.streamHolds.delete(ws);
  }
}

function applyChange(rooms: Set<string> | undefined, change: MembershipChange): void {
  if (!rooms) return;
  if (change.member) rooms.add(change.roomId);
  else rooms.delete(change.roomId);
}

/** The room an event belongs to, from its data, when the publisher did not say. */
function roomOf(event: ParleyEvent): string | null {
  if (event.resource === "room") return event.resourceId;
  const data = event.data as { roomId?: unknown; conversationId?: unknown } | null;
  if (data && typeof data.roomId === "string") return data.roomId;
  const conversationId = conversationOf(event);
  return conversationId ? roomIdOfConversation(conversationId) : null;
}

function conversationOf(event: ParleyEvent): string | null {
  if (event.resource === "conversation") return event.resourceId;
  const data = event.data as { conversationId?: unknown } | null;
  return data && typeof data.conversationId === "string" ? data.conversationId : null;
}

/** Whether a stream event follows the snapshot a socket got of its stream (if any); the stream's end ends the floor. */
function afterSnapshot(hold: StreamHold, event: ParleyEvent): boolean {
  const { streamId, index, done } = event.data as MessageStream;
  const floor = hold.floors.get(streamId);
  if (done) hold.floors.delete(streamId);
  return floor === undefined || index > floor;
}

function seqOf(event: ParleyEvent): number {
  return (event.data as { seq?: number }).seq ?? 0;
}
