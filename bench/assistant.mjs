#!/usr/bin/env node
// `npm run bench:assistant`: what Parley adds between a model's tokens and a subscribed client, side by side with the
// same model server read directly.
//
// Runs an OpenAI-compatible model server in this process (test/helpers/model-server.ts: `echo@<ms>` streams a reply a
// word at a time, <ms> apart) and starts its own `wrangler dev` (scripts/dev.mjs, free ports, fresh state) with
// OPENAI_BASE_URL pointing at it. Sets up, through the public API, an org, a user, an agent with model
// `openai:echo@<ms>`, a room holding both, N conversations, and one room socket per conversation subscribed to its
// `message_stream` topic. The model server tells the bench, on the same clock, when each request arrived and when
// each token was written. Then, for 1 stream at a time and for N streams at once:
//   direct  the bench POSTs /v1/chat/completions (stream: true) to the model server and reads the SSE itself;
//   floor   a bare hibernating Durable Object on the same runtime (bench/model-floor/, its own `wrangler dev`, run and
//           stopped before Parley starts) asks the model and sends each delta to a socket per stream: no queue,
//           Workflow, D1 or storage, so its overhead over direct is the runtime's own (wrangler's proxy, the outbound
//           fetch, the socket) and Parley's over the floor is Parley's;
//   parley  the bench posts a user message per conversation; the agent's flow asks the model, the room broadcasts
//           `message_stream` deltas to the sockets.
// First-token latency runs from the moment the model server has written the first token (at once after reading the
// request, unless BENCH_FIRST_TOKEN_DELAY_MS) to the moment the client has it: the same span on both paths, so
// Parley's trigger pipeline (queue, workflow) is left out; it is shown apart (post -> first token). Tokens/s per
// stream: (tokens - 1) / (last token received - first token received).
// Per-token delay: for every token, received by the client - written by the model server. Server CPU per stream: the
// CPU time of wrangler dev's workerd processes over a measured Parley run, divided by its streams: the whole cost of
// a reply (post, queue, D1, Workflow engine, room), and a figure that swings less than latency on a loaded machine.
// Prints a table, writes JSON to bench/.results/. Any non-2xx answer, missing or wrong stream fails the run (exit 1).
//
// Environment (all optional):
//   BENCH_TOKEN_DELAY_MS   ms between the model's tokens (default 20: 50 tokens/s, a fast hosted model)
//   BENCH_TOKENS           tokens per reply, at least 4 (default 50)
//   BENCH_FIRST_TOKEN_DELAY_MS  ms the model waits before its first token (default 0; hosted models take 200-1,000)
//   BENCH_REPEATS          streams one after the other at concurrency 1 (default 20)
//   BENCH_CONCURRENCY      streams at once in the concurrent run, one per conversation (default 50)
//   BENCH_ROUNDS           rounds of the concurrent run (default 2)
//   BENCH_WARMUP           untimed streams one at a time before measuring; a concurrent round follows (default 3)
//   BENCH_PROFILE=0        skip the profiled round: after the measurements, one more concurrent round runs while the
//                          worker is CPU-profiled through the inspector (untimed; its summary goes to the JSON)
//   BENCH_KEEP=1           keep the temporary state directory and the server log
//   BENCH_IN_PLACE=1       run the app from the working tree instead of a snapshot of it (see snapshotApp)
//   BENCH_LOG_LEVEL        passed to wrangler dev as --log-level
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import WebSocket from "ws";
import {
  intEnv,
  killProcessGroupNow,
  log,
  logTail,
  machineInfo,
  percentile,
  profileWorker,
  refreshWorkerd,
  reloadsIn,
  root,
  saveResults,
  serverCpuMs,
  snapshotApp,
  startDevServer,
  startWorker,
  stopProcessGroup,
  workerdPids,
} from "./lib.mjs";

