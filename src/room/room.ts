import { DurableObject } from "cloudflare:workers";
import type { Bindings } from "../env";
import { ApiError, fail, ok, type Result } from "../errors";
import { revokedKeyIds } from "../auth/api-keys";
import { createDb } from "../db/client";
import { mirrorConversationsStatements, writeThrough } from "../db/mirror";
import { createEvent, messagePostedEvent } from "../events/envelope";
import { packBodies, type ConversationRecord, type QueueBody, type RoomRecord } from "../events/queue";
import { buildPrompt, HISTORY_MESSAGES } from "../assistant/prompt";
import { pumpModel } from "../assistant/pump";
import type { ReplyOutcome, ReplyRequest } from "../assistant/reply";
import { AlarmSchedule } from "../lib/alarm";
import { newId } from "../lib/ids";
import { Pace } from "../lib/pace";
import type { AccountType } from "../protocol/accounts";
import type { Conversation, CreateConversation, UpdateConversation } from "../protocol/conversations";
import {
  STEP_CLIENT_MESSAGE_ID,
  type HistoryPage,
  type HistoryQuery,
  type Message,
  type MessageAttachment,
} from "../protocol/messages";
import type { Participant, Role, RoomType, UpdateParticipant, UpdateRoom } from "../protocol/rooms";
import type { ParleyEvent } from "../protocol/events";
import { CLOSE_CODES, REALTIME_LIMITS, type MessagePostFrame, type SubscribeFrame } from "../protocol/frames";
import { refuseUpgrade, SocketRegistry, upgradeActor } from "../realtime/sockets";
import { recoverableConversation, topicMatches, type TopicPattern } from "../protocol/topics";
import type { MessageStream } from "../protocol/flows";
import { preparePost } from "./post";
import { hubStub, type HubRpc } from "../hub/client";
import { Outbox } from "./outbox";
import { PostBatch, type Draft } from "./post-batch";
import { dispatchFlows } from "../flows/dispatch";
import {
  hasRoomStorage,
  migrateRoom,
  type ConversationRow,
  type MessageRow,
  type ParticipantRow,
  type RoomRow,
} from "./storage";
import { StreamLog, type StreamState } from "./streams";

/** Who is asking: the org, and for account and session tokens the account (and conversation) they are bound to. */
export interface Actor {
  orgId: string;
  accountId?: string;
  conversationId?: string;
}

/** A participant as the Worker resolved it: the account exists in the org and has this type. */
export interface ParticipantSpec {
  accountId: string;
  accountType: AccountType;
  role?: Role;
  autoRespond?: boolean;
}

/** Everything needed to create a room. */
export interface InitRoom {
  id: string;
  orgId: string;
  type: RoomType;
  name: string | null;
  meta: Record<string, unknown>;
  dmKey: string | null;
  participants: ParticipantSpec[];
}

/** A message post after the Worker resolved its author and attachments. */
export interface PostInput {
  authorId: string;
  text?: string;
  data?: Record<string, unknown>;
  attachments: MessageAttachment[];
  clientMessageId?: string;
}

/** The answer of a post: the message, and whether this call created it (false for a repeated clientMessageId). */
export interface PostResult {
  message: Message;
  created: boolean;
  conversation: ConversationRecord;
}

const MANAGERS: ReadonlySet<string> = new Set(["owner", "admin"]);
const BACKSTOP_MS = 2_000;
/** The most subscribers a post is sent to before it is written (see `postMessage`). */
const SEND_FIRST_SOCKETS = 256;
/**
 * How long a room skips the hub calls of its ephemeral events (typing, stream deltas) and messages after the org hub
 * answered that no socket listens there. The hub tells the room when a socket arrives; this bounds the silence if
 * that call is lost.
 */
const HUB_QUIET_MS = 10_000;
/**
 * The outbox events a room skips while the org hub has no socket: they only go to sockets. (Room, participant and
 * conversation events still go: the hub's view of who may see what follows them.)
 */
