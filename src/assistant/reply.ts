import type { Bindings } from "../env";
import { unwrap } from "../errors";
import { MESSAGE_LIMITS, type Message } from "../protocol/messages";
import { roomStub } from "../room/client";
import { ModelError, streamModel, type ChatMessage } from "./models";

/** What an assistant reply needs: where it goes, who speaks, which model, and the prompt. */
export interface ReplyInput {
  orgId: string;
  roomId: string;
  conversationId: string;
  agentId: string;
  /** The stream's id, also the reply's `clientMessageId`: a retried step finds the reply it already posted. */
  streamId: string;
  model: string;
  messages: ChatMessage[];
}

/** The outcome of a reply: the posted message, or the error the stream ended with. */
export interface ReplyOutcome {
  message: Message | null;
  error?: string;
}

const DEFAULT_TIMEOUT_MS = 120_000;
const APPEND_INTERVAL_MS = 25;
const FAST_APPEND_MS = 5;
const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

/**
 * Streams a model's reply through the conversation's room. Deltas go to the room as they come; while an append is
 * on its way the next ones gather, and when the room answers slowly (it is busy) appends are spaced 25 ms apart, so
 * a loaded room gets tokens in batches instead of one call each. The room closes the stream with one `bot` message,
 * or with the model's error (a failure, a timeout, garbage, no text). Failures to reach the room are thrown, so the
 * step is retried; the retry restarts the stream or finds the reply.
 */
export async function streamReply(env: Bindings, input: ReplyInput): Promise<ReplyOutcome> {
  const room = roomStub(env, input.roomId);
  const actor = { orgId: input.orgId };
  const opened = unwrap(await room.openStream(actor, input.conversationId, input.streamId, input.agentId));
  if (opened.message) return { message: opened.message };

  const controller = new AbortController();
  const limit = (name: "MODEL_TIMEOUT_MS" | "MODEL_IDLE_TIMEOUT_MS", fallback: number) =>
    Number(env[name]) > 0 ? Number(env[name]) : fallback;
  const timeout = setTimeout(() => controller.abort("timeout"), limit("MODEL_TIMEOUT_MS", DEFAULT_TIMEOUT_MS));
  const idleMs = limit("MODEL_IDLE_TIMEOUT_MS", DEFAULT_IDLE_TIMEOUT_MS);
  let idle = setTimeout(() => controller.abort("idle"), idleMs);

  let pending = "";
  let length = 0;
  let sending: Promise<void> | null = null;
  let roomFailure: unknown = null;
  const pump = async () => {
    try {
      while (pending !== "") {
        const delta = pending;
        pending = "";
        const started = Date.now();
        const appended = await room.appendStream(input.streamId, delta);
        // A room restarted before the stream's first delta forgot it: the step's retry opens it again.
        if (!appended.ok) throw new Error(`the room lost the stream: ${appended.error.message}`);
        // A busy room (a slow append) gets at most one append per APPEND_INTERVAL_MS: tokens go out in batches.
        const took = Date.now() - started;
        if (took > FAST_APPEND_MS && took < APPEND_INTERVAL_MS && !controller.signal.aborted) {
          await scheduler.wait(APPEND_INTERVAL_MS - took);
        }
      }
    } catch (error) {
      roomFailure = error;
      controller.abort("room");
    } finally {
      sending = null;
    }
  };

  let error: string | undefined;
  try {
    for await (const delta of streamModel(env, input.model, input.messages, controller.signal)) {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort("idle"), idleMs);
      const piece = delta.slice(0, MESSAGE_LIMITS.textChars - length);
      length += piece.length;
      pending += piece;
      sending ??= pump();
      if (length >= MESSAGE_LIMITS.textChars) break;
    }
  } catch (failure) {
    if (!controller.signal.aborted) error = failure instanceof ModelError ? failure.message : "the model failed";
  } finally {
    clearTimeout(timeout);
    clearTimeout(idle);
  }
  await sending;
  if (roomFailure) throw roomFailure;
  if (pending !== "") await pump();
  if (roomFailure) throw roomFailure;
  if (controller.signal.aborted) error ??= "the model timed out";

  const closed = unwrap(await room.closeStream(input.streamId, error));
  return { message: closed.message, error };
}