const CONFIG = {
  tokenDelayMs: intEnv("BENCH_TOKEN_DELAY_MS", 20, 0),
  tokens: intEnv("BENCH_TOKENS", 50, 4),
  // A hosted model's first token comes 200-1,000 ms after it read the prompt; this one's at once, unless set. At once,
  // 50 streams' first tokens race the other streams' trigger pipelines for the local runtime's one thread.
  firstTokenDelayMs: intEnv("BENCH_FIRST_TOKEN_DELAY_MS", 0, 0),
  repeats: intEnv("BENCH_REPEATS", 20),
  concurrency: intEnv("BENCH_CONCURRENCY", 50),
  rounds: intEnv("BENCH_ROUNDS", 2),
  warmup: intEnv("BENCH_WARMUP", 3, 0),
};
/** The model server's model: a word every `tokenDelayMs`, the first after `firstTokenDelayMs`. */
const MODEL = `echo@${CONFIG.tokenDelayMs}${CONFIG.firstTokenDelayMs > 0 ? `+${CONFIG.firstTokenDelayMs}` : ""}`;
const KEEP = process.env.BENCH_KEEP === "1";
const IN_PLACE = process.env.BENCH_IN_PLACE === "1";
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL || null;
const PROFILE = process.env.BENCH_PROFILE !== "0";
const STARTUP_TIMEOUT_MS = 90_000;
/** How long a stream may take from its trigger to its `done` event before the run fails. */
const STREAM_TIMEOUT_MS = 60_000 + CONFIG.tokens * CONFIG.tokenDelayMs;
/** Parley's first-token target: at most this factor of the direct figure plus this many ms. */
const TARGET = { factor: 1.2, plusMs: 10 };

let startModelServer;
let expectedReply;
try {
  ({ startModelServer, expectedReply } = await import("../test/helpers/model-server.ts"));
} catch (error) {
  console.error(
    `[bench] cannot load test/helpers/model-server.ts on Node ${process.version} (${error.message}); ` +
      "run the bench with `npm run bench:assistant`, which uses the project's Node 22 (it strips the types)",
  );
  process.exit(2);
}

// --- the model server: when each request arrived and each token left, by the marker opening the prompt -----------

/** Per marker: { requests, requestAt, tokenAt: [], endAt }. Only markers the bench expects are kept. */
const modelSide = new Map();

const markerOf = (prompt) => prompt.split(" ", 1)[0];

const observer = {
  request(prompt, at) {
    const record = modelSide.get(markerOf(prompt));
    if (!record) return;
    record.requests++;
    if (record.requests === 1) record.requestAt = at;
  },
  token(prompt, index, at) {
    const record = modelSide.get(markerOf(prompt));
    if (record && record.requests === 1) record.tokenAt[index] = at;
  },
  end(prompt, _tokens, at) {
    const record = modelSide.get(markerOf(prompt));
    if (record && record.requests === 1) record.endAt = at;
  },
};

let markers = 0;
const runId = randomBytes(3).toString("hex");

/** A fresh prompt whose reply has CONFIG.tokens tokens; its first word is a marker the model server's hooks key on. */
function newPrompt(phase) {
  const marker = `b${runId}-${phase}-${++markers}`;
  const filler = Array.from({ length: CONFIG.tokens - 4 }, (_, i) => `w${i + 1}`);
  const prompt = [marker, ...filler].join(" ");
  const reply = expectedReply(prompt);
  const tokens = reply.match(/\s*\S+/g);
  if (tokens.length !== CONFIG.tokens) throw new Error(`prompt of ${tokens.length} tokens, wanted ${CONFIG.tokens}`);
  // Where each token ends in the reply's text: a client has token k once it has this many characters.
  let length = 0;
  const ends = tokens.map((token) => (length += token.length));
  const record = { requests: 0, requestAt: null, tokenAt: [], endAt: null };
  modelSide.set(marker, record);
  return { marker, prompt, reply, ends, model: record };
}

// --- the app ----------------------------------------------------------------------------------------------------

const app = { pid: null, floorPid: null, stateDir: null, logPath: null };

async function stopApp() {
  const pids = [app.pid, app.floorPid];
  Object.assign(app, { pid: null, floorPid: null });
  await Promise.all(pids.map((pid) => stopProcessGroup(pid)));
}

/** Starts the floor (bench/model-floor/) with its own `wrangler dev` on free ports, asking the model server. */
async function startFloor(modelUrl) {
  return startWorker({
    name: "model-floor",
    config: join("bench", "model-floor", "wrangler.toml"),
    persistTo: join(app.stateDir, "floor-state"),
    logPath: join(app.stateDir, "floor.log"),
    vars: { OPENAI_BASE_URL: modelUrl },
    logLevel: LOG_LEVEL,
    timeoutMs: STARTUP_TIMEOUT_MS,
    onSpawn: (server) => (app.floorPid = server.pid),
  });
}