const QUIET_SKIPS = new Set(["conversation.message_posted", "conversation.message_stream"]);
/** The envelope's leading fields as the outbox writes them; its type is the room's own, never a client's text. */
const OUTBOX_TYPE = /^\{"event":\{"id":"[^"]*","type":"([^"]*)"/;

/** The event type of an outbox row, read from its leading bytes without parsing the row (empty if it cannot). */
export function outboxEventType(body: string): string {
  return OUTBOX_TYPE.exec(body)?.[1] ?? "";
}

/** Conversation rows kept in memory before the copy starts again. */
const CONVERSATION_ROWS = 1_000;
/**
 * The least time between two D1 write-throughs of a busy room's conversation activity. A quiet room's first message
 * goes at once; in a busy one, what arrives meanwhile goes in the next write. Each is a D1 write and commit, and one
 * database takes every room's: at a write per flight a room taking 400 messages a second made ~150 of them a second,
 * at one per 100 ms a hundred busy rooms made a thousand (and locally each is an `fsync` on the thread the rooms run
 * on: 1 s instead of 100 ms cut a busy 2-member room's server CPU per message by about a fifth).
 */
const ACTIVITY_EVERY_MS = 1_000;

/**
 * One room: its participants, its conversations' seq counters and message log, and the outbox of its events.
 * Every write commits to the object's SQLite storage together with its outbox row before the caller is answered.
 */
export class Room extends DurableObject<Bindings> {
  private readonly sql: SqlStorage;
  private readonly sockets: SocketRegistry;
  private readonly alarms: AlarmSchedule;
  private readonly outbox: Outbox;
  /** Whether this object holds a room's storage (false for an id no room was ever created with). */
  private stored: boolean;
  private room: RoomRow | undefined;
  private members: Map<string, ParticipantRow> | undefined;
  /** Conversation rows read so far (see `conversationRow`). */
  private readonly conversations = new Map<string, ConversationRow>();
  /** Conversations whose activity waits to be written to D1, and whether a write is under way. */
  private readonly activity = new Map<string, ConversationRecord>();
  private activityFlushing = false;
  /** Activity records marked so far, how many of them D1 has, and the `settleActivity` calls waiting for theirs. */
  private activityMarks = 0;
  private activityWritten = 0;
  private settling: { marks: number; resolve: () => void }[] = [];
  private readonly activityPace = new Pace(ACTIVITY_EVERY_MS);
  /** Posts drafted and waiting for their commit, which they share with the posts that arrive meanwhile. */
  private readonly posts = new PostBatch<PostResult>(() => this.commitPosts());
  /** Events written by the transaction in progress; sent to this room's sockets once it commits. */
  private committed: ParleyEvent[] = [];
  /** Assistant replies in flight. */
  private readonly streams: StreamLog;
  /** The replies this object is streaming, by stream id. */
  private readonly replies = new Map<string, Promise<Result<ReplyOutcome>>>();
  /** Ephemeral events waiting for the hub, and the hub call under way. */
  private readonly ephemeral: ParleyEvent[] = [];
  private ephemeralFlight: Promise<void> | null = null;
  /**
   * What the org hub said of its listeners: the epoch at which it last answered that no socket could receive this
   * room's ephemeral events, until when the room believes it, and the newest epoch at which it said a socket came.
   */
  private readonly hubQuiet = { epoch: -1, until: 0, listening: 0 };

  constructor(ctx: DurableObjectState, env: Bindings) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    // A room that was never created has no storage, and a request for an unknown id must not give it any: the
    // schema is written by `init`, or brought up to date here for a room that exists.
    this.stored = hasRoomStorage(this.sql);
    if (this.stored) migrateRoom(ctx.storage);
    this.sockets = new SocketRegistry(ctx);
    this.alarms = new AlarmSchedule(ctx.storage);
    this.streams = new StreamLog(this.sql);
    const retry = (delay: number) => this.alarms.noLaterThan(Date.now() + delay);
    this.outbox = new Outbox(
      this.sql,
      { queue: (bodies) => this.sendToQueue(bodies), hub: (bodies) => this.publishToHub(bodies) },
      retry,
    );
    // A restarted object sends what its outbox still holds at once (see `KEEP_DELIVERED_MS`): whatever woke it, a
    // socket, a read or its alarm, not only its next write.
    if (this.stored) ctx.waitUntil(this.outbox.drain());
  }

  /** Creates the room; for a DM that already exists, answers it with `created: false`. */
  async init(input: InitRoom): Promise<Result<{ record: RoomRecord; created: boolean }>> {
    if (!this.stored) {
      migrateRoom(this.ctx.storage);
      this.stored = true;
    }
    const existing = this.roomRow();
    if (existing) {
      if (input.dmKey !== null && existing.dm_key === input.dmKey && existing.org_id === input.orgId) {
        return ok({ record: this.roomRecord(existing), created: false });
      }
      return fail("CONFLICT", "room already exists");
    }
    const now = new Date().toISOString();
    const participants = dedupe(input.participants);
    this.commit(() => {
      this.sql.exec(
        "INSERT INTO room (singleton, id, org_id, type, name, meta, dm_key, version, created_at) VALUES (1, ?, ?, ?, ?, ?, ?, 1, ?)",
        input.id,
        input.orgId,
        input.type,
        input.name,
        JSON.stringify(input.meta),
        input.dmKey,
        now,
      );
      for (const p of participants) this.insertParticipant(p, now);
      const record = this.roomRecord(this.roomRow()!);
      this.enqueue(roomEvent(record, "created", record.room), { room: record });
    });
    return ok({ record: this.roomRecord(this.roomRow()!), created: true });
  }

  /** The room, if the actor may see it. */
  async getRoom(actor: Actor): Promise<Result<RoomRecord>> {
    const access = this.access(actor);
    if (!access.ok) return access;
    return ok(this.roomRecord(access.value));
  }

  /** Changes the room's name or meta (API keys, owners and admins). */
  async updateRoom(actor: Actor, patch: UpdateRoom): Promise<Result<RoomRecord>> {
    const access = this.manage(actor);
    if (!access.ok) return access;
    const row = access.value;
    this.commit(() => {
      this.sql.exec(
        "UPDATE room SET name = ?, meta = ?, version = version + 1",
        patch.name !== undefined ? patch.name : row.name,
        patch.meta !== undefined ? JSON.stringify(patch.meta) : row.meta,
      );
      this.room = undefined;
      const record = this.roomRecord(this.roomRow()!);
      this.enqueue(roomEvent(record, "updated", record.room), { room: record });
    });
    return ok(this.roomRecord(this.roomRow()!));
  }

  /** Adds a participant to a standard room. */
  async addParticipant(
    actor: Actor,
    spec: ParticipantSpec,
  ): Promise<Result<{ participant: Participant; record: RoomRecord }>> {
    const access = this.manage(actor);
    if (!access.ok) return access;
    if (access.value.type === "dm") return fail("ROOM_IMMUTABLE", "the participants of a dm room never change");
    if (this.participant(spec.accountId)) return fail("CONFLICT", "the account is already a participant");
    const now = new Date().toISOString();
    const participant = this.commit(() => {
      this.insertParticipant(spec, now);
      this.bumpVersion();
      const record = this.roomRecord(this.roomRow()!);
      const added = toParticipant(this.participant(spec.accountId)!);
      this.enqueue(roomEvent(record, "participant_added", added), { room: record });
      return added;
    });
    return ok({ participant, record: this.roomRecord(this.roomRow()!) });
  }

  /** Changes a participant's role or autoRespond (also in DM rooms). */
  async updateParticipant(
    actor: Actor,
    accountId: string,
    patch: UpdateParticipant,
  ): Promise<Result<{ participant: Participant; record: RoomRecord }>> {
    const access = this.manage(actor);
    if (!access.ok) return access;
    const current = this.participant(accountId);
    if (!current) return fail("NOT_FOUND", "participant not found");
    if (current.deleted) return fail("CONFLICT", "the account was deleted: its place in this DM no longer changes");
    const participant = this.rewriteParticipant(
      accountId,
      patch.role ?? current.role,
      patch.autoRespond === undefined ? current.auto_respond : Number(patch.autoRespond),
      0,
    );
    return ok({ participant, record: this.roomRecord(this.roomRow()!) });
  }

  /** Writes a participant's role, autoRespond and deleted flag, with its `participant_updated` event. */
  private rewriteParticipant(accountId: string, role: string, autoRespond: number, deleted: number): Participant {
    return this.commit(() => {
      this.sql.exec(
        "UPDATE participants SET role = ?, auto_respond = ?, deleted = ? WHERE account_id = ?",
        role,
        autoRespond,
        deleted,
        accountId,
      );
      this.bumpVersion();
      const record = this.roomRecord(this.roomRow()!);
      const updated = toParticipant(this.participant(accountId)!);
      this.enqueue(roomEvent(record, "participant_updated", updated), { room: record });
      return updated;
    });
  }

  /** Removes a participant from a standard room (managers, or the participant itself). */
  async removeParticipant(actor: Actor, accountId: string): Promise<Result<{ record: RoomRecord }>> {
    const self = actor.accountId === accountId && !actor.conversationId;
    const access = self ? this.access(actor) : this.manage(actor);
    if (!access.ok) return access;
    if (access.value.type === "dm") return fail("ROOM_IMMUTABLE", "the participants of a dm room never change");
    const current = this.participant(accountId);
    if (!current) return fail("NOT_FOUND", "participant not found");
    return ok({ record: this.dropParticipant(current, "no longer a participant of this room") });
  }

  /** An API key of the org was revoked: its sockets here close at once (4001). */
  async keyRevoked(keyId: string): Promise<void> {
    this.sockets.closeKeys(new Set([keyId]));
  }

  /**
   * Takes a deleted account out of a standard room. A DM keeps it, as its membership never changes (the same set
   * still names the room, and it keeps at least two participants): there it becomes an observer marked deleted, with
   * a `participant_updated` event. Either way nobody can post as it, answer as it or open a session for it any more,
   * and its sockets close. Answers the room's record, or null when the account was not a participant.
   */
  async removeDeletedAccount(accountId: string): Promise<RoomRecord | null> {
    const room = this.roomRow();
    const current = room ? this.participant(accountId) : undefined;
    if (!current) return null;
    if (room!.type !== "dm") return this.dropParticipant(current, "the account was deleted");
    if (!current.deleted) this.rewriteParticipant(accountId, "observer", 0, 1);
    this.sockets.closeTagged(`acc:${accountId}`, CLOSE_CODES.forbidden, "the account was deleted");
    return this.roomRecord(this.roomRow()!);
  }

  /** Removes a participant, with its `participant_removed` event, and closes its sockets. */
  private dropParticipant(current: ParticipantRow, reason: string): RoomRecord {
    this.commit(() => {
      this.sql.exec("DELETE FROM participants WHERE account_id = ?", current.account_id);
      this.bumpVersion();
      const record = this.roomRecord(this.roomRow()!);
      this.enqueue(roomEvent(record, "participant_removed", toParticipant(current)), { room: record });
    });
    this.sockets.closeTagged(`acc:${current.account_id}`, CLOSE_CODES.forbidden, reason);
    return this.roomRecord(this.roomRow()!);
  }

  /** Starts a conversation in the room (API keys and participants who may post). */
  async createConversation(actor: Actor, id: string, input: CreateConversation): Promise<Result<ConversationRecord>> {
    const access = this.access(actor);
    if (!access.ok) return access;
    if (actor.conversationId) return fail("FORBIDDEN", "a session token is bound to one conversation");
    if (actor.accountId && this.participant(actor.accountId)?.role === "observer") {
      return fail("FORBIDDEN", "observers cannot start conversations");
    }
    const now = new Date().toISOString();
    const record = this.commit(() => {
      this.sql.exec(
        `INSERT INTO conversations (id, name, description, meta, contact_id, last_seq, version, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 0, 1, ?, ?)`,
        id,
        input.name ?? null,
        input.description ?? null,
        JSON.stringify(input.meta ?? {}),
        input.contactId ?? null,
        now,
        now,
      );
      const created = this.rereadConversation(id);
      this.enqueue(conversationEvent(created, "created", created.conversation), {
        conversation: created,
        agents: this.respondingAgents(),
      });
      return created;
    });
    return ok(record);
  }

  /** A conversation, if the actor may see it. */
  async getConversation(actor: Actor, id: string): Promise<Result<ConversationRecord>> {
    const found = this.visibleConversation(actor, id);
    if (!found.ok) return found;
    return ok(this.conversationRecord(found.value));
  }

  /** Changes a conversation's name, description, meta or contact. */
  async updateConversation(actor: Actor, id: string, patch: UpdateConversation): Promise<Result<ConversationRecord>> {
    const found = this.visibleConversation(actor, id);
    if (!found.ok) return found;
    const denied = this.denyPosting(actor);
    if (denied) return denied;
    const row = found.value;
    const now = new Date().toISOString();
    const record = this.commit(() => {
      this.sql.exec(
        "UPDATE conversations SET name = ?, description = ?, meta = ?, contact_id = ?, version = version + 1, updated_at = ? WHERE id = ?",
        patch.name !== undefined ? patch.name : row.name,
        patch.description !== undefined ? patch.description : row.description,
        patch.meta !== undefined ? JSON.stringify(patch.meta) : row.meta,
        patch.contactId !== undefined ? patch.contactId : row.contact_id,
        now,
        id,
      );
      const updated = this.rereadConversation(id);
      this.enqueue(conversationEvent(updated, "updated", updated.conversation), { conversation: updated });
      return updated;
    });
    return ok(record);
  }

  /** Deletes a conversation and its history (API keys, owners and admins). */
  async deleteConversation(actor: Actor, id: string): Promise<Result<ConversationRecord>> {
    const found = this.visibleConversation(actor, id);
    if (!found.ok) return found;
    const managed = this.manage(actor);
    if (!managed.ok) return managed;
    const now = new Date().toISOString();
    const record = this.commit(() => {
      this.sql.exec(
        "UPDATE conversations SET deleted_at = ?, updated_at = ?, version = version + 1 WHERE id = ?",
        now,
        now,
        id,
      );
      this.sql.exec("DELETE FROM messages WHERE conversation_id = ?", id);
      const deleted = this.rereadConversation(id);
      this.enqueue(conversationEvent(deleted, "deleted", deleted.conversation), { conversation: deleted });
      return deleted;
    });
    this.sockets.closeTagged(`conv:${id}`, CLOSE_CODES.forbidden, "the conversation was deleted");
    return ok(record);
  }

  /** Checks that an agent may still answer in a conversation automatically (a flow step about to act). */
  async checkAnswer(actor: Actor, conversationId: string, agentId: string): Promise<Result<true>> {
    const found = this.visibleConversation(actor, conversationId);
    if (!found.ok) return found;
    const refusal = answerRefusal(this.participant(agentId));
    return refusal ? fail("FORBIDDEN", refusal) : ok(true);
  }

  /** Checks that an account may hold a session in a conversation: the conversation is live and it participates. */
  async checkSession(actor: Actor, conversationId: string, accountId: string): Promise<Result<true>> {
    const found = this.visibleConversation(actor, conversationId);
    if (!found.ok) return found;
    const participant = this.participant(accountId);
    if (!participant || participant.deleted)
      return fail("BAD_REQUEST", "the account is not a participant of this room", [
        { path: "accountId", message: "must be a participant of the conversation's room" },
      ]);
    return ok(true);
  }

  /**
   * Appends a message: checks the author may post, assigns the next gapless `seq`, and commits the message with its
   * outbox row in one transaction. A repeated `clientMessageId` answers the original message and writes nothing.
   */
  async postMessage(actor: Actor, conversationId: string, input: PostInput): Promise<Result<PostResult>> {
    const found = this.visibleConversation(actor, conversationId);
    if (!found.ok) return found;
    const author = this.participant(input.authorId);
    // A flow step's post (its reserved id) is an agent's automatic answer: it also needs the agent's autoRespond.
    const isStep = input.clientMessageId !== undefined && STEP_CLIENT_MESSAGE_ID.test(input.clientMessageId);
    const refusal = isStep ? answerRefusal(author) : postingRefusal(author);
    if (refusal) return fail("FORBIDDEN", refusal);

    if (input.clientMessageId !== undefined) {
      const previous = this.messageByClientId(conversationId, input.clientMessageId);
      if (previous)
        return ok({ message: previous, created: false, conversation: this.conversationRecord(found.value) });
    }

    const draft = this.draftMessage(found.value, author!, input, newId("msg"));
    // To a few sockets, sent before the write. The runtime holds every send that follows a write until the write is
    // durable, which would make each delivery wait for a commit; the author's ack (or REST answer), the hub and the
    // queue still wait for it. Everything that can refuse the post was checked above. Should the write still fail,
    // the sockets that had the event are closed and recover: their `sinceSeq` ack carries the stored `lastSeq`, and
    // the seq goes to the next stored message (the SDK delivers a different message at a seq it had, and reports a
    // gap). A large fan-out goes after the commit: measured, sending first made rooms of 1,000 slower.
    // The commit is shared with the posts that arrive meanwhile (`PostBatch`): anything that reads messages or
    // writes commits the waiting posts first, so the room's order is the order of the drafts.
    const sendFirst = this.sockets.subscriberCount(draft.event.topic) <= SEND_FIRST_SOCKETS;
    if (sendFirst) this.broadcast(draft.event);
    try {
      const result = await this.posts.add(draft, sendFirst);
      this.markActivity(result.conversation);
      return ok(result);
    } catch (error) {
      this.sockets.closeSubscribers(draft.event.topic, CLOSE_CODES.internal, "a message sent here was not stored");
      throw error;
    }
  }

  // --- assistant streams ----------------------------------------------------------------------------------------

  /**
   * Opens an assistant reply stream (its id is also the reply's `clientMessageId`). If that reply was already
   * posted (a retried step) it is answered and nothing opens; a stream already open (a retry mid-stream) restarts
   * its text but keeps its indexes, and its next delta carries the new text as a snapshot. A `retried` step's stream
   * that the room does not know (a reset before its first save) opens past the indexes it may have sent. Answers the
   * index the next delta gets.
   */
  async openStream(
    actor: Actor,
    conversationId: string,
    streamId: string,
    authorId: string,
    retried = false,
  ): Promise<Result<{ message: Message | null; next: number }>> {
    const found = this.visibleConversation(actor, conversationId);
    if (!found.ok) return found;
    const refusal = answerRefusal(this.participant(authorId));
    if (refusal) return fail("FORBIDDEN", refusal);
    const posted = this.messageByClientId(conversationId, streamId);
    if (posted) return ok({ message: posted, next: 0 });
    const state = this.streams.open(streamId, conversationId, authorId, retried);
    return ok({ message: null, next: state.next });
  }

  /**
   * Appends a delta to an open stream and sends its `message_stream` event to the room's sockets at once and to the
   * org hub behind the deltas before it. For a writer other than the room's own model call (`assistantReply`).
   */
  async appendStream(streamId: string, delta: string): Promise<Result<{ index: number }>> {
    const state = this.streams.get(streamId);
    if (!state) return fail("NOT_FOUND", "no open stream with this id");
    return ok({ index: this.emitDelta(state, delta) });
  }

  /**
   * Streams an agent's reply (the assistant step's one call): opens the stream, or answers the reply a retried step
   * already posted; builds the prompt from the request's instructions and the conversation's recent history (the
   * agent's own messages as `assistant`); calls the model and sends each delta to the sockets and the hub as it comes
   * (`pumpModel`); then closes the stream with one `bot` message, or with the model's error. The model is called
   * here, next to the sockets, rather than in the step: a delta goes from the model to the sockets with no call
   * between (it cost the step a pipe frame per delta, and the room a read). A call for a reply under way (a step
   * retried while its first call lives on) joins it: one model call, one answer for both. A reset of the room fails
   * the call; the step's retry restarts the stream and asks the model again.
   */
  assistantReply(actor: Actor, request: ReplyRequest): Promise<Result<ReplyOutcome>> {
    const running = this.replies.get(request.streamId);
    if (running) return running;
    const reply = this.runReply(actor, request).finally(() => this.replies.delete(request.streamId));
    this.replies.set(request.streamId, reply);
    return reply;
  }

  private async runReply(actor: Actor, request: ReplyRequest): Promise<Result<ReplyOutcome>> {
    const { streamId } = request;
    const opened = await this.openStream(actor, request.conversationId, streamId, request.agentId, request.retried);
    if (!opened.ok || opened.value.message) return opened.ok ? ok({ message: opened.value.message }) : opened;
    const history = await this.listMessages(actor, request.conversationId, {
      limit: HISTORY_MESSAGES,
      ...(request.beforeSeq !== undefined ? { beforeSeq: request.beforeSeq } : {}),
    });
    if (!history.ok) return history;
    const prompt = buildPrompt(request.agentId, request.instructions, history.value.items);
    // Where the reply is: a stream read back from storage (a rolled-back transaction drops it from memory) lacks its
    // deltas since the last save, and takes this text back, its next delta carrying it as a snapshot.
    let index = opened.value.next;
    let text = "";
    /** The stream, back in step with the reply; null once it closed. */
    const current = () => {
      const state = this.streams.get(streamId);
      if (state && (state.next !== index || state.text.length !== text.length)) {
        this.streams.resync(state, index, text);
      }
      return state;
    };
    /** Whether the reply can no longer be posted (the conversation deleted, the agent gone): the model is stopped. */
    let blocked = false;
    const { stopped, error, detail } = await pumpModel(this.env, request.model, prompt, (delta) => {
      const state = current();
      if (!state) return false;
      const conversation = this.conversationRow(state.conversationId);
      if (!conversation || conversation.deleted_at || answerRefusal(this.participant(state.authorId))) {
        blocked = true;
        return false;
      }
      index = this.emitDelta(state, delta) + 1;
      text += delta;
      return true;
    });
    // A stream closed meanwhile is someone else's to end; a blocked one is ended here, with the reason.
    if (stopped && !blocked) return fail("NOT_FOUND", "the stream was closed while the model answered");
    current(); // the close commits the stream's text: back in step first
    // The stream's clients get the error; the run (read by the org's operators) also gets the provider's words.
    const closed = await this.closeStream(streamId, error);
    if (detail) console.warn("model failed", { streamId, model: request.model, error, detail });
    if (!closed.ok) return closed;
    // A stream the close itself ended with an error (no text, the agent gone) fails the run as well.
    const failure = error ? (detail ? `${error}: ${detail}` : error) : closed.value.error;
    return ok({ message: closed.value.message, ...(failure ? { error: failure } : {}) });
  }

  /** Sends a stream's next delta to the sockets and the hub, then stores it; answers the delta's index. */
  private emitDelta(state: StreamState, delta: string): number {
    const at = state.next;
    // After a restart the clients' text is stale: that delta carries the whole new text as a snapshot.
    const text = state.restarted ? state.text + delta : undefined;
    const event = this.streamEvent(state, { index: at, delta, done: false, ...(text !== undefined ? { text } : {}) });
    this.broadcast(event);
    this.publishEphemeral(event);
    // After the sends, so a save (a write) does not hold them until it is durable.
    if (this.streams.append(state, delta)) {
      // In the same commit as the save: delivered outbox rows cost no write of their own.
      this.outbox.prune();
    }
    return at;
  }

  /**
   * Closes a stream: with no error, commits the reply as one `bot` message (idempotent on the stream id) together
   * with the final `done` event; with an error, only the `done` event carrying it. Both go through the outbox once
   * the deltas before them reached the hub, so they follow every delta and precede anything posted later.
   */
  async closeStream(streamId: string, error?: string): Promise<Result<{ message: Message | null; error?: string }>> {
    await this.ephemeralFlushed();
    const state = this.streams.get(streamId);
    if (!state) return fail("NOT_FOUND", "no open stream with this id");
    const text = state.text;
    const posted = this.messageByClientId(state.conversationId, streamId);
    const author = this.participant(state.authorId);
    const conversation = this.conversationRow(state.conversationId);
    const failure =
      error ??
      (!conversation || conversation.deleted_at ? "the conversation was deleted" : undefined) ??
      answerRefusal(author) ??
      (text === "" && !posted ? "the model returned no text" : undefined);
    const messageId = posted?.id ?? newId("msg");
    const result = this.commit(() => {
      this.streams.remove(streamId);
      const done = this.streamEvent(state, {
        index: state.next,
        delta: "",
        text,
        done: true,
        ...(failure ? { error: failure } : { messageId }),
      });
      this.enqueue(done, {});
      if (failure || posted) return null;
      const input = { authorId: state.authorId, text, attachments: [], clientMessageId: streamId };
      const draft = this.draftMessage(conversation!, author!, input, messageId);
      return this.writeMessages([{ draft, delivered: false }])[0];
    });
    if (result) this.markActivity(result.conversation);
    return ok({ message: result?.message ?? posted ?? null, ...(failure ? { error: failure } : {}) });
  }

  /** The `message_stream` event of a stream. */
  private streamEvent(state: StreamState, fields: Omit<MessageStream, "streamId" | "authorId" | "conversationId">) {
    const room = this.roomRow()!;
    return createEvent<MessageStream>({
      orgId: room.org_id,
      source: "conversations",
      resource: "conversation",
      event: "message_stream",
      resourceId: state.conversationId,
      data: { streamId: state.streamId, authorId: state.authorId, conversationId: state.conversationId, ...fields },
    });
  }

  /**
   * Sends an event that is not stored (typing, stream deltas) to the org hub. Events go in order, one hub call at a
   * time carrying everything that gathered meanwhile; a failure costs only those events.
   */
  private publishEphemeral(event: ParleyEvent): void {
    if (this.hubIsQuiet()) return;
    this.ephemeral.push(event);
    if (this.ephemeralFlight) return;
    const room = this.roomRow()!;
    const hub = this.hub(room.org_id);
    this.ephemeralFlight = (async () => {
      try {
        while (this.ephemeral.length > 0) {
          const events = this.ephemeral.splice(0);
          try {
            const { quietEpoch } = await hub.publish(room.id, events, true);
            if (quietEpoch !== undefined) {
              this.hubWentQuiet(quietEpoch);
              // What gathered meanwhile has nobody to go to either.
              this.ephemeral.length = 0;
            }
          } catch (error) {
            console.error("ephemeral events to hub failed", events.length, String(error));
          }
        }
      } finally {
        this.ephemeralFlight = null;
      }
    })();
    this.ctx.waitUntil(this.ephemeralFlight);
  }

  /** The org hub answered that no socket listens there (at `epoch`). */
  private hubWentQuiet(epoch: number): void {
    Object.assign(this.hubQuiet, { epoch, until: Date.now() + HUB_QUIET_MS });
  }

  /**
   * Whether the org hub said no socket listens there, and has not said since that one arrived: the room then skips
   * the hub calls of its ephemeral events and messages, for at most `HUB_QUIET_MS` before it asks again.
   */
  private hubIsQuiet(): boolean {
    const quiet = this.hubQuiet;
    return quiet.epoch >= quiet.listening && Date.now() < quiet.until;
  }

  /**
   * The org hub has a socket again (epoch: how many times it has said so): ephemeral events go to it again. Answers
   * the streams in flight, which the hub did not see while nobody listened (a subscription to them gets their text).
   */
  async hubListening(epoch: number): Promise<ParleyEvent<MessageStream>[]> {
    this.hubQuiet.listening = Math.max(this.hubQuiet.listening, epoch);
    return this.stored ? this.snapshots() : [];
  }

  /** Resolves once every ephemeral event published so far has been handed to the hub. */
  private async ephemeralFlushed(): Promise<void> {
    while (this.ephemeralFlight) await this.ephemeralFlight;
  }

  /**
   * Snapshots of the streams in flight (the text so far) of those of these conversations the actor may see, for a hub
   * subscription made mid-stream.
   */
  async streamSnapshots(actor: Actor, conversationIds: string[]): Promise<Result<ParleyEvent<MessageStream>[]>> {
    const visible = new Set(conversationIds.filter((id) => this.visibleConversation(actor, id).ok));
    return ok(visible.size === 0 ? [] : this.snapshots().filter((event) => visible.has(event.resourceId)));
  }

  /**
   * Sends a new room subscription the snapshots of the streams in flight it matches, unless the socket had them
   * through another subscription (`had`: this topic was subscribed already); live deltas follow.
   */
  private sendSnapshots(ws: WebSocket, topic: string, pattern: TopicPattern, had: boolean): void {
    if (had) return;
    const { actor } = this.sockets.state(ws);
    for (const event of this.snapshots()) {
      if (actor.conversationId && actor.conversationId !== event.resourceId) continue;
      if (!topicMatches(pattern, event.topic) || this.sockets.matchedElsewhere(ws, topic, event.topic)) continue;
      this.sockets.send(ws, { type: "event", topic: event.topic, event });
    }
  }

  /** A `message_stream` event per stream in flight, carrying the text so far and the index of its last delta. */
  private snapshots(): ParleyEvent<MessageStream>[] {
    return this.streams
      .active()
      .map((state) => this.streamEvent(state, { index: state.next - 1, delta: "", text: state.text, done: false }));
  }

  private messageByClientId(conversationId: string, clientMessageId: string): Message | null {
    if (this.posts.has(conversationId, clientMessageId)) this.commitPosts();
    const row = this.sql
      .exec<MessageRow>(
        "SELECT * FROM messages WHERE conversation_id = ? AND client_message_id = ?",
        conversationId,
        clientMessageId,
      )
      .toArray()[0];
    return row ? this.toMessage(row) : null;
  }

  /**
   * A message about to be appended: the conversation's next gapless `seq` (after its posts waiting for their
   * commit), and its event. Writes nothing.
   */
  private draftMessage(conversation: ConversationRow, author: ParticipantRow, input: PostInput, id: string): Draft {
    const now = new Date().toISOString();
    const room = this.roomRow()!;
    const message: Message = {
      id,
      orgId: room.org_id,
      roomId: room.id,
      conversationId: conversation.id,
      seq: (this.posts.lastSeq(conversation.id) ?? this.conversationRow(conversation.id)!.last_seq) + 1,
      authorId: input.authorId,
      type: author.account_type === "agent" ? "bot" : "user",
      text: input.text ?? null,
      data: input.data ?? null,
      attachments: input.attachments,
      clientMessageId: input.clientMessageId ?? null,
      createdAt: now,
    };
    return { message, event: messagePostedEvent(message) };
  }

  /**
   * Writes drafted messages, in order: their rows and their events in the outbox, then each conversation's
   * `last_seq` once for all of its messages; runs inside `commit`. `delivered`: the room's sockets already have the
   * event.
   */
  private writeMessages(drafts: { draft: Draft; delivered: boolean }[]): PostResult[] {
    const agents = this.respondingAgents();
    const latest = new Map<string, ConversationRow>();
    const results = drafts.map(({ draft, delivered }): PostResult => {
      const { message } = draft;
      this.sql.exec(
        `INSERT INTO messages (conversation_id, seq, id, author_id, type, text, data, attachments, client_message_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        message.conversationId,
        message.seq,
        message.id,
        message.authorId,
        message.type,
        message.text,
        message.data === null ? null : JSON.stringify(message.data),
        JSON.stringify(message.attachments),
        message.clientMessageId,
        message.createdAt,
      );
      const row = latest.get(message.conversationId) ?? this.conversationRow(message.conversationId)!;
      const updated = { ...row, last_seq: message.seq, last_message_at: message.createdAt, version: row.version + 1 };
      latest.set(updated.id, updated);
      const conversation = this.conversationRecord(updated);
      // An agent never answers its own message, and none answers a system message: such a message starts no flow.
      const answering = message.type === "system" ? [] : agents.filter((id) => id !== message.authorId);
      this.enqueue(draft.event, { conversation, agents: answering }, delivered);
      return { message, created: true, conversation };
    });
    for (const row of latest.values()) {
      this.sql.exec(
        "UPDATE conversations SET last_seq = ?, last_message_at = ?, version = ? WHERE id = ?",
        row.last_seq,
        row.last_message_at,
        row.version,
        row.id,
      );
      this.conversations.set(row.id, row);
    }
    return results;
  }

  /** One page of a conversation's history, always in ascending `seq` (contract section 6). */
  async listMessages(actor: Actor, conversationId: string, query: HistoryQuery): Promise<Result<HistoryPage>> {
    const found = this.visibleConversation(actor, conversationId);
    if (!found.ok) return found;
    this.commitPosts();
    const { afterSeq, beforeSeq, limit } = query;
    const upper = beforeSeq ?? Number.MAX_SAFE_INTEGER;
    let rows: MessageRow[];
    if (afterSeq !== undefined) {
      rows = this.sql
        .exec<MessageRow>(
          "SELECT * FROM messages WHERE conversation_id = ? AND seq > ? AND seq < ? ORDER BY seq ASC LIMIT ?",
          conversationId,
          afterSeq,
          upper,
          limit + 1,
        )
        .toArray();
    } else {
      rows = this.sql
        .exec<MessageRow>(
          "SELECT * FROM messages WHERE conversation_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
          conversationId,
          upper,
          limit + 1,
        )
        .toArray()
        .reverse();
    }
    const hasMore = rows.length > limit;
    const page = hasMore ? (afterSeq !== undefined ? rows.slice(0, limit) : rows.slice(1)) : rows;
    return ok({ items: page.map((row) => this.toMessage(row)), hasMore });
  }

  /** The alarm: drains what the outbox still holds and sweeps idle sockets, then plans the next run. */
  override async alarm(): Promise<void> {
    this.alarms.fired();
    if (!this.stored) return;
    await this.outbox.drain();
    const sweepAt = await this.sockets.sweep((keys) => revokedKeyIds(createDb(this.env.DB), keys));
    if (sweepAt !== null) await this.alarms.noLaterThan(sweepAt);
  }

  /** The number of events not yet handed to the queue and the hub (for tests and health checks). */
  async pendingEvents(): Promise<number> {
    return this.stored ? this.outbox.pending() : 0;
  }

  /** Pages of `message_posted` events after `sinceSeq`, for recovery on the org hub; null when they cannot be replayed. */
  async replayMessages(
    actor: Actor,
    conversationId: string,
    sinceSeq: number,
  ): Promise<Result<{ events: ParleyEvent[]; lastSeq: number } | null>> {
    const events = this.replay(actor, conversationId, sinceSeq);
    return ok(events && { events, lastSeq: this.conversationRow(conversationId)!.last_seq });
  }

  // --- sockets ------------------------------------------------------------------------------------------------

  /** Accepts a room socket. The Worker checked the credential and membership before it forwarded the upgrade. */
  override async fetch(request: Request): Promise<Response> {
    const actor = upgradeActor(request);
    if (actor instanceof Response) return actor;
    if (this.sockets.revokedKey(actor)) return refuseUpgrade(request, 401, "UNAUTHORIZED", "API key revoked");
    const access = actor.conversationId ? this.visibleConversation(actor, actor.conversationId) : this.access(actor);
    if (!access.ok) return refuseUpgrade(request, 403, "FORBIDDEN", "not a participant of this room");
    const tags = [
      actor.accountId ? `acc:${actor.accountId}` : "key",
      ...(actor.conversationId ? [`conv:${actor.conversationId}`] : []),
    ];
    const response = this.sockets.accept(actor, tags);
    await this.alarms.noLaterThan(this.sockets.firstSweep(actor));
    return response;
  }

  /** Handles one client frame; never throws: failures become error frames. */
  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    try {
      const frame = this.sockets.parse(ws, message);
      if (!frame || this.sockets.handleCommon(ws, frame)) return;
      if (frame.type === "subscribe") this.subscribe(ws, frame);
      else if (frame.type === "message.post") await this.postFromSocket(ws, frame);
      else if (frame.type === "typing") this.typing(ws, frame);
    } catch (error) {
      console.error("room socket frame failed", String(error));
      this.sockets.error(ws, undefined, "INTERNAL", "internal error");
    }
  }

  /** Answers a client's close frame and forgets the socket. */
  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.sockets.closed(ws, code, reason);
  }

  /** Forgets a socket that failed. */
  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    console.error("room socket error", String(error));
    this.sockets.closed(ws, CLOSE_CODES.internal, "socket error");
  }

  /** `subscribe`: acks, then with `sinceSeq` replays the conversation's later messages before anything live. */
  private subscribe(ws: WebSocket, frame: SubscribeFrame): void {
    // Before the subscription: the waiting posts go to the subscribers before it, and the replay has them.
    if (frame.sinceSeq !== undefined) this.commitPosts();
    const subscribed = this.sockets.state(ws).subs.has(frame.topic);
    const pattern = this.sockets.subscribe(ws, frame.topic, frame.id);
    if (!pattern) return;
    if (frame.sinceSeq === undefined) {
      this.sockets.ackSubscribe(ws, frame);
      return this.sendSnapshots(ws, frame.topic, pattern, subscribed);
    }
    // Synchronous from here: no commit can interleave, so the replay joins the live stream with no gap and no duplicate.
    const conversationId = recoverableConversation(pattern);
    const events = conversationId ? this.replay(this.sockets.state(ws).actor, conversationId, frame.sinceSeq) : null;
    const lastSeq = events !== null ? this.conversationRow(conversationId!)!.last_seq : undefined;
    this.sockets.ackSubscribe(ws, frame, events !== null, lastSeq);
    if (events === null) return;
    // What another subscription of this connection already delivered is not sent again.
    const had = this.sockets.hadAlready(ws, conversationId!);
    for (const event of events) {
      if (!had((event.data as Message).seq)) this.sockets.send(ws, { type: "event", topic: event.topic, event });
    }
    this.sockets.replayed(ws, conversationId!, frame.sinceSeq + 1, lastSeq!);
  }

  /** The `message_posted` events after `sinceSeq`, or null when the conversation cannot be replayed to this actor. */
  private replay(actor: Actor, conversationId: string, sinceSeq: number): ParleyEvent[] | null {
    this.commitPosts();
    const found = this.visibleConversation(actor, conversationId);
    if (!found.ok || found.value.last_seq - sinceSeq > REALTIME_LIMITS.replayMessages) return null;
    return this.sql
      .exec<MessageRow>(
        "SELECT * FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq",
        conversationId,
        sinceSeq,
      )
      .toArray()
      .map((row) => messagePostedEvent(this.toMessage(row)));
  }

  /** `message.post`: the rules of the REST post; acked with the message. */
  private async postFromSocket(ws: WebSocket, frame: MessagePostFrame): Promise<void> {
    if (!this.sockets.take(ws, frame.id)) return;
    const { actor } = this.sockets.state(ws);
    let result: Result<PostResult>;
    try {
      result = await this.postMessage(actor, frame.conversationId, await preparePost(this.env.DB, actor, frame));
    } catch (error) {
      if (!(error instanceof ApiError)) {
        console.error("room socket post failed", String(error));
        return this.sockets.error(ws, frame.id, "INTERNAL", "the message could not be posted");
      }
      result = { ok: false, error: error.toInfo() };
    }
    if (!result.ok) this.sockets.error(ws, frame.id, result.error.code, result.error.message, result.error.details);
    else if (frame.id) this.sockets.send(ws, { type: "ack", id: frame.id, message: result.value.message });
  }

  /** `typing`: an ephemeral `conversation.typing` event to the room's other sockets and the org hub; never stored. */
  private typing(ws: WebSocket, frame: { id?: string; conversationId: string }): void {
    if (!this.sockets.take(ws, frame.id)) return;
    const { actor } = this.sockets.state(ws);
    const found = this.visibleConversation(actor, frame.conversationId);
    if (!found.ok) return this.sockets.error(ws, frame.id, found.error.code, found.error.message);
    if (!actor.accountId)
      return this.sockets.error(ws, frame.id, "BAD_REQUEST", "typing needs an account or session token");
    // Observers cannot post: they have nothing to be typing.
    const denied = this.denyPosting(actor);
    if (denied && !denied.ok) return this.sockets.error(ws, frame.id, denied.error.code, denied.error.message);
    const room = this.roomRow()!;
    const event = createEvent({
      orgId: room.org_id,
      source: "conversations",
      resource: "conversation",
      event: "typing",
      resourceId: frame.conversationId,
      data: { conversationId: frame.conversationId, roomId: room.id, accountId: actor.accountId },
    });
    this.broadcast(event, ws);
    this.publishEphemeral(event);
    if (frame.id) this.sockets.send(ws, { type: "ack", id: frame.id });
  }

  /**
   * The ack waits only for the commit; the conversation's activity (count, last message) follows right behind it
   * into D1, one write per conversation however many messages arrived meanwhile, and at most one write every
   * `ACTIVITY_EVERY_MS` while messages keep coming (a list of conversations, which D1 serves, first asks the room to
   * write at once: `settleActivity`). The events consumer writes it too, so a failure here only delays it.
   */
  private markActivity(record: ConversationRecord): void {
    this.activity.set(record.conversation.id, record);
    this.activityMarks++;
    if (this.activityFlushing) return;
    this.activityFlushing = true;
    this.ctx.waitUntil(
      (async () => {
        try {
          while (this.activity.size > 0) {
            await this.activityPace.turn();
            const marks = this.activityMarks;
            const records = [...this.activity.values()];
            this.activity.clear();
            try {
              await writeThrough(this.env.DB, mirrorConversationsStatements(this.env.DB, records));
            } finally {
              this.activityWritten = marks;
              this.releaseSettled();
            }
          }
        } finally {
          this.activityFlushing = false;
          this.releaseSettled(true);
        }
      })(),
    );
  }

  /**
   * Answers once D1 has the conversations' activity marked so far, written at once rather than at its turn: a list
   * of conversations read after this orders this room's by every message it acknowledged before (read-your-writes).
   * A failed write answers too (the list is then as stale as D1).
   */
  settleActivity(): Promise<void> {
    if (!this.activityFlushing || this.activityWritten >= this.activityMarks) return Promise.resolve();
    const marks = this.activityMarks;
    return new Promise((resolve) => {
      this.settling.push({ marks, resolve });
      this.activityPace.hurry();
    });
  }

  /** Answers the `settleActivity` calls whose activity D1 has (all of them when the writing stopped). */
  private releaseSettled(all = false): void {
    this.settling = this.settling.filter((waiter) => {
      const done = all || waiter.marks <= this.activityWritten;
      if (done) waiter.resolve();
      return !done;
    });
  }

  /** Sends an event to this room's sockets that subscribed to it and may see it. */
  private broadcast(event: ParleyEvent, except?: WebSocket): void {
    this.sockets.deliver(
      event,
      (actor, ws) => ws !== except && (!actor.conversationId || event.resourceId === actor.conversationId),
    );
  }

  // --- access rules -------------------------------------------------------------------------------------------

  /** The room row if the actor may see the room: same org, and for tokens, a participant. */
  private access(actor: Actor): Result<RoomRow> {
    const row = this.roomRow();
    if (!row || row.org_id !== actor.orgId) return fail("NOT_FOUND", "room not found");
    if (actor.accountId && !this.participant(actor.accountId)) return fail("NOT_FOUND", "room not found");
    return ok(row);
  }

  /** The room row if the actor may manage it: an API key, or an owner or admin of the room. */
  private manage(actor: Actor): Result<RoomRow> {
    const access = this.access(actor);
    if (!access.ok) return access;
    if (actor.conversationId) return fail("FORBIDDEN", "a session token cannot manage the room");
    if (actor.accountId && !MANAGERS.has(this.participant(actor.accountId)!.role)) {
      return fail("FORBIDDEN", "only owners and admins manage the room");
    }
    return access;
  }

  /** A live conversation of this room that the actor may see. */
  private visibleConversation(actor: Actor, id: string): Result<ConversationRow> {
    const access = this.access(actor);
    if (!access.ok) return fail("NOT_FOUND", "conversation not found");
    if (actor.conversationId && actor.conversationId !== id) return fail("NOT_FOUND", "conversation not found");
    const row = this.conversationRow(id);
    if (!row || row.deleted_at !== null) return fail("NOT_FOUND", "conversation not found");
    return ok(row);
  }

  /** Refuses observers, who may read but not write. */
  private denyPosting(actor: Actor): Result<never> | null {
    if (actor.accountId && this.participant(actor.accountId)?.role === "observer") {
      return fail("FORBIDDEN", "observers cannot change conversations");
    }
    return null;
  }

  // --- storage ------------------------------------------------------------------------------------------------

  /** The room row, read once and kept until a write changes it. */
  private roomRow(): RoomRow | undefined {
    if (!this.stored) return undefined;
    this.room ??= this.sql.exec<RoomRow>("SELECT * FROM room").toArray()[0];
    return this.room;
  }

  /** The auto-responding agents of the room now: the flows an event starts are decided when it commits. */
  private respondingAgents(): string[] {
    return [...this.memberRows().values()]
      .filter((row) => row.account_type === "agent" && row.auto_respond === 1)
      .map((row) => row.account_id);
  }

  /** A participant. */
  private participant(accountId: string): ParticipantRow | undefined {
    return this.memberRows().get(accountId);
  }

  /** The room's participants, read once and kept until a write changes them. */
  private memberRows(): Map<string, ParticipantRow> {
    this.members ??= new Map(
      this.sql
        .exec<ParticipantRow>("SELECT * FROM participants")
        .toArray()
        .map((row) => [row.account_id, row]),
    );
    return this.members;
  }

  /** A conversation as storage has it after a write of its row: the kept copy is dropped and read again. */
  private rereadConversation(id: string): ConversationRecord {
    this.conversations.delete(id);
    return this.conversationRecord(this.conversationRow(id)!);
  }

  /** A conversation's row, read once and kept: this object is its only writer, and every write updates the copy. */
  private conversationRow(id: string): ConversationRow | undefined {
    let row = this.conversations.get(id);
    if (row) return row;
    row = this.sql.exec<ConversationRow>("SELECT * FROM conversations WHERE id = ?", id).toArray()[0];
    if (this.conversations.size >= CONVERSATION_ROWS) this.conversations.clear();
    if (row) this.conversations.set(id, row);
    return row;
  }

  private insertParticipant(spec: ParticipantSpec, joinedAt: string): void {
    this.members = undefined;
    this.sql.exec(
      "INSERT INTO participants (account_id, account_type, role, auto_respond, joined_at) VALUES (?, ?, ?, ?, ?)",
      spec.accountId,
      spec.accountType,
      spec.role ?? "member",
      Number(spec.autoRespond ?? spec.accountType === "agent"),
      joinedAt,
    );
  }

  private bumpVersion(): void {
    this.sql.exec("UPDATE room SET version = version + 1");
    this.room = undefined;
    this.members = undefined;
  }

  private roomRecord(row: RoomRow): RoomRecord {
    const participants = this.sql
      .exec<ParticipantRow>("SELECT * FROM participants ORDER BY joined_at, account_id")
      .toArray()
      .map(toParticipant);
    return {
      room: {
        id: row.id,
        orgId: row.org_id,
        type: row.type as RoomType,
        name: row.name,
        meta: JSON.parse(row.meta),
        participants,
        createdAt: row.created_at,
      },
      dmKey: row.dm_key,
      version: row.version,
    };
  }

  private conversationRecord(row: ConversationRow): ConversationRecord {
    const room = this.roomRow()!;
    const conversation: Conversation = {
      id: row.id,
      orgId: room.org_id,
      roomId: room.id,
      name: row.name,
      description: row.description,
      meta: JSON.parse(row.meta),
      contactId: row.contact_id,
      messageCount: row.last_seq,
      lastMessageAt: row.last_message_at,
      createdAt: row.created_at,
      updatedAt: row.last_message_at && row.last_message_at > row.updated_at ? row.last_message_at : row.updated_at,
    };
    return { conversation, version: row.version, deleted: row.deleted_at !== null };
  }

  private toMessage(row: MessageRow): Message {
    const room = this.roomRow()!;
    return {
      id: row.id,
      orgId: room.org_id,
      roomId: room.id,
      conversationId: row.conversation_id,
      seq: row.seq,
      authorId: row.author_id,
      type: row.type as Message["type"],
      text: row.text,
      data: row.data === null ? null : JSON.parse(row.data),
      attachments: JSON.parse(row.attachments),
      clientMessageId: row.client_message_id,
      createdAt: row.created_at,
    };
  }

  // --- outbox -------------------------------------------------------------------------------------------------

  /**
   * Runs a write in one SQLite transaction, after the posts waiting for theirs (in a transaction of their own, so
   * neither can fail the other); once it committed, sends its events to this room's sockets and hands its outbox
   * rows to the queue and the hub.
   */
  private commit<T>(write: () => T): T {
    this.commitPosts();
    return this.commitNow(write);
  }

  /** Commits the posts waiting for it, in one transaction; each caller gets its message, or the failure. */
  private commitPosts(): void {
    if (this.posts.size === 0) return;
    const posts = this.posts.take();
    let written: PostResult[];
    try {
      written = this.commitNow(() => this.writeMessages(posts));
    } catch (error) {
      for (const post of posts) post.reject(error);
      return;
    }
    posts.forEach((post, i) => post.resolve(written[i]));
  }

  private commitNow<T>(write: () => T): T {
    let result: T;
    try {
      result = this.ctx.storage.transactionSync(() => {
        this.outbox.prune();
        return write();
      });
    } catch (error) {
      this.room = undefined; // the transaction rolled back: forget anything read inside it
      this.members = undefined;
      this.conversations.clear();
      this.committed = [];
      this.triggers = [];
      this.streams.reset();
      this.outbox.rolledBack();
      throw error;
    }
    const events = this.committed;
    this.committed = [];
    for (const event of events) this.broadcast(event);
    const triggers = this.triggers;
    this.triggers = [];
    // The alarm is the backstop: if this object stops before the drains finish, the alarm drains on restart.
    void this.alarms.noLaterThan(Date.now() + BACKSTOP_MS);
    this.ctx.waitUntil(this.outbox.drain());
    if (triggers.length > 0) this.ctx.waitUntil(this.startFlows(triggers));
    return result;
  }

  /** Writes an event to the outbox; called inside `commit`, so it lands with the change it describes. */
  private enqueue(event: ParleyEvent, mirror: Omit<QueueBody, "event">, delivered = false): void {
    this.sql.exec("INSERT INTO outbox (body) VALUES (?)", JSON.stringify({ event, ...mirror } satisfies QueueBody));
    if (!delivered) this.committed.push(event);
    if (mirror.agents?.length) this.triggers.push({ event, ...mirror });
  }

  /** Committed events that auto-responding agents answer: dispatched at once, not only when the queue delivers. */
  private triggers: QueueBody[] = [];

  /**
   * The fast path of agents' flows: the room dispatches its own triggers as soon as they commit, so an agent starts
   * answering without waiting for the events queue to deliver a batch. The consumer dispatches them again when the
   * queue delivers (runs are unique per trigger, so nothing runs twice); that is also the path when this one fails.
   */
  private async startFlows(triggers: QueueBody[]): Promise<void> {
    try {
      await dispatchFlows(this.env, triggers);
    } catch (error) {
      console.error("starting flows from the room failed; the events consumer will", String(error));
    }
  }

  private async sendToQueue(bodies: string[]): Promise<void> {
    // Sent as text: the queue carries the committed JSON as it is, and counts its size in bytes.
    await this.env.EVENTS.sendBatch(packBodies(bodies).map((body) => ({ body, contentType: "text" as const })));
  }

  /**
   * Publishes outbox rows to the org hub. While the hub says no socket listens there, messages and stream ends are
   * skipped (read without parsing their rows); the room's other events still go, as the hub's memberships follow them.
   */
  private async publishToHub(bodies: string[]): Promise<void> {
    const room = this.roomRow();
    if (!room) return;
    const quiet = this.hubIsQuiet();
    const events = bodies
      .filter((body) => !(quiet && QUIET_SKIPS.has(outboxEventType(body))))
      .map((body) => (JSON.parse(body) as QueueBody).event);
    if (events.length === 0) return;
    const { quietEpoch } = await this.hub(room.org_id).publish(room.id, events);
    if (quietEpoch !== undefined) this.hubWentQuiet(quietEpoch);
  }

  private hubRpc: HubRpc | undefined;

  /** The org hub's stub, made once per object. */
  private hub(orgId: string): HubRpc {
    this.hubRpc ??= hubStub(this.env, orgId);
    return this.hubRpc;
  }
}

function dedupe(participants: ParticipantSpec[]): ParticipantSpec[] {
  const byId = new Map<string, ParticipantSpec>();
  for (const p of participants) if (!byId.has(p.accountId)) byId.set(p.accountId, p);
  return [...byId.values()];
}

/** Why a participant may not post, or null when it may: gone from the room, deleted, or an observer. */
function postingRefusal(author: ParticipantRow | undefined): string | null {
  if (!author) return "the author is not a participant of this room";
  if (author.deleted) return "the author's account was deleted";
  return author.role === "observer" ? "observers cannot post" : null;
}

/**
 * Why an agent's automatic answer (a flow step's post or stream) cannot be posted: any reason it could not post, or
 * its `autoRespond` turned off since the trigger (runs queued before then end failed rather than answer).
 */
function answerRefusal(author: ParticipantRow | undefined): string | null {
  if (!author) return "the agent is no longer a participant of this room";
  if (author.deleted) return "the agent's account was deleted";
  if (author.role === "observer") return "the agent is an observer: observers cannot post";
  return author.auto_respond === 1 ? null : "the agent no longer responds automatically";
}

function toParticipant(row: ParticipantRow): Participant {
  return {
    accountId: row.account_id,
    role: row.role as Role,
    autoRespond: row.auto_respond === 1,
    joinedAt: row.joined_at,
  };
}

function roomEvent(record: RoomRecord, event: string, data: unknown) {
  return createEvent({
    orgId: record.room.orgId,
    source: "conversations",
    resource: "room",
    event,
    resourceId: record.room.id,
    data,
  });
}

function conversationEvent(record: ConversationRecord, event: string, data: unknown) {
  return createEvent({
    orgId: record.conversation.orgId,
    source: "conversations",
    resource: "conversation",
    event,
    resourceId: record.conversation.id,
    data,
  });
}
