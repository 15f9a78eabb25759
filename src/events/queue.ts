import { z } from "zod";
import { utf8Length } from "../lib/bytes";
import { isJsonObject } from "../lib/json";
import { EventSchema, EventSourceSchema, type ParleyEvent } from "../protocol/events";
import type { Conversation } from "../protocol/conversations";
import type { Room } from "../protocol/rooms";

/** A room's state at one version, as mirrored into D1. */
export interface RoomRecord {
  room: Room;
  dmKey: string | null;
  version: number;
}

/** A conversation's state at one version, as mirrored into D1. */
export interface ConversationRecord {
  conversation: Conversation;
  version: number;
  deleted: boolean;
}

/** The body of every message on the events queue: the event, and the state to mirror into D1 with it. */
export interface QueueBody {
  event: ParleyEvent;
  room?: RoomRecord;
  conversation?: ConversationRecord;
  /**
   * For a conversation's start and its messages: the room's auto-responding agents that may answer it, as of its
   * commit (never a message's author, none for a system message).
   */
  agents?: string[];
  /**
   * The event's `data.text` was left out so the body fits one queue message (a long text of characters JSON escapes
   * can take six bytes each). The consumer reads a message's text back from its room.
   */
  textOmitted?: true;
  /**
   * The room's participants were left out of `room`, and of the event's data when it is the room, so the body fits
   * one queue message (1,000 participants take about 120 KB a copy). The consumer reads the room back from its object.
   */
  participantsOmitted?: true;
}

/** Validates queue bodies at the consumer's edge; mirrors are checked for the fields the archive relies on. */
export const QueueBodySchema = z.object({
  event: EventSchema,
  room: z
    .object({
      room: z.object({ id: z.string(), orgId: z.string() }).loose(),
      dmKey: z.string().nullable(),
      version: z.number(),
    })
    .optional(),
  conversation: z
    .object({
      conversation: z.object({ id: z.string(), orgId: z.string(), roomId: z.string() }).loose(),
      version: z.number(),
      deleted: z.boolean(),
    })
    .optional(),
  agents: z.array(z.string()).max(1000).optional(),
  textOmitted: z.literal(true).optional(),
  participantsOmitted: z.literal(true).optional(),
});

const EVENT_STRINGS = ["id", "type", "topic", "orgId", "resource", "event", "resourceId", "occurredAt"] as const;
const SOURCES = new Set<unknown>(EventSourceSchema.options);

/**
 * Whether a value is a body `QueueBodySchema` takes, checked by hand. zod cannot compile its checks in Workers (code
 * generation is off there), and its parse of every body was 5% of the worker's CPU with a 2-member room at 3,000
 * msg/s. It never takes a body zod refuses (a test compares the two); what it refuses goes to zod, for zod's answer.
 */
export function isQueueBody(value: unknown): value is QueueBody {
  if (!isJsonObject(value)) return false;
  const { event, room, conversation, agents, textOmitted, participantsOmitted } = value;
  if (!isJsonObject(event) || !SOURCES.has(event.source) || !("data" in event)) return false;
  for (const key of EVENT_STRINGS) if (typeof event[key] !== "string") return false;
  if (room !== undefined) {
    if (!isJsonObject(room) || !isJsonObject(room.room) || !isFiniteNumber(room.version)) return false;
    if (typeof room.room.id !== "string" || typeof room.room.orgId !== "string") return false;
    if (typeof room.dmKey !== "string" && room.dmKey !== null) return false;
  }
  if (conversation !== undefined) {
    if (!isJsonObject(conversation) || !isJsonObject(conversation.conversation)) return false;
    const { id, orgId, roomId } = conversation.conversation;
    if (typeof id !== "string" || typeof orgId !== "string" || typeof roomId !== "string") return false;
    if (!isFiniteNumber(conversation.version) || typeof conversation.deleted !== "boolean") return false;
  }
  if (agents !== undefined) {
    if (!Array.isArray(agents) || agents.length > 1000 || !agents.every((a) => typeof a === "string")) return false;
  }
  return (
    (textOmitted === undefined || textOmitted === true) &&
    (participantsOmitted === undefined || participantsOmitted === true)
  );
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

/**
 * Several queue bodies in one events queue message, in order. A busy room sends the events of a moment this way: the
 * queue counts messages, not events (and takes at most 5,000 messages a second per queue), and locally each message
 * costs the queue broker and the consumer as much as its bytes.
 */
export interface PackedBodies {
  bodies: QueueBody[];
}

/** The most bytes of one packed message (the queue takes 128 KB a message), and the most bodies in it. */
export const PACK_BYTES = 100 * 1024;
export const PACK_BODIES = 32;
/**
 * The most bytes of a body sent on its own; a larger one goes without its message's text (`textOmitted`), then
 * without its room's participants (`participantsOmitted`).
 */
export const MESSAGE_BYTES = 120_000;

/**
 * Packs JSON queue bodies, in order, into as few messages as `PACK_BYTES` and `PACK_BODIES` allow: a run of bodies
 * becomes one `PackedBodies` text; a body on its own stays as it is.
 */
export function packBodies(bodies: string[]): string[] {
  const messages: string[] = [];
  let run: string[] = [];
  let bytes = 0;
  const close = () => {
    if (run.length > 0) messages.push(run.length === 1 ? run[0] : `{"bodies":[${run.join(",")}]}`);
    run = [];
    bytes = 0;
  };
  for (const original of bodies) {
    let body = original;
    let size = utf8Length(body) + 1;
    if (size > MESSAGE_BYTES) {
      body = shrink(body);
      size = utf8Length(body) + 1;
    }
    if (run.length === PACK_BODIES || (run.length > 0 && bytes + size > PACK_BYTES - 16)) close();
    run.push(body);
    bytes += size;
  }
  close();
  return messages;
}

/**
 * A body too large for one queue message, made smaller for the consumer to fill in again: without its message's text
 * (`textOmitted`), then, if that is not enough, without its room's participants (`participantsOmitted`).
 */
function shrink(text: string): string {
  const body = JSON.parse(text) as QueueBody;
  const data = body.event.data as { text?: unknown; participants?: unknown } | null;
  if (body.event.type === "conversation.message_posted" && typeof data?.text === "string") {
    body.event = { ...body.event, data: { ...data, text: null } };
    body.textOmitted = true;
    const shrunk = JSON.stringify(body);
    if (utf8Length(shrunk) + 1 <= MESSAGE_BYTES) return shrunk;
  }
  if (body.room) {
    body.room = { ...body.room, room: { ...body.room.room, participants: [] } };
    if (Array.isArray(data?.participants)) body.event = { ...body.event, data: { ...data, participants: [] } };
    body.participantsOmitted = true;
  }
  return JSON.stringify(body);
}

/** A queue message's content: its body, parsed when it came as text (undefined when that text is not JSON). */
export function messageContent(body: unknown): unknown {
  if (typeof body !== "string") return body;
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
}

/** The bodies a queue message carries: a packed message's, in order, or the message itself. */
export function unpackBodies(message: unknown): unknown[] {
  const bodies = (message as Partial<PackedBodies> | null)?.bodies;
  return Array.isArray(bodies) ? bodies : [message];
}
