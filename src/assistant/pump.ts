import type { Bindings } from "../env";
import { numberSetting } from "../lib/settings";
import { MESSAGE_LIMITS } from "../protocol/messages";
import { ModelError, streamModel, type ChatMessage } from "./models";

const DEFAULT_TIMEOUT_MS = 120_000;
const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
/**
 * The least time between two deltas of one stream. The first delta goes at once (first-token latency); after it,
 * the tokens of each interval go in one delta, so a room sends at most ~33 events per second per stream whatever
 * the model's rate.
 */
const DELTA_INTERVAL_MS = 30;

/**
 * How a pumped reply ended: `stopped` when `emit` refused a delta (the stream went); else the model's error, if any
 * (for the room's clients), with the provider's own words in `detail` (for the run and the log).
 */
export interface PumpOutcome {
  stopped: boolean;
  error?: string;
  detail?: string;
}

/**
 * Calls a model and hands its reply to `emit` as deltas: the first as soon as it comes, then the tokens of each
 * `DELTA_INTERVAL_MS` together, cut at the message text limit. A model that fails, streams garbage, runs past
 * `MODEL_TIMEOUT_MS` (120 s) or stays silent for `MODEL_IDLE_TIMEOUT_MS` (30 s) ends the reply with an error; what
 * it sent before stands. `emit` answering false stops the call.
 */
export async function pumpModel(
  env: Bindings,
  model: string,
  messages: ChatMessage[],
  emit: (delta: string) => boolean,
): Promise<PumpOutcome> {
  const controller = new AbortController();
  // Limits of more than 0 ms.
  const timeoutMs = numberSetting(env.MODEL_TIMEOUT_MS, DEFAULT_TIMEOUT_MS, Number.MIN_VALUE);
  const timeout = setTimeout(() => controller.abort("timeout"), timeoutMs);
  // One timer watches for silence, re-armed for what is left of the idle time (not one timer per token).
  const idleMs = numberSetting(env.MODEL_IDLE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS, Number.MIN_VALUE);
  let lastTokenAt = Date.now();
  let idle: ReturnType<typeof setTimeout>;
  const watchIdle = () => {
    const silentFor = Date.now() - lastTokenAt;
    if (silentFor >= idleMs) controller.abort("idle");
    else idle = setTimeout(watchIdle, idleMs - silentFor);
  };
  idle = setTimeout(watchIdle, idleMs);

  let pending = "";
  let sentAt = -Infinity;
  let flushing: ReturnType<typeof setTimeout> | null = null;
  let stopped = false;
  const flush = () => {
    flushing = null;
    if (pending === "" || stopped) return;
    const delta = pending;
    pending = "";
    sentAt = Date.now();
    if (!emit(delta)) {
      stopped = true;
      controller.abort("stopped");
    }
  };

  let length = 0;
  let error: string | undefined;
  let detail: string | undefined;
  try {
    await streamModel(env, model, messages, controller.signal, (delta) => {
      lastTokenAt = Date.now();
      const piece = delta.slice(0, MESSAGE_LIMITS.textChars - length);
      length += piece.length;
      pending += piece;
      const wait = DELTA_INTERVAL_MS - (lastTokenAt - sentAt);
      if (wait <= 0) flush();
      else flushing ??= setTimeout(flush, wait);
      return length < MESSAGE_LIMITS.textChars && !stopped;
    });
  } catch (failure) {
    if (!controller.signal.aborted) {
      error = failure instanceof ModelError ? failure.message : "the model failed";
      detail = failure instanceof ModelError ? failure.detail : String(failure);
    }
  } finally {
    clearTimeout(timeout);
    clearTimeout(idle);
    if (flushing) clearTimeout(flushing);
  }
  flush();
  if (stopped) return { stopped };
  if (controller.signal.aborted) error ??= "the model timed out";
  return { stopped, ...(error ? { error } : {}), ...(detail ? { detail } : {}) };
}