async function stopFloor() {
  const pid = app.floorPid;
  app.floorPid = null;
  await stopProcessGroup(pid);
}

class RequestFailed extends Error {
  constructor(method, path, status, body) {
    super(`${method} ${path} answered ${status}: ${body}`);
  }
}

let BASE = "";

/** One JSON request to the app; any non-2xx throws with the body. */
async function api(method, path, token, body) {
  const res = await fetch(BASE + path, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).catch((error) => {
    throw new Error(`${method} ${path} failed: ${error.cause?.message ?? error.message}`);
  });
  const text = await res.text();
  if (res.status < 200 || res.status > 299) throw new RequestFailed(method, path, res.status, text);
  return text === "" ? null : JSON.parse(text);
}

// --- room sockets -----------------------------------------------------------------------------------------------

const problems = { strayEvents: 0, socketErrors: [], unexpectedCloses: 0, modelRetries: 0 };
let closing = false;

/** Opens a room socket with the `ws` package (no permessage-deflate); rejects on a non-101 answer or a timeout. */
function connect(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error("connecting a room socket timed out"));
    }, 30_000);
    ws.once("open", () => {
      clearTimeout(timer);
      resolve(ws);
    });
    ws.once("unexpected-response", (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`the room socket upgrade answered ${res.statusCode}`));
    });
    ws.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * A socket on the room subscribed to one conversation's `message_stream` topic. `expect(stream)` makes it route the
 * next stream's events to `stream`: { deliveries: [{ at, length }], text, doneAt, done(), fail() }.
 */
async function conversationSocket(ctx, conversationId) {
  const url = `${BASE.replace(/^http/, "ws")}/v1/rooms/${ctx.roomId}/realtime?token=${encodeURIComponent(ctx.token)}`;
  const ws = await connect(url);
  const socket = { ws, conversationId, current: null, pending: new Map() };
  ws.on("message", (buf) => {
    const at = performance.now();
    const frame = JSON.parse(buf.toString());
    if (frame.type === "event" && frame.event.type === "conversation.message_stream") {
      onStreamEvent(socket, frame.event.data, at);
    } else if (frame.type === "ack" && socket.pending.has(frame.id)) {
      socket.pending.get(frame.id)(null);
    } else if (frame.type === "error") {
      problems.socketErrors.push(frame.error);
      if (frame.id && socket.pending.has(frame.id)) socket.pending.get(frame.id)(frame.error);
      socket.current?.fail(new Error(`the room socket sent an error: ${JSON.stringify(frame.error)}`));
    } else if (frame.type === "ping") {
      ws.send(JSON.stringify({ type: "pong" }));
    }
  });
  ws.on("error", (error) => problems.socketErrors.push(String(error.message)));
  ws.on("close", (code) => {
    if (closing) return;
    problems.unexpectedCloses++;
    socket.current?.fail(new Error(`a room socket closed (${code}) during a stream`));
  });
  const topic = `events.${ctx.orgId}.conversations.conversation.message_stream.${conversationId}`;
  const error = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no ack for a subscribe frame")), 15_000);
    socket.pending.set("s", (value) => {
      clearTimeout(timer);
      resolve(value);
    });
    ws.send(JSON.stringify({ type: "subscribe", id: "s", topic }));
  });
  if (error) throw new Error(`subscribing to ${topic} failed: ${JSON.stringify(error)}`);
  return socket;
}

function onStreamEvent(socket, data, at) {
  const stream = socket.current;
  if (!stream || data.conversationId !== socket.conversationId) {
    problems.strayEvents++;
    return;
  }
  stream.streamId ??= data.streamId;
  if (data.streamId !== stream.streamId) {
    problems.strayEvents++;
    return;
  }
  if (data.done) {
    stream.doneAt = at;
    if (data.error) return stream.fail(new Error(`the stream ended with an error: ${data.error}`));
    if (data.text !== stream.reply) {
      return stream.fail(new Error(`the stream's text is ${JSON.stringify(data.text)}, not the model's reply`));
    }
    return stream.done();
  }
  // A delta after a restarted stream carries the whole text so far as a snapshot.
  stream.text = data.text !== undefined ? data.text : stream.text + data.delta;
  if (stream.text.length > 0) stream.deliveries.push({ at, length: stream.text.length });
}

