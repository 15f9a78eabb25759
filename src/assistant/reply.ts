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
const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
/**
 * The least time between two appends of one stream. The first delta goes at once (first-token latency); after it,
 * the tokens of each interval go in one append, so a room sees at most ~33 appends per second per stream whatever
 * the model's rate: appends cost the room a call, a broadcast and a write each, tokens cost nothing more.
 */
const APPEND_INTERVAL_MS = 30;
/**
 * A room that answers slowly is busy (many streams at once): the interval grows to this many times the append's round
 * trip, at most `MAX_APPEND_INTERVAL_MS`, so a loaded room gets fewer, larger appends.
 */
const LOAD_FACTOR = 4;
const MAX_APPEND_INTERVAL_MS = 250;

/**
 * Streams a model's reply through the conversation's room. The first delta goes to the room as soon as it comes;
 * then the deltas of each `APPEND_INTERVAL_MS` (longer when the room answers slowly) go together. The room closes the
 * stream with one `bot` message, or with the model's error (a failure, a timeout, garbage, no text). Failures to
 * reach the room are thrown, so the step is retried; the retry restarts the stream or finds the reply.
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
  // One timer watches for silence, re-armed for what is left of the idle time (not one timer per token).
  const idleMs = limit("MODEL_IDLE_TIMEOUT_MS", DEFAULT_IDLE_TIMEOUT_MS);
  let lastTokenAt = Date.now();
  let idle: ReturnType<typeof setTimeout>;
  const watchIdle = () => {
    const silentFor = Date.now() - lastTokenAt;
    if (silentFor >= idleMs) controller.abort("idle");
    else idle = setTimeout(watchIdle, idleMs - silentFor);
  };
  idle = setTimeout(watchIdle, idleMs);

  let pending = "";
  let length = 0;
  // What the room has acknowledged: the text, and the index its next delta gets.
  let sent = "";
  let next = opened.next;
  let sending: Promise<void> | null = null;
  let roomFailure: unknown = null;
  const pump = async () => {
    try {
      while (pending !== "") {
        const delta = pending;
        pending = "";
        const started = Date.now();
        let appended = await room.appendStream(input.streamId, delta, next);
        // A room evicted since its last save lost the deltas after it: give it the whole text.
        if (!appended.ok && appended.error.code === "CONFLICT") {
          appended = await room.appendStream(input.streamId, delta, next, sent);
        }
        // A room restarted before the stream's first delta forgot it: the step's retry opens it again.
        if (!appended.ok) throw new Error(`the room lost the stream: ${appended.error.message}`);
        sent += delta;
        next = appended.value.index + 1;
        const took = Date.now() - started;
        const wait = Math.min(MAX_APPEND_INTERVAL_MS, Math.max(APPEND_INTERVAL_MS, LOAD_FACTOR * took)) - took;
        if (wait > 0 && !controller.signal.aborted) await scheduler.wait(wait);
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
      lastTokenAt = Date.now();
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

  const closed = unwrap(await room.closeStream(input.streamId, error, { index: next, text: sent }));
  return { message: closed.message, error };
}
