import type { Bindings } from "../env";
import { unwrap } from "../errors";
import { MESSAGE_LIMITS, type Message } from "../protocol/messages";
import { roomStub, type RoomRpc } from "../room/client";
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
 * The least time between two deltas of one stream. The first delta goes at once (first-token latency); after it,
 * the tokens of each interval go in one delta, so a room sends at most ~33 events per second per stream whatever
 * the model's rate. A room that reads slowly gets fewer, larger deltas: the next one waits for the room to take the
 * one before.
 */
const DELTA_INTERVAL_MS = 30;

/**
 * Streams a model's reply through the conversation's room. The deltas go through one byte stream to the room (one
 * call for the whole reply; see `DeltaPipe`): the first as soon as it comes, then the tokens of each
 * `DELTA_INTERVAL_MS` together. The room closes the stream with one `bot` message, or with the model's error (a
 * failure, a timeout, garbage, no text). Failures to reach the room are thrown, so the step is retried; the retry
 * restarts the stream or finds the reply.
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

  // Opened before the model is asked, so the first token finds it ready.
  const pipe = new DeltaPipe(() => roomStub(env, input.roomId), input.streamId, opened.next);
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
        await pipe.send(delta);
        const wait = DELTA_INTERVAL_MS - (Date.now() - started);
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
  if (!roomFailure && pending !== "") await pump();
  const final = await pipe.close();
  if (roomFailure) throw roomFailure;
  if (controller.signal.aborted) error ??= "the model timed out";

  const closed = unwrap(await pipe.room.closeStream(input.streamId, error, final));
  return { message: closed.message, error };
}

/**
 * The deltas of one stream on their way to the room: frames (a JSON string and a newline) written to a byte stream
 * the room reads in one `pipeStream` call. `send` resolves once the room has taken the frame. The pipe counts what
 * it sent: should the room go away mid-stream (a reset; an eviction waits for the pipe to end), the next `send`
 * opens a new pipe from there, through a new stub (a stub whose object broke stays broken), and the room, if it lost
 * deltas, takes the whole text and sends it on as a snapshot. A room that forgot the stream itself
 * (restarted before it saved any of it) fails the send; the step's retry opens the stream again.
 */
class DeltaPipe {
  /** The index of the next delta, and the text sent so far. */
  private next: number;
  private text = "";
  private current: { writer: WritableStreamDefaultWriter<Uint8Array>; broken: boolean } | null = null;
  /** Every pipe's answer, in order; `close` waits for them. */
  private answers: Promise<void>[] = [];
  private failure: Error | null = null;
  private readonly encoder = new TextEncoder();

  /** The room's stub: a new one after a pipe broke. */
  room: RoomRpc;

  constructor(
    private readonly connect: () => RoomRpc,
    private readonly streamId: string,
    next: number,
  ) {
    this.room = connect();
    this.next = next;
    this.open();
  }

  async send(delta: string): Promise<void> {
    if (this.failure) throw this.failure;
    if (!this.current || this.current.broken) {
      this.room = this.connect();
      this.open();
    }
    const current = this.current!;
    const frame = this.encoder.encode(`${JSON.stringify(delta)}\n`);
    this.next++;
    this.text += delta;
    // A frame lost with a broken pipe is in `text`: the next pipe's snapshot carries it.
    await current.writer.write(frame).catch(() => {
      current.broken = true;
    });
    if (this.failure) throw this.failure;
  }

  /** Ends the pipe; answers where the stream is, for `closeStream` (which puts back anything the room lost). */
  async close(): Promise<{ index: number; text: string }> {
    if (this.current && !this.current.broken) await this.current.writer.close().catch(() => {});
    await Promise.all(this.answers);
    if (this.failure) throw this.failure;
    return { index: this.next, text: this.text };
  }

  private open(): void {
    const { readable, writable } = new IdentityTransformStream();
    const current = { writer: writable.getWriter(), broken: false };
    this.current = current;
    const answer = this.room.pipeStream(this.streamId, { index: this.next, sent: this.text }, readable);
    this.answers.push(
      answer.then(
        (result) => {
          // A pipe answers when it ends: before `close`, only when the room refused the rest of it.
          if (!result.ok) this.failure = new Error(`the room lost the stream: ${result.error.message}`);
          current.broken = true;
        },
        () => {
          current.broken = true;
          current.writer.abort().catch(() => {});
        },
      ),
    );
  }
}