/** A floor socket for one slot: `{"delta"}` frames append to the current stream, `{"done":true}` ends it. */
async function floorSocket(base, slot) {
  const ws = await connect(`${base.replace(/^http/, "ws")}/sockets/${slot}`);
  const socket = { ws, slot, current: null };
  ws.on("message", (buf) => {
    const at = performance.now();
    const frame = JSON.parse(buf.toString());
    if (frame.type === "pong") return;
    const stream = socket.current;
    if (!stream) return void problems.strayEvents++;
    if (frame.done) {
      stream.doneAt = at;
      if (stream.text !== stream.reply)
        return stream.fail(new Error(`the floor relayed ${JSON.stringify(stream.text)}`));
      return stream.done();
    }
    stream.text += frame.delta;
    stream.deliveries.push({ at, length: stream.text.length });
  });
  ws.on("error", (error) => problems.socketErrors.push(String(error.message)));
  ws.on("close", (code) => {
    if (closing || socket.closing) return;
    problems.unexpectedCloses++;
    socket.current?.fail(new Error(`a floor socket closed (${code}) during a stream`));
  });
  return socket;
}

/** A stream the socket follows until `done()` or `fail()`, failing after STREAM_TIMEOUT_MS. */
function followStream(socket, prompt) {
  const stream = { reply: prompt.reply, streamId: null, text: "", deliveries: [], doneAt: null };
  stream.finished = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no complete stream for ${prompt.marker} within ${STREAM_TIMEOUT_MS / 1000} s`)),
      STREAM_TIMEOUT_MS,
    );
    stream.done = () => {
      clearTimeout(timer);
      resolve();
    };
    stream.fail = (error) => {
      clearTimeout(timer);
      reject(error);
    };
  });
  stream.finished.catch(() => {}); // observed by the caller; a failure before its request answers must not go unhandled
  socket.current = stream;
  return stream;
}

/** Has the floor ask the model for a reply on the socket's slot and follows the relayed deltas. */
async function floorStream(base, socket, phase) {
  const prompt = newPrompt(phase);
  const stream = followStream(socket, prompt);
  const startedAt = performance.now();
  try {
    const res = await fetch(`${base}/streams/${socket.slot}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: prompt.prompt }),
    });
    if (res.status !== 202) throw new Error(`the floor answered ${res.status}: ${await res.text()}`);
    await stream.finished;
  } finally {
    socket.current = null;
  }
  return analyse(prompt, startedAt, stream.deliveries, stream.doneAt);
}

// --- one stream, both ways --------------------------------------------------------------------------------------

/**
 * What the client saw of a stream, timed against the model server: first token, tokens/s, per-token delays, and with
 * `doneAt` (a socket's end-of-stream frame) how long that came after the last token.
 */
function analyse(prompt, startedAt, deliveries, doneAt = null) {
  const model = prompt.model;
  if (model.requestAt === null || model.tokenAt.length !== CONFIG.tokens) {
    throw new Error(`the model server has no complete record of ${prompt.marker}`);
  }
  const arrival = (length) => deliveries.find((d) => d.length >= length)?.at;
  const first = deliveries[0].at;
  const last = arrival(prompt.reply.length);
  if (last === undefined) throw new Error(`the client never got all of ${prompt.marker}'s text`);
  return {
    firstTokenMs: first - model.tokenAt[0],
    fromStartMs: first - startedAt,
    triggerMs: model.requestAt - startedAt,
    modelFirstTokenMs: model.tokenAt[0] - model.requestAt,
    tokensPerSecond: ((CONFIG.tokens - 1) / (last - first)) * 1000,
    modelTokensPerSecond: ((CONFIG.tokens - 1) / (model.tokenAt[CONFIG.tokens - 1] - model.tokenAt[0])) * 1000,
    tokenDelaysMs: prompt.ends.map((end, k) => arrival(end) - model.tokenAt[k]),
    deliveries: deliveries.length,
    ...(doneAt === null ? {} : { doneAfterLastMs: doneAt - deliveries.at(-1).at }),
  };
}

