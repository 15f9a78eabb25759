import { streamText, type LanguageModel } from "ai";
import { createWorkersAI } from "workers-ai-provider";
import type { Bindings } from "../env";
import { echoReply } from "./echo";
import { streamOpenAICompatible } from "./openai";

/** One message of a model prompt. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** The model used when neither the step nor the agent names one: offline, so `npm run dev` needs no account. */
export const DEFAULT_MODEL = "local:echo";

/**
 * A model failure. Its message says what went wrong without the provider's own words, and is what the room's clients
 * see (the stream's `error`); `detail` has the provider's words (its error message, a connection error), for the
 * flow run's `error` and the log, which only the org's operators read.
 */
export class ModelError extends Error {
  override readonly name = "ModelError";

  constructor(
    message: string,
    readonly detail?: string,
  ) {
    super(message);
  }
}

/**
 * Streams a model's reply to `onDelta` as text deltas; `onDelta` answering false stops the call. `model` is
 * `provider:model`: `local:echo` (built in), `openai:<model>` (any OpenAI-compatible server at `OPENAI_BASE_URL`,
 * through a direct streaming client), `workers-ai:<model>` (the `AI` binding, through the AI SDK). Errors and garbage
 * surface as a thrown `ModelError`; `signal` aborts the call.
 */
export async function streamModel(
  env: Bindings,
  model: string,
  messages: ChatMessage[],
  signal: AbortSignal,
  onDelta: (delta: string) => boolean,
): Promise<void> {
  const colon = model.indexOf(":");
  const provider = model.slice(0, colon);
  const name = model.slice(colon + 1);
  if (provider === "local") {
    if (name !== "echo") throw new ModelError(`unknown local model '${name}'`);
    await echoReply(messages, signal, onDelta);
    return;
  }
  if (provider === "openai") {
    if (!env.OPENAI_BASE_URL) throw new ModelError("OPENAI_BASE_URL is not configured");
    const apiKey = env.OPENAI_API_KEY || undefined;
    await streamOpenAICompatible(env.OPENAI_BASE_URL, apiKey, name, messages, signal, onDelta);
    return;
  }
  // The leading system message is the instructions; later ones (system messages of the conversation) stay in place.
  const [first, ...rest] = messages;
  const instructions = first?.role === "system" ? first.content : undefined;
  const result = streamText({
    model: languageModel(env, provider, name),
    instructions,
    messages: instructions === undefined ? messages : rest,
    allowSystemInMessages: true,
    abortSignal: signal,
    maxRetries: 0,
    onError: () => {}, // errors arrive as `error` parts below, and end the stream with a short message
  });
  for await (const part of result.fullStream) {
    if (part.type === "text-delta") {
      if (part.text && !onDelta(part.text)) return;
    } else if (part.type === "error") {
      throw describeError(part.error);
    } else if (part.type === "abort") {
      throw new ModelError("the model call was aborted");
    }
  }
}

function languageModel(env: Bindings, provider: string, name: string): LanguageModel {
  if (provider === "workers-ai") {
    if (!env.AI) throw new ModelError("the AI binding is not configured");
    return createWorkersAI({ binding: env.AI })(name as Parameters<ReturnType<typeof createWorkersAI>>[0]);
  }
  throw new ModelError(`unknown model provider '${provider}'`);
}

/** A provider error as a `ModelError`: its status, and its message as the detail (never a stack). */
function describeError(error: unknown): ModelError {
  const { statusCode: status, message } = (error && typeof error === "object" ? error : {}) as {
    statusCode?: unknown;
    message?: unknown;
  };
  const detail = typeof message === "string" ? message.slice(0, 200) : undefined;
  return new ModelError(typeof status === "number" ? `model answered ${status}` : "the model failed", detail);
}
