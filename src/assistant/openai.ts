import { readLimited } from "../lib/bytes";
import { LineSplitter } from "../lib/lines";
import { ModelError, type ChatMessage } from "./models";

/** The largest whole (not streamed) answer read: a message's text is at most 32,768 characters. */
const WHOLE_ANSWER_BYTES = 1024 * 1024;

/**
 * Streams a chat completion from an OpenAI-compatible server (`POST {baseUrl}/chat/completions` with
 * `stream: true`), handing the content deltas of its Server-Sent Events to `onDelta` as they are read; `onDelta`
 * answering false stops the call. A direct client rather than the AI SDK's: the SDK's stream pipeline added 5-15 ms
 * before the first token (measured), the whole latency budget of a reply. A callback rather than an async generator:
 * a delta through a generator (two, with `streamModel`'s) costs several promises.
 */
export async function streamOpenAICompatible(
  baseUrl: string,
  apiKey: string | undefined,
  model: string,
  messages: ChatMessage[],
  signal: AbortSignal,
  onDelta: (delta: string) => boolean,
): Promise<void> {
  const request = () =>
    fetch(`${baseUrl.replace(/\/+$/, "")}/chat/completions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "text/event-stream",
        ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}),
      },
      body: JSON.stringify({ model, messages, stream: true }),
      signal,
    });
  let response: Response;
  try {
    // A pooled keep-alive connection the server closed meanwhile fails before any answer ("Network connection
    // lost"): one more try, on a fresh connection. At worst the model is asked twice; only one answer is read.
    response = await request().catch((error) => {
      if (signal.aborted) throw error;
      return request();
    });
  } catch (error) {
    if (signal.aborted) throw error;
    throw new ModelError(
      "the model server could not be reached",
      error instanceof Error ? error.message : String(error),
    );
  }
  if (!response.ok || !response.body) {
    throw new ModelError(`model answered ${response.status}`, await errorMessage(response));
  }
  // A server (or proxy) that does not stream answers the whole completion at once: one delta.
  if (/^application\/json\b/i.test(response.headers.get("content-type") ?? "")) {
    const body = await readLimited(
      response.body,
      WHOLE_ANSWER_BYTES,
      () => new ModelError("the model's answer is too large"),
    );
    const content = wholeContentOf(new TextDecoder().decode(body));
    if (content) onDelta(content);
    return;
  }
  // Bytes decoded here rather than through a TextDecoderStream: one stream stage less per chunk.
  const reader = response.body.getReader();
  const lines = new LineSplitter();
  let data: string[] = [];
  /** Takes one line of the event stream; answers an event's payload (its data lines joined) when a blank line ends it. */
  const take = (raw: string): string | null => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    if (line !== "" || data.length === 0) return null;
    const payload = data.join("\n");
    data = [];
    return payload;
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (const line of lines.push(value)) {
        const payload = take(line);
        if (payload === null) continue;
        if (payload === "[DONE]") return;
        const delta = contentOf(payload);
        if (delta && !onDelta(delta)) return;
      }
    }
  } finally {
    reader.releaseLock();
    await response.body.cancel().catch(() => {});
  }
  // A last event without its closing blank line (or its last line without a newline) still counts.
  take(lines.end());
  const payload = take("");
  if (payload !== null && payload !== "[DONE]") {
    const delta = contentOf(payload);
    if (delta) onDelta(delta);
  }
}

/** The content delta of one streamed chunk; an error chunk or anything that is not a chunk is a `ModelError`. */
function contentOf(payload: string): string {
  const content = parseAnswer(payload, "event", "a chunk").choices?.[0]?.delta?.content;
  return typeof content === "string" ? content : "";
}

/** The text of a whole (not streamed) completion; an error or anything that is not a completion is a `ModelError`. */
function wholeContentOf(payload: string): string {
  const content = parseAnswer(payload, "answer", "a completion").choices?.[0]?.message?.content;
  return typeof content === "string" ? content : "";
}

interface Answer {
  choices?: { delta?: { content?: unknown }; message?: { content?: unknown } }[];
  error?: { message?: unknown };
}

/** A chunk or a completion, parsed; one that is not JSON, not an object, or an error is a `ModelError`. */
function parseAnswer(payload: string, what: string, shape: string): Answer {
  let answer: Answer;
  try {
    answer = JSON.parse(payload);
  } catch {
    throw new ModelError(`the model sent an ${what} that is not JSON`);
  }
  if (!answer || typeof answer !== "object") throw new ModelError(`the model sent an ${what} that is not ${shape}`);
  if (answer.error) {
    const message = typeof answer.error.message === "string" ? answer.error.message.slice(0, 200) : "unknown error";
    throw new ModelError("the model failed", message);
  }
  return answer;
}

/** A short message from an error answer (its JSON `error.message`, else its first characters). */
async function errorMessage(response: Response): Promise<string> {
  const text = (await response.text().catch(() => "")).slice(0, 2_000);
  try {
    const message = (JSON.parse(text) as { error?: { message?: unknown } }).error?.message;
    if (typeof message === "string") return message.slice(0, 200);
  } catch {
    // not JSON
  }
  return text.slice(0, 200) || response.statusText || "no details";
}