/** Reads a completion straight from the model server, as a client of it would. */
async function directStream(modelUrl, phase) {
  const prompt = newPrompt(phase);
  const startedAt = performance.now();
  const res = await fetch(`${modelUrl}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: MODEL,
      stream: true,
      messages: [{ role: "user", content: prompt.prompt }],
    }),
  });
  if (res.status !== 200) throw new Error(`the model server answered ${res.status}: ${await res.text()}`);
  const decoder = new TextDecoder();
  const deliveries = [];
  let buffer = "";
  let text = "";
  let done = false;
  for await (const chunk of res.body) {
    const at = performance.now();
    buffer += decoder.decode(chunk, { stream: true });
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const data = buffer.slice(0, end).replace(/^data: /, "");
      buffer = buffer.slice(end + 2);
      if (data === "[DONE]") {
        done = true;
        continue;
      }
      const content = JSON.parse(data).choices[0]?.delta?.content;
      if (content) {
        text += content;
        deliveries.push({ at, length: text.length });
      }
    }
  }
  if (!done || text !== prompt.reply) throw new Error(`direct stream ${prompt.marker}: got ${JSON.stringify(text)}`);
  return analyse(prompt, startedAt, deliveries);
}

/** Posts a user message in the socket's conversation and follows the agent's streamed reply on the socket. */
async function parleyStream(ctx, socket, phase) {
  const prompt = newPrompt(phase);
  const stream = followStream(socket, prompt);
  const startedAt = performance.now();
  try {
    await api("POST", `/v1/conversations/${socket.conversationId}/messages`, ctx.apiKey, {
      authorId: ctx.userId,
      text: prompt.prompt,
    });
    await stream.finished;
  } finally {
    socket.current = null;
  }
  if (prompt.model.requests > 1) problems.modelRetries += prompt.model.requests - 1;
  return analyse(prompt, startedAt, stream.deliveries, stream.doneAt);
}

// --- runs -------------------------------------------------------------------------------------------------------

const loopDelay = monitorEventLoopDelay({ resolution: 1 });

/**
 * Runs `count` streams one after the other, or `rounds` rounds of `width` streams at once; answers every stream. With
 * `server`, also the CPU time its workerd processes used per stream (everything a stream costs Parley: the post, the
 * queue, D1, the Workflow engine, the room; null if workerd restarted meanwhile).
 */
async function runPhase(label, { count = 1, rounds = 1, width = 1 }, one, server = null) {
  const streams = [];
  loopDelay.reset();
  loopDelay.enable();
  const pids = server && refreshWorkerd(server);
  const cpuBefore = server && serverCpuMs(server);
  const started = performance.now();
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < count; i++) {
      streams.push(...(await Promise.all(Array.from({ length: width }, (_, slot) => one(slot)))));
    }
  }
  loopDelay.disable();
  const summary = summarize(streams);
  summary.elapsedS = round3((performance.now() - started) / 1000);
  summary.benchLoopDelayP99Ms = round3(loopDelay.percentile(99) / 1e6);
  if (server) {
    const same = refreshWorkerd(server) === pids;
    summary.serverCpuMsPerStream = same ? round3((serverCpuMs(server) - cpuBefore) / streams.length) : null;
  }
  log(
    `${label}: ${streams.length} streams, first token p50 ${summary.firstTokenMs.p50} ms p99 ` +
      `${summary.firstTokenMs.p99} ms, tokens/s p50 ${summary.tokensPerSecond.p50}, ` +
      `per-token delay p50 ${summary.tokenDelayMs.p50} ms p99 ${summary.tokenDelayMs.p99} ms, ` +
      `start to first token p50 ${summary.fromStartMs.p50} ms` +
      (server ? `, server CPU ${summary.serverCpuMsPerStream ?? "?"} ms per stream` : ""),
  );
  return summary;
}

const round3 = (x) => Math.round(x * 1000) / 1000;

function stats(values) {
  const sorted = Float64Array.from(values).sort();
  return {
    n: sorted.length,
    min: round3(sorted[0]),
    p1: round3(percentile(sorted, 1)),
    p50: round3(percentile(sorted, 50)),
    p90: round3(percentile(sorted, 90)),
    p99: round3(percentile(sorted, 99)),
    max: round3(sorted[sorted.length - 1]),
    mean: round3(sorted.reduce((a, b) => a + b, 0) / sorted.length),
  };
}

function summarize(streams) {
  const pick = (key) => stats(streams.map((s) => s[key]));
  return {
    streams: streams.length,
    firstTokenMs: pick("firstTokenMs"),
    tokensPerSecond: pick("tokensPerSecond"),
    tokenDelayMs: stats(streams.flatMap((s) => s.tokenDelaysMs)),
    fromStartMs: pick("fromStartMs"),
    triggerMs: pick("triggerMs"),
    modelFirstTokenMs: pick("modelFirstTokenMs"),
    modelTokensPerSecond: pick("modelTokensPerSecond"),
    deliveriesPerStream: pick("deliveries"),
    ...(streams[0].doneAfterLastMs !== undefined ? { doneAfterLastTokenMs: pick("doneAfterLastMs") } : {}),
    // Each stream's [post -> model request, first token] in ms, by request time: whether first tokens wait in a queue
    // behind the streams asked just before them.
    byRequest: streams
      .map((s) => [Math.round(s.triggerMs * 10) / 10, Math.round(s.firstTokenMs * 10) / 10])
      .sort((a, b) => a[0] - b[0]),
  };
}

// --- setup, table, main -----------------------------------------------------------------------------------------

async function setup(adminToken) {
  const suffix = randomBytes(4).toString("hex");
  const { apiKey, org } = await api("POST", "/v1/orgs", adminToken, { name: `bench-assistant-${suffix}` });
  const user = await api("POST", "/v1/accounts", apiKey, { type: "user", name: "Bench User" });
  const agent = await api("POST", "/v1/accounts", apiKey, {
    type: "agent",
    name: "Bench Agent",
    agent: { model: `openai:${MODEL}` },
  });
  const room = await api("POST", "/v1/rooms", apiKey, {
    type: "standard",
    name: "bench",
    participants: [{ accountId: user.id }, { accountId: agent.id }],
  });
  const { token } = await api("POST", "/v1/tokens", apiKey, { accountId: user.id });
  const ctx = { orgId: org.id, apiKey, userId: user.id, agentId: agent.id, roomId: room.id, token, sockets: [] };
  for (let i = 0; i < CONFIG.concurrency; i++) {
    const conversation = await api("POST", `/v1/rooms/${room.id}/conversations`, apiKey, { name: `chat ${i}` });
    ctx.sockets.push(await conversationSocket(ctx, conversation.id));
  }
  log(
    `set up org ${org.id}, agent ${agent.id}, room ${room.id}, ${ctx.sockets.length} conversations with a socket each`,
  );
  return ctx;
}

function buildTable(results) {
  const rows = [];
  const ms = (x) => `${x.toFixed(2)} ms`;
  for (const [key, label] of [
    ["c1", "c=1"],
    ["cN", `c=${CONFIG.concurrency}`],
  ]) {
    const { direct, floor, parley } = results[key];
    /** A row comparing direct, floor and Parley; `slower(a, b)` is how many times b is slower than a. */
    const compare = (metric, values, format, slower, target) => {
      const [d, f, q] = values;
      rows.push([
        metric,
        format(d),
        format(f),
        format(q),
        `${slower(d, q).toFixed(2)}x`,
        format === ms ? `+${(q - d).toFixed(2)} ms` : "",
        target === undefined ? "" : target ? "yes" : "NO",
        `${slower(f, q).toFixed(2)}x`,
      ]);
    };
    const later = (a, b) => b / a;
    for (const p of ["p50", "p99"]) {
      const values = [direct, floor, parley].map((r) => r.firstTokenMs[p]);
      const n = p === "p50" ? ` (n=${parley.streams})` : "";
      const met = values[2] <= TARGET.factor * values[0] + TARGET.plusMs;
      compare(`first token, ${label}, ${p}${n}`, values, ms, later, met);
    }
    for (const [p, name] of [
      ["p50", "p50"],
      ["p1", "slowest 1%"],
    ]) {
      const values = [direct, floor, parley].map((r) => r.tokensPerSecond[p]);
      compare(
        `tokens/s per stream, ${label}, ${name}`,
        values,
        (x) => x.toFixed(1),
        (a, b) => a / b,
      );
    }
    for (const p of ["p50", "p99"]) {
      const values = [direct, floor, parley].map((r) => r.tokenDelayMs[p]);
      compare(`per-token delay, ${label}, ${p}`, values, ms, later);
    }
    for (const p of ["p50", "p99"]) {
      rows.push([`post -> first token, ${label}, ${p} (info)`, "", "", ms(parley.fromStartMs[p]), "", "", "", ""]);
    }
    const cpu = parley.serverCpuMsPerStream;
    rows.push([`server CPU per stream, ${label} (info)`, "", "", cpu == null ? "?" : ms(cpu), "", "", "", ""]);
  }
  const target = `<= ${TARGET.factor}x + ${TARGET.plusMs} ms`;
  const header = ["metric", "direct", "floor", "Parley", "ratio", "overhead", target, "vs floor"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** Pings every socket every 20 s, as a client keeping its sockets alive does; answers the interval to clear. */
function pingEvery20s(sockets) {
  return setInterval(() => {
    for (const socket of sockets) socket.ws.send(JSON.stringify({ type: "ping" }));
  }, 20_000);
}

/** Runs the floor's phases (warm-up, c=1, c=N) on its own server, alone on the machine, then stops it. */
async function measureFloor(modelUrl) {
  const server = await startFloor(modelUrl);
  const sockets = [];
  for (let slot = 0; slot < CONFIG.concurrency; slot++) sockets.push(await floorSocket(server.base, slot));
  const keepAlive = pingEvery20s(sockets);
  const width = sockets.length;
  const one = (phase) => (slot) => floorStream(server.base, sockets[slot], phase);
  let next = 0;
  const sequential = (phase) => () => floorStream(server.base, sockets[next++ % width], phase);
  if (CONFIG.warmup > 0) await runPhase("warm-up floor", { count: CONFIG.warmup }, sequential("wf"));
  await runPhase("warm-up floor", { width }, one("wf"));
  const c1 = await runPhase("c=1 floor", { count: CONFIG.repeats }, sequential("f1"));
  const cN = await runPhase(`c=${width} floor`, { rounds: CONFIG.rounds, width }, one("fn"));
  clearInterval(keepAlive);
  for (const socket of sockets) {
    socket.closing = true;
    socket.ws.close(1000, "floor done");
  }
  await stopFloor();
  return { c1, cN };
}

async function main() {
  const machine = machineInfo();
  log(`node ${machine.node}, ${machine.cpus} cpus (${machine.cpuModel}), load ${machine.loadAvg.join(" ")}`);
  log(`config ${JSON.stringify({ ...CONFIG, inPlace: IN_PLACE, wranglerLogLevel: LOG_LEVEL })}`);
  const startedAt = new Date();

  const model = await startModelServer(observer);
  log(`model server on ${model.url}`);
  app.stateDir = mkdtempSync(join(os.tmpdir(), "parley-bench-assistant-"));
  const floor = await measureFloor(model.url);
  const appDir = IN_PLACE ? root : snapshotApp(join(app.stateDir, "app"));
  app.logPath = join(app.stateDir, "server.log");
  const server = await startDevServer({
    appDir,
    persistTo: join(app.stateDir, "state"),
    logPath: app.logPath,
    vars: { OPENAI_BASE_URL: model.url },
    logLevel: LOG_LEVEL,
    timeoutMs: STARTUP_TIMEOUT_MS,
    onSpawn: (handle) => (app.pid = handle.pid),
  });
  BASE = server.base;
  server.workerd = workerdPids(server.pid);
  const ctx = await setup(server.adminToken);
  const keepAlive = pingEvery20s(ctx.sockets);

  const width = ctx.sockets.length;
  const sequential = (phase) => {
    let i = 0;
    return () => parleyStream(ctx, ctx.sockets[i++ % width], phase);
  };
  log(`warming up: ${CONFIG.warmup} streams one at a time, then ${width} at once (untimed)`);
  if (CONFIG.warmup > 0) {
    await runPhase("warm-up direct", { count: CONFIG.warmup, width: 1 }, () => directStream(model.url, "wd"));
    await runPhase("warm-up parley", { count: CONFIG.warmup, width: 1 }, sequential("wp"));
  }
  await runPhase("warm-up parley", { width }, (slot) => parleyStream(ctx, ctx.sockets[slot], "wp"));

  const reloadsBefore = reloadsIn(app.logPath);
  const results = { c1: { floor: floor.c1 }, cN: { floor: floor.cN } };
  results.c1.direct = await runPhase("c=1 direct", { count: CONFIG.repeats }, () => directStream(model.url, "d1"));
  results.c1.parley = await runPhase("c=1 parley", { count: CONFIG.repeats }, sequential("p1"), server);
  const shape = { rounds: CONFIG.rounds, width };
  results.cN.direct = await runPhase(`c=${width} direct`, shape, () => directStream(model.url, "dn"));
  const concurrent = (slot) => parleyStream(ctx, ctx.sockets[slot], "pn");
  results.cN.parley = await runPhase(`c=${width} parley`, shape, concurrent, server);
  const reloads = reloadsIn(app.logPath) - reloadsBefore;

  let profile = null;
  let rawProfile = null;
  if (PROFILE) {
    log(`profiling the worker through one more round of ${width} streams (untimed)`);
    try {
      ({ summary: profile, raw: rawProfile } = await profileWorker(server.inspectorPort, () =>
        runPhase("profiled round", { width }, (slot) => parleyStream(ctx, ctx.sockets[slot], "pp")),
      ));
    } catch (error) {
      log(`profiling failed, the figures stand: ${error.message}`);
    }
  }

  clearInterval(keepAlive);
  closing = true;
  for (const socket of ctx.sockets) socket.ws.close(1000, "bench done");
  await stopApp();
  await model.close();

  const table = buildTable(results);
  const loadAtEnd = os.loadavg().map((x) => x.toFixed(2));
  console.log("");
  console.log("Parley assistant streaming vs the model server read directly (same process, same clock)");
  console.log(`node ${machine.node}, wrangler ${machine.wrangler}, ${machine.cpus} cpus (${machine.cpuModel})`);
  console.log(
    `commit ${machine.commit ?? "?"}${machine.srcUncommitted ? " + uncommitted changes in src/" : ""}, ` +
      `load average at start ${machine.loadAvg.join(" ")}, at end ${loadAtEnd.join(" ")}`,
  );
  console.log(
    `model: ${CONFIG.tokens} tokens, ${CONFIG.tokenDelayMs} ms apart, the first ${CONFIG.firstTokenDelayMs} ms after ` +
      "the request; first token: the model server wrote it -> the client has it; ratio: Parley/direct, vs floor: " +
      "Parley/floor (tokens/s: the other way round), so > 1 means Parley is slower.",
  );
  console.log("");
  console.log(table);
  if (reloads > 0) console.log(`WARNING: wrangler dev reloaded the worker ${reloads} time(s) during the measurement`);
  if (profile) {
    console.log(
      `\nworker CPU in a profiled round of ${width} streams: ${(profile.busyMs / 1000).toFixed(2)} s busy in ` +
        `${(profile.wallMs / 1000).toFixed(2)} s; self time by module:`,
    );
    for (const m of profile.modules.slice(0, 10)) {
      console.log(`  ${(m.share * 100).toFixed(1).padStart(5)}%  ${m.ms.toFixed(0).padStart(6)} ms  ${m.name}`);
    }
  }
  const issues = { ...problems, socketErrors: problems.socketErrors.length };
  console.log(
    `\nstray events ${issues.strayEvents}, socket errors ${issues.socketErrors}, model retries ${issues.modelRetries}`,
  );
  console.log("");

  const file = saveResults("assistant", startedAt, {
    bench: "assistant",
    startedAt: startedAt.toISOString(),
    machine,
    config: { ...CONFIG, target: TARGET, inPlace: IN_PLACE, wranglerLogLevel: LOG_LEVEL },
    serverReloads: reloads,
    loadAvgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100),
    problems,
    results,
    profile,
    table,
  });
  if (rawProfile) {
    // Opens in Chrome DevTools (Performance panel, "Load profile") for the full call tree.
    writeFileSync(file.replace(/\.json$/, ".cpuprofile"), JSON.stringify(rawProfile));
  }
}

let exiting = false;
async function cleanupAndExit(code) {
  if (exiting) return;
  exiting = true;
  closing = true;
  await stopApp();
  if (app.stateDir && !KEEP && code !== 1) rmSync(app.stateDir, { recursive: true, force: true });
  else if (app.stateDir) log(`state and server log kept in ${app.stateDir}`);
  process.exit(code);
}

process.on("exit", () => killProcessGroupNow(app.pid));
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    log(`${signal}: stopping the app`);
    void cleanupAndExit(130);
  });
}

main().then(
  () => cleanupAndExit(0),
  (error) => {
    if (exiting) return;
    console.error(`[bench] FAILED: ${error instanceof RequestFailed ? error.message : (error.stack ?? error)}`);
    if (app.logPath) console.error(`server log tail:\n${logTail(app.logPath, 30)}`);
    void cleanupAndExit(1);
  },
);
