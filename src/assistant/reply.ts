import type { Bindings } from "../env";
import { unwrap } from "../errors";
import type { Message } from "../protocol/messages";
import { roomStub } from "../room/client";

/**
 * What the room needs to stream an assistant reply: where it goes, who speaks, which model, and what the prompt is
 * made of (the room adds the conversation's recent history, which it holds).
 */
export interface ReplyRequest {
  conversationId: string;
  agentId: string;
  /** The stream's id, also the reply's `clientMessageId`: a retried step finds the reply it already posted. */
  streamId: string;
  model: string;
  /** The agent's and the step's instructions, for the system message. */
  instructions: string[];
  /** The history the prompt carries ends before this seq (the message after the trigger); the latest without it. */
  beforeSeq?: number;
  /**
   * Whether the step asks again (a retry): a stream the room does not know may then have sent deltas before a reset
   * made the room forget it, and the reply opens it past them (see `StreamLog.open`).
   */
  retried?: boolean;
}

/** A reply request and the room it goes to. */
export interface ReplyInput extends ReplyRequest {
  orgId: string;
  roomId: string;
}

/** The outcome of a reply: the posted message, or the error the stream ended with. */
export interface ReplyOutcome {
  message: Message | null;
  error?: string;
}

/**
 * Streams a model's reply through the conversation's room, in one call: the room calls the model and sends its
 * deltas to its sockets as they come, then commits one `bot` message or ends the stream with the model's error (see
 * `Room.assistantReply`). Failures to reach the room are thrown, so the step is retried; the retry finds the reply or
 * streams it again.
 */
export async function streamReply(env: Bindings, { orgId, roomId, ...request }: ReplyInput): Promise<ReplyOutcome> {
  return unwrap(await roomStub(env, roomId).assistantReply({ orgId }, request));
}
