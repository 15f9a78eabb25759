import { z } from "zod";
import type { ParleyEvent } from "./events";
import { idPattern } from "../lib/ids";
import { MESSAGE_LIMITS, MessageInputShape, requireContent, STEP_CLIENT_MESSAGE_ID, type Message } from "./messages";

/** Limits of realtime connections (contract section 8). */
export const REALTIME_LIMITS = {
  /** Largest frame a client may send, in bytes; larger closes the socket with 1009. */
  frameBytes: 64 * 1024,
  /** Subscriptions per connection. */
  subscriptions: 100,
  /** Longest topic pattern. */
  topicChars: 200,
  /** `message.post` and `typing` frames a connection may send per second, sustained. */
  postsPerSecond: 10,
  /** ... and in a burst. */
  postBurst: 20,
  /**
   * Frames of any kind a connection may send per second, sustained, and in a burst (a reconnection's 100 subscribes
   * fit): beyond them a frame gets `RATE_LIMITED` unread, and a connection that keeps on sending twice the burst more
   * is closed with 1008.
   */
  framesPerSecond: 100,
  frameBurst: 500,
  /** Most messages one `sinceSeq` subscription replays; beyond it the ack says `recovered: false`. */
  replayMessages: 5_000,
  /** A connection silent this long is sent a ping (clients ping at least every 30 s, so only a silent one gets it). */
  pingAfterMs: 60_000,
  /** A connection silent longer than this is closed. */
  idleCloseMs: 75_000,
} as const;

/**
 * A connection's budget (posts, or frames of any kind) refilled for the time since `at`: `perSecond` a second, up to
 * `burst`. The server keeps each budget so; the SDK keeps the posting one the same way, to pace its posts.
 */
export function refilled(tokens: number, at: number, now: number, perSecond: number, burst: number): number {
  return Math.min(burst, tokens + ((now - at) / 1000) * perSecond);
}

/** WebSocket close codes of the contract. */
export const CLOSE_CODES = {
  normal: 1000,
  goingAway: 1001,
  policy: 1008,
  tooLarge: 1009,
  internal: 1011,
  unauthorized: 4001,
  forbidden: 4003,
} as const;

const frameId = z.string().min(1).max(64);

/** `subscribe`: start receiving events whose topic matches; `sinceSeq` replays a conversation's messages after it. */
export const SubscribeFrameSchema = z.object({
  type: z.literal("subscribe"),
  id: frameId.optional(),
  topic: z.string().min(1).max(REALTIME_LIMITS.topicChars),
  sinceSeq: z.number().int().min(0).optional(),
});

/** `unsubscribe`: stop a subscription made with the same topic. */
export const UnsubscribeFrameSchema = z.object({
  type: z.literal("unsubscribe"),
  id: frameId.optional(),
  topic: z.string().min(1).max(REALTIME_LIMITS.topicChars),
});

/** `ping` (answered with `pong`) and `pong` (the answer to a server ping). */
export const PingFrameSchema = z.object({ type: z.literal("ping"), id: frameId.optional() });
export const PongFrameSchema = z.object({ type: z.literal("pong"), id: frameId.optional() });

/** `message.post` (room sockets): the same rules as `POST /v1/conversations/{id}/messages`. */
export const MessagePostFrameSchema = z
  .object({
    type: z.literal("message.post"),
    id: frameId.optional(),
    conversationId: z.string().min(1).max(100),
    ...MessageInputShape,
  })
  .superRefine(requireContent);

/** `typing` (room sockets): an ephemeral `conversation.typing` event to the room. */
export const TypingFrameSchema = z.object({
  type: z.literal("typing"),
  id: frameId.optional(),
  conversationId: z.string().min(1).max(100),
});

/** Every frame a client may send. */
export const ClientFrameSchema = z.discriminatedUnion("type", [
  SubscribeFrameSchema,
  UnsubscribeFrameSchema,
  PingFrameSchema,
  PongFrameSchema,
  MessagePostFrameSchema,
  TypingFrameSchema,
]);
export type ClientFrame = z.infer<typeof ClientFrameSchema>;
export type SubscribeFrame = z.infer<typeof SubscribeFrameSchema>;
export type MessagePostFrame = z.infer<typeof MessagePostFrameSchema>;

/**
 * Parses a client frame: `ClientFrameSchema.safeParse`, with a fast path for the common `message.post` frame. zod
 * cannot compile its checks in Workers (code generation is off there), and its parse of that frame was about 8% of a
 * busy room's CPU. The fast path takes only frames it can check in full and answers what zod answers for them (a
 * test compares the two); every other frame, and every invalid one, goes to zod.
 */
export function parseClientFrame(json: unknown): z.ZodSafeParseResult<ClientFrame> {
  const frame = fastMessagePost(json);
  return frame ? { success: true, data: frame } : ClientFrameSchema.safeParse(json);
}

const FAST_POST_KEYS = new Set(["type", "id", "conversationId", "text", "clientMessageId", "authorId"]);
const ACCOUNT_ID = idPattern("acc");

/** A valid `message.post` frame with text and no data or attachments, or null for zod to decide. */
export function fastMessagePost(json: unknown): MessagePostFrame | null {
  if (typeof json !== "object" || json === null) return null;
  const f = json as Record<string, unknown>;
  if (f.type !== "message.post") return null;
  for (const key in f) if (!FAST_POST_KEYS.has(key)) return null;
  const { id, conversationId, text, clientMessageId, authorId } = f;
  if (!within(text, 1, MESSAGE_LIMITS.textChars) || !within(conversationId, 1, 100)) return null;
  if (id !== undefined && !within(id, 1, 64)) return null;
  if (clientMessageId !== undefined && !within(clientMessageId, 1, MESSAGE_LIMITS.clientMessageIdChars)) return null;
  if (clientMessageId !== undefined && STEP_CLIENT_MESSAGE_ID.test(clientMessageId)) return null;
  if (authorId !== undefined && !(typeof authorId === "string" && ACCOUNT_ID.test(authorId))) return null;
  const frame: MessagePostFrame = { type: "message.post", conversationId, text };
  if (id !== undefined) frame.id = id;
  if (clientMessageId !== undefined) frame.clientMessageId = clientMessageId;
  if (authorId !== undefined) frame.authorId = authorId;
  return frame;
}

/** Whether a value is a string of `min` to `max` UTF-16 code units (as zod counts). */
function within(value: unknown, min: number, max: number): value is string {
  return typeof value === "string" && value.length >= min && value.length <= max;
}

/** Frames the server sends. */
export type ServerFrame =
  | { type: "ack"; id: string; message?: Message; recovered?: boolean; lastSeq?: number; topic?: string }
  | { type: "event"; topic: string; event: ParleyEvent }
  | {
      type: "error";
      id?: string;
      error: { code: string; message: string; details?: { path: string; message: string }[] };
    }
  | { type: "ping" }
  | { type: "pong"; id?: string };

/** The exact text of a client ping, answered by the runtime without waking a hibernated object. */
export const PING_TEXT = JSON.stringify({ type: "ping" });
/** The exact text of the pong that answers it. */
export const PONG_TEXT = JSON.stringify({ type: "pong" });
