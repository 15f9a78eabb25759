// A real OpenAI-compatible chat completions server for tests and benchmarks, run in Node. It streams Server-Sent
// Events the way OpenAI does. The model name picks its behaviour:
//   any name      streams "Model reply to: <last user message>" a word at a time (`<name>@<ms>` sets the delay;
//                 `<name>@<ms>+<first>` also waits <first> ms before the first token, as hosted models take)
//   fail          answers 500
//   garbage       streams events that are not JSON
//   whole         does not stream: answers the whole completion as one JSON object
//   hang          sends one token, then nothing more
//   drop-once     drops the connection of the first request for a prompt without answering, then answers as usual
//   ragged        streams the usual reply with CRLF line ends, writes cut mid-line and mid-character, and no blank
//                 line and no [DONE] after its last event (what a client must still read)
// Every request body is kept; GET /requests answers them (tests find theirs by a marker in the prompt).
// An optional observer hears, on the server's clock (`performance.now()`), when each chat request was read and when
// each token of its reply was written (benchmarks time a stream from the model's side with it).
// It also plays webhook receivers for flow tests: POST /hooks/reply answers `{ text }` naming the event it got,
// /hooks/empty answers 204, /hooks/html answers HTML, /hooks/big answers 100 KB of JSON, /hooks/fail answers 500.
// GET /hook-events answers the events the hooks received.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";

/** A running model server. */
export interface ModelServer {
  /** Base URL for OPENAI_BASE_URL, ending in /v1. */
  url: string;
  server: Server;
  close(): Promise<void>;
}

interface ChatRequest {
  model: string;
  stream?: boolean;
  messages: { role: string; content: unknown }[];
}

/** Hears what the server does for each chat request; `prompt` is the request's last user message, `at` is ms. */
export interface ModelObserver {
  /** The request's body was read in full. */
  request?(prompt: string, at: number): void;
  /** Token `index` of the reply was written to the response. */
  token?(prompt: string, index: number, at: number): void;
  /** The reply ended (`[DONE]` written), after `tokens` tokens. */
  end?(prompt: string, tokens: number, at: number): void;
}

/** Starts the model server on a free port of 127.0.0.1; `observer` hears when requests arrive and tokens leave. */
export async function startModelServer(observer: ModelObserver = {}): Promise<ModelServer> {
  const requests: ChatRequest[] = [];
  const server = createServer((req, res) => {
    handle(req, res, requests, observer).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  server.unref();
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    server,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** The reply the server streams for a prompt: deterministic, so tests can assert it. */
export function expectedReply(lastUserMessage: string): string {
  return `Model reply to: ${lastUserMessage}`;
}

/** The prompts `drop-once` has dropped a request for. */
const dropped = new Set<string>();
/** The events the webhook receivers got. */
const hookEvents: unknown[] = [];

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  requests: ChatRequest[],
  observer: ModelObserver,
): Promise<void> {
  if (req.method === "GET" && req.url === "/requests") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(requests));
    return;
  }
  if (req.method === "GET" && req.url === "/hook-events") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(hookEvents));
    return;
  }
  if (req.method === "POST" && req.url?.startsWith("/hooks/")) return hook(req, res, req.url.slice("/hooks/".length));
  if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message: "not found" } }));
    return;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as ChatRequest;
  requests.push(body);
  const last = [...body.messages].reverse().find((m) => m.role === "user");
  const prompt = typeof last?.content === "string" ? last.content : "";
  observer.request?.(prompt, performance.now());
  // `name@<ms between tokens>+<ms before the first token>`, both optional.
  const [model, timing = ""] = body.model.split("@");
  const [delayText, firstText] = timing.split("+");
  const delay = delayText ? Number(delayText) : 2;
  const firstDelay = firstText ? Number(firstText) : 0;
  if (model === "drop-once" && !dropped.has(prompt)) {
    dropped.add(prompt);
    req.socket.destroy();
    return;
  }
  if (model === "fail") {
    res.writeHead(500, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message: "the model is down", type: "server_error" } }));
    return;
  }
  if (model === "whole") {
    res.writeHead(200, { "content-type": "application/json; charset=utf-8" });
    res.end(
      JSON.stringify({
        id: "chatcmpl-test",
        object: "chat.completion",
        created: Math.floor(Date.now() / 1000),
        model: body.model,
        choices: [{ index: 0, message: { role: "assistant", content: expectedReply(prompt) }, finish_reason: "stop" }],
      }),
    );
    return;
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
  const send = (data: unknown) => res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
  const chunk = (content: string | null, finish: string | null = null) => ({
    id: "chatcmpl-test",
    object: "chat.completion.chunk",
    created: Math.floor(Date.now() / 1000),
    model: body.model,
    choices: [{ index: 0, delta: content === null ? {} : { role: "assistant", content }, finish_reason: finish }],
  });
  if (model === "empty") {
    send("[DONE]");
    res.end();
    return;
  }
  if (model === "garbage") {
    send("{this is not json");
    send("]]]");
    res.end();
    return;
  }
  const tokens = expectedReply(prompt).match(/\s*\S+/g) ?? [];
  if (model === "ragged") {
    const events = tokens.map((token) => `data: ${JSON.stringify(chunk(token))}`);
    const bytes = Buffer.from(events.join("\r\n\r\n"));
    // Seven-byte writes, apart, so the client gets lines and multi-byte characters in pieces.
    for (let at = 0; at < bytes.length && !res.destroyed; at += 7) {
      res.write(bytes.subarray(at, at + 7));
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    res.end();
    return;
  }
  if (model === "hang") {
    send(chunk(tokens[0] ?? "…"));
    return; // never ends: the client's timeout must
  }
  if (firstDelay > 0) await new Promise((resolve) => setTimeout(resolve, firstDelay));
  for (const [index, token] of tokens.entries()) {
    if (res.destroyed) return;
    send(chunk(token));
    observer.token?.(prompt, index, performance.now());
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
  }
  send(chunk(null, "stop"));
  send("[DONE]");
  res.end();
  observer.end?.(prompt, tokens.length, performance.now());
}

async function hook(req: IncomingMessage, res: ServerResponse, kind: string): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const event = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { type: string; data: { text?: string } };
  hookEvents.push(event);
  if (kind === "reply") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ text: `hook got ${event.type}: ${event.data.text ?? ""}`.trim() }));
  } else if (kind === "empty") {
    res.writeHead(204).end();
  } else if (kind === "html") {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<html>not json</html>");
  } else if (kind === "long") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ text: "x".repeat(32_769) }));
  } else if (kind === "big") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ text: "x".repeat(100_000) }));
  } else {
    res.writeHead(500).end("down");
  }
}
