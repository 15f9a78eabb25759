#!/usr/bin/env node
// `npm run bench:realtime`: realtime benchmark of Parley's room sockets against two other rooms, side by side:
//   - the floor: a bare hibernating Durable Object that only broadcasts (bench/floor/), the least a room can cost;
//   - partyserver: a `Server` subclass with hibernation whose onMessage broadcasts (bench/partyserver/), what a
//     Workers developer would usually write.
// Each runs in its own `wrangler dev` on free ports with fresh local state. Parley is started like a user starts it
// (scripts/dev.mjs) and set up through its public REST API: an org, N user accounts, a standard room of N
// participants per room size, a conversation, account tokens. Its N members connect to /v1/rooms/{roomId}/realtime and
// subscribe to the conversation's message_posted topic; a sender posts with `message.post` frames on its own sockets.
//
// For rooms of 2, 100 and 1,000 members it measures, for each of the three:
//   a. send-to-receive latency (p50/p99 over every delivery at every receiver) at a fixed send rate, in rounds in
//      which the three take turns (their rooms all open), pooled per server;
//   b. the delivery ceiling: the highest rate (deliveries/s = msgs/s x members) with no loss and p99 under 100 ms,
//      found by stepping the send rate up (x2 until a step fails, then halving the gap);
//   c. memory per idle socket: RSS of the server's workerd processes before and after connecting the members of the
//      largest room, divided by their number.
// All clients live in this one Node process (so send and receive timestamps share a clock). Prints a table with the
// ratio of every figure to the floor and writes JSON to bench/.results/. See bench/README.md.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import WebSocket from "ws";
import {
  intEnv as positiveIntEnv,
  killProcessGroupNow,
  log,
  profileWorker,
  machineInfo,
  percentile,
  refreshWorkerd,
  reloadsIn,
  root,
  saveResults,
  serverCpuMs,
  sleep,
  snapshotApp,
  startDevServer,
  startWorker,
  stopProcessGroup,
  workerdPids,
} from "./lib.mjs";

/** An integer setting from the environment; 0 is allowed (e.g. no refinement steps). */
const intEnv = (name, fallback) => positiveIntEnv(name, fallback, 0);

function listEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const values = raw.split(",").map((x) => Number(x.trim()));
  if (values.some((x) => !Number.isInteger(x) || x < 1)) {
    console.error(`[bench] ${name} must be a comma-separated list of positive integers, got '${raw}'`);
    process.exit(2);
  }
  return values;
}

const CONFIG = {
  sizes: listEnv("BENCH_SIZES", [2, 100, 1000]).sort((a, b) => a - b),
  // The latency run sends `rate` msgs/s, but no more than `rateDeliveries` deliveries/s: 20 msg/s in rooms of 2 and
  // 100, 2 msg/s in a room of 1,000 (20 x 1,000 would overload even the floor on a 2-core machine, and measure a queue).
  rate: intEnv("BENCH_RATE", 20),
  rateDeliveries: intEnv("BENCH_RATE_DELIVERIES", 2000),
  durationS: intEnv("BENCH_DURATION_S", 20), // seconds of each server's latency runs, all rounds together
  latencyRounds: positiveIntEnv("BENCH_LATENCY_ROUNDS", 5), // the servers take turns, this many times each
  warmupS: intEnv("BENCH_WARMUP_S", 1),
  ceiling: process.env.BENCH_CEILING !== "0",
  stepS: intEnv("BENCH_STEP_S", 3), // seconds per ceiling step
  refineSteps: intEnv("BENCH_REFINE", 2), // steps halving the gap between the last passing and first failing rate
  maxSteps: intEnv("BENCH_MAX_STEPS", 10), // per (server, room size)
  maxRate: intEnv("BENCH_MAX_RATE", 8000), // msgs/s the ceiling search never goes beyond
  p99LimitMs: intEnv("BENCH_P99_LIMIT_MS", 100),
  connectConcurrency: intEnv("BENCH_CONNECT_CONCURRENCY", 16),
  // Parley limits `message.post` to 10/s per connection (burst 20): the sender spreads its posts over enough sockets
  // of its own account that none exceeds this many per second.
  parleyPostsPerSenderSocket: 8,
  drainMs: 3000, // after the last send, how long deliveries may still arrive before the missing ones count as lost
};
// The servers, in the order they run and are printed; `durable-floor` (opt-in) is the floor plus one SQLite write
// per message before the broadcast (bench/floor/durable.js).
const KNOWN_SERVERS = ["floor", "durable-floor", "partyserver", "parley"];
const SERVERS = [...new Set((process.env.BENCH_SERVERS || "floor,partyserver,parley").split(",").map((s) => s.trim()))]
  .filter(Boolean)
  .sort((a, b) => KNOWN_SERVERS.indexOf(a) - KNOWN_SERVERS.indexOf(b));
const KEEP = process.env.BENCH_KEEP === "1";
// BENCH_PROFILE_RATE=<msgs/s>: after Parley's latency run in each room size, one more run at that rate (untimed) while
// its worker is CPU-profiled through the inspector; the summary goes to the JSON and the raw profile beside it.
const PROFILE_RATE = intEnv("BENCH_PROFILE_RATE", 0);
// BENCH_PROFILE_SERVERS: which servers the profiled run profiles (default parley; e.g. floor,parley to compare).
const PROFILE_SERVERS = (process.env.BENCH_PROFILE_SERVERS ?? "parley").split(",").map((s) => s.trim());
const DEFLATE = process.env.BENCH_DEFLATE === "1";
const IN_PLACE = process.env.BENCH_IN_PLACE === "1";
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL || null;
const STARTUP_TIMEOUT_MS = 120_000;
const MEMORY_SOCKETS = Math.max(...CONFIG.sizes); // the idle sockets of the memory measurement: the largest room

/** A send rate in msgs/s: whole above 10, one decimal below, at least 0.5, at most BENCH_MAX_RATE. */
function clampRate(rate) {
  return Math.max(0.5, Math.min(CONFIG.maxRate, rate >= 10 ? Math.round(rate) : Math.round(rate * 10) / 10));
}

/** The send rate of the latency run in a room of `size` members. */
function rateFor(size) {
  return clampRate(Math.min(CONFIG.rate, CONFIG.rateDeliveries / size));
}

for (const name of SERVERS) {
  if (!KNOWN_SERVERS.includes(name)) {
    console.error(`[bench] BENCH_SERVERS: unknown server '${name}' (${KNOWN_SERVERS.join(", ")})`);
    process.exit(2);
  }
}
if (!SERVERS.includes("floor")) {
  console.error("[bench] BENCH_SERVERS must include floor: every figure is a ratio to it");
  process.exit(2);
}

// --- servers ----------------------------------------------------------------------------------------------------

/** Every server started by this run, by name: { name, pid, exited, exitInfo, stateDir, logPath, base }. */
const servers = new Map();
let runDir = null; // temporary directory holding every server's state and log

/** Stops a server's whole process group (node, wrangler, esbuild, workerd). */
async function stopServer(server) {
  const pid = server.pid;
  server.pid = null;
  await stopProcessGroup(pid);
}

/** Last resort on process exit: synchronous, so it works in the 'exit' handler. */
function killServersNow() {
  for (const server of servers.values()) {
    killProcessGroupNow(server.pid);
    server.pid = null;
  }
}

const serverReloads = (server) => reloadsIn(server.logPath);

async function startParley() {
  const appDir = IN_PLACE ? root : snapshotApp(join(runDir, "app"));
  if (!IN_PLACE) log(`parley runs from a snapshot of the working tree in ${appDir}`);
  return startDevServer({
    appDir,
    persistTo: join(runDir, "parley-state"),
    logPath: join(runDir, "parley.log"),
    logLevel: LOG_LEVEL,
    timeoutMs: STARTUP_TIMEOUT_MS,
    onSpawn: (server) => servers.set("parley", server),
  });
}

/** The floor or the partyserver room: `wrangler dev --config bench/{dir}/wrangler.toml`, run in place. */
async function startBenchWorker(name) {
  const config =
    name === "durable-floor" ? join("bench", "floor", "wrangler.durable.toml") : join("bench", name, "wrangler.toml");
  return startWorker({
    name,
    config,
    persistTo: join(runDir, `${name}-state`),
    logPath: join(runDir, `${name}.log`),
    logLevel: LOG_LEVEL,
    timeoutMs: STARTUP_TIMEOUT_MS,
    onSpawn: (server) => servers.set(name, server),
  });
}

// --- /proc: the memory of a server's workerd processes --------------------------------------------------------

/** Resident memory (bytes) of the server's workerd processes, summed. */
function serverRss(server) {
  let bytes = 0;
  for (const pid of server.workerd) {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      if (match) bytes += Number(match[1]) * 1024;
    } catch {
      // gone
    }
  }
  return bytes;
}

async function rssSample(server) {
  // Median of three samples half a second apart.
  const samples = [];
  for (let i = 0; i < 3; i++) {
    if (i > 0) await sleep(500);
    samples.push(serverRss(server));
  }
  return samples.sort((a, b) => a - b)[1];
}

// --- REST (Parley setup) ----------------------------------------------------------------------------------------

class RequestFailed extends Error {
  constructor(method, path, status, body) {
    super(`${method} ${path} answered ${status}: ${body}`);
  }
}

async function requestJson(base, method, path, token, body) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new Error(`${method} ${path} failed: ${error.cause?.message ?? error.message}`);
  }
  const text = await res.text();
  if (res.status < 200 || res.status > 299) throw new RequestFailed(method, path, res.status, text);
  return JSON.parse(text);
}

/** Runs `fn(item, index)` over items with at most `concurrency` in flight; answers the results in order. */
async function pool(items, concurrency, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}

/** Org, accounts, one standard room per size (its first N accounts), a conversation per room, account tokens. */
async function setupParley(server) {
  const base = server.base;
  const started = performance.now();
  const maxSize = Math.max(...CONFIG.sizes);
  const suffix = randomBytes(4).toString("hex");
  const { apiKey, org } = await requestJson(base, "POST", "/v1/orgs", server.adminToken, { name: `rt-${suffix}` });
  const accounts = await pool(
    Array.from({ length: maxSize }, (_, i) => i),
    16,
    (i) => requestJson(base, "POST", "/v1/accounts", apiKey, { type: "user", name: `Bench member ${i}` }),
  );
  const tokens = await pool(accounts, 16, async (account) => {
    const { token } = await requestJson(base, "POST", "/v1/tokens", apiKey, {
      accountId: account.id,
      ttlSeconds: 4 * 3600,
    });
    return token;
  });
  const rooms = new Map();
  for (const size of CONFIG.sizes) {
    const room = await requestJson(base, "POST", "/v1/rooms", apiKey, {
      type: "standard",
      name: `bench ${size}`,
      participants: accounts.slice(0, size).map((a) => ({ accountId: a.id })),
    });
    if (room.participants.length !== size) {
      throw new Error(`room ${room.id} has ${room.participants.length} participants, expected ${size}`);
    }
    const conversation = await requestJson(base, "POST", `/v1/rooms/${room.id}/conversations`, apiKey, {
      name: `bench ${size}`,
    });
    rooms.set(size, { roomId: room.id, conversationId: conversation.id });
  }
  log(
    `parley set up in ${((performance.now() - started) / 1000).toFixed(1)} s: org ${org.id}, ${accounts.length} ` +
      `accounts and tokens, rooms ${[...rooms.entries()].map(([n, r]) => `${r.roomId} (${n})`).join(", ")}`,
  );
  return { orgId: org.id, apiKey, accounts: accounts.map((a) => a.id), tokens, rooms };
}

// --- WebSocket clients ------------------------------------------------------------------------------------------

const redact = (url) => url.replace(/token=[^&]+/, "token=...");

/**
 * Opens a WebSocket with the `ws` package; rejects on error, a non-101 answer, early close or after a timeout.
 * Node's global WebSocket (undici) always offers permessage-deflate, which workerd accepts: every frame is then
 * deflated per socket by the server and inflated by this client, at about 140 us of client CPU per frame, which makes
 * this one process the bottleneck of a 1,000-member room. `ws` without compression costs about a quarter of that;
 * BENCH_DEFLATE=1 negotiates compression, as browsers do.
 */
function connect(url, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: DEFLATE, skipUTF8Validation: true });
    const fail = (message) => {
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on("error", () => {});
      ws.terminate();
      reject(new Error(`${redact(url)}: ${message}`));
    };
    const timer = setTimeout(() => fail("connecting timed out"), timeoutMs);
    ws.once("open", () => {
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on("error", (error) => countError(`SOCKET_ERROR ${error.code ?? error.message}`));
      resolve(ws);
    });
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => fail(`the upgrade answered ${res.statusCode}: ${body.slice(0, 500)}`));
    });
    ws.once("error", (error) => fail(`could not connect: ${error.message}`));
    ws.once("close", (code, reason) => fail(`closed before opening (${code} ${reason})`));
  });
}

/** Closes sockets and waits (up to 5 s) for their close to complete. */
async function closeAll(sockets) {
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise((resolve) => {
          if (ws.readyState === WebSocket.CLOSED) return resolve();
          const timer = setTimeout(() => {
            ws.terminate();
            resolve();
          }, 5000);
          ws.once("close", () => {
            clearTimeout(timer);
            resolve();
          });
          try {
            ws.close(1000, "bench done");
          } catch {
            clearTimeout(timer);
            resolve();
          }
        }),
    ),
  );
}

// --- deliveries -------------------------------------------------------------------------------------------------

// Every benchmark message carries `bench|{phase}|{index}|{send time, performance.now() ms}|`: in Parley as the
// message text (the event frame carries it inside the message), for the floor and partyserver as the whole frame
// (padded to the size of Parley's event frame). Receivers find it with indexOf, without parsing the frame.
const MARK = "bench|";
const IDLE_PHASE = { id: -1 };
let phase = IDLE_PHASE;
const stray = { frames: 0, lastAt: 0 }; // deliveries of a phase that is over
const problems = { errors: {}, unexpectedCloses: 0, closeCodes: {} };

function newPhase(id, receivers, messages) {
  return {
    id,
    receivers,
    messages,
    expected: receivers * messages,
    seen: new Uint8Array(receivers * messages),
    latencies: new Float64Array(receivers * messages),
    n: 0,
    over: 0, // deliveries slower than the p99 limit
    duplicates: 0,
    lastAt: 0,
  };
}

/** A number written in ASCII in bytes [from, to) of a buffer. */
const numberAt = (buf, from, to) => Number(buf.toString("latin1", from, to));
const BAR = "|".charCodeAt(0);

/** A frame (a Buffer) at receiver r; answers false when it is not a benchmark delivery. */
function onDelivery(r, buf) {
  const now = performance.now();
  const a = buf.indexOf(MARK);
  if (a < 0) return false;
  const b = buf.indexOf(BAR, a + MARK.length);
  const c = buf.indexOf(BAR, b + 1);
  const d = buf.indexOf(BAR, c + 1);
  const id = numberAt(buf, a + MARK.length, b);
  const p = phase;
  if (id !== p.id) {
    stray.frames++;
    stray.lastAt = now;
    return true;
  }
  const i = numberAt(buf, b + 1, c);
  const slot = r * p.messages + i;
  if (p.seen[slot]) {
    p.duplicates++;
    return true;
  }
  p.seen[slot] = 1;
  const latency = now - numberAt(buf, c + 1, d);
  p.latencies[p.n++] = latency;
  if (latency >= CONFIG.p99LimitMs) p.over++;
  p.lastAt = now;
  return true;
}

function countError(code) {
  problems.errors[code] = (problems.errors[code] ?? 0) + 1;
}

/** Control frames (Parley): acks resolve waiting subscriptions, errors are counted, server pings answered. */
function onControl(ws, text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    countError("UNPARSEABLE_FRAME");
    return;
  }
  if (frame.type === "ack" && ws.pending?.has(frame.id)) {
    ws.pending.get(frame.id).resolve(frame);
    ws.pending.delete(frame.id);
  } else if (frame.type === "error") {
    countError(frame.error?.code ?? "UNKNOWN");
    if (problems.firstError === undefined) problems.firstError = frame.error;
    if (frame.id && ws.pending?.has(frame.id)) {
      ws.pending.get(frame.id).reject(new Error(`error frame: ${JSON.stringify(frame.error)}`));
      ws.pending.delete(frame.id);
    }
  } else if (frame.type === "ping") {
    ws.send(PONG);
  }
}

let closingSockets = false;

function watch(ws, r) {
  ws.on("message", (buf, isBinary) => {
    if (isBinary) return;
    if (r >= 0 && onDelivery(r, buf)) return;
    if (ws.parley) onControl(ws, buf.toString());
  });
  ws.on("close", (code) => {
    if (closingSockets) return;
    problems.unexpectedCloses++;
    problems.closeCodes[code] = (problems.closeCodes[code] ?? 0) + 1;
  });
}

function request(ws, frame, timeoutMs = 15_000) {
  ws.pending ??= new Map();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for ${frame.type} ${frame.id}`)), timeoutMs);
    ws.pending.set(frame.id, {
      resolve: (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      reject: (error) => {
        clearTimeout(timer);
        reject(error);
      },
    });
    ws.send(JSON.stringify(frame));
  });
}

// --- the three servers, as the benchmark sees them ---------------------------------------------------------------

const PING = JSON.stringify({ type: "ping" });
const PONG = JSON.stringify({ type: "pong" });
let padBytes = 0; // the floor's and partyserver's frames are padded to the size of Parley's event frame

function padded(text) {
  return text.length >= padBytes ? text : text + "x".repeat(padBytes - text.length);
}

function floorTarget(server, runId, name = "floor") {
  const ws = server.base.replace(/^http/, "ws");
  return {
    name,
    server,
    room: (size) => `${runId}-${size}`,
    memberUrl: (room) => `${ws}/rooms/${room}`,
    senderUrl: (room) => `${ws}/rooms/${room}`,
    senderSockets: () => 1,
    frame: (_room, text) => padded(text),
  };
}

function partyserverTarget(server, runId) {
  const ws = server.base.replace(/^http/, "ws");
  return {
    name: "partyserver",
    server,
    room: (size) => `${runId}-${size}`,
    memberUrl: (room, i) => `${ws}/parties/bench-room/${room}?_pk=member-${i}`,
    senderUrl: (room, k) => `${ws}/parties/bench-room/${room}?_pk=sender-${k}`,
    senderSockets: () => 1,
    frame: (_room, text) => padded(text),
  };
}

function parleyTarget(server, ctx) {
  const ws = server.base.replace(/^http/, "ws");
  const url = (room, i) => `${ws}/v1/rooms/${room.roomId}/realtime?token=${encodeURIComponent(ctx.tokens[i])}`;
  return {
    name: "parley",
    server,
    parley: true,
    room: (size) => ctx.rooms.get(size),
    memberUrl: (room, i) => url(room, i),
    // The sender is member 0's account, on sockets of its own that subscribe to nothing.
    senderUrl: (room) => url(room, 0),
    senderSockets: (rate) => Math.max(1, Math.ceil(rate / CONFIG.parleyPostsPerSenderSocket)),
    async subscribe(socket, room) {
      const topic = `events.${ctx.orgId}.conversations.conversation.message_posted.${room.conversationId}`;
      await request(socket, { type: "subscribe", id: "s1", topic });
    },
    frame: (room, text) => JSON.stringify({ type: "message.post", conversationId: room.conversationId, text }),
  };
}

// Parley closes a connection silent for 75 s; its clients ping at least every 30 s (answered by the runtime without
// waking the room). Each socket pings every 20 s, spread over the interval (a tick every 100 ms pings the next
// sockets in turn), as independent clients would, not in one burst.
const parleySockets = new Set();
const PING_EVERY_MS = 20_000;
const PING_TICK_MS = 100;
let pingCursor = 0;
const keepAlive = setInterval(() => {
  const sockets = [...parleySockets];
  const count = Math.ceil((sockets.length * PING_TICK_MS) / PING_EVERY_MS);
  for (let k = 0; k < count && sockets.length > 0; k++) {
    const ws = sockets[pingCursor++ % sockets.length];
    if (ws.readyState === WebSocket.OPEN) ws.send(PING);
  }
}, PING_TICK_MS);
keepAlive.unref();

/** A room of `size` members of one target: the members' sockets (subscribed) and the sender's sockets. */
async function openRoom(target, size, { measureMemory }) {
  const room = target.room(size);
  const group = { target, room, size, members: [], senders: [], memory: null };
  group.ensureSenders = async (count) => {
    while (group.senders.length < count) {
      const k = group.senders.length;
      const socket = await connect(target.senderUrl(room, k));
      socket.parley = target.parley;
      watch(socket, -1);
      if (target.parley) parleySockets.add(socket);
      group.senders.push(socket);
    }
  };
  // The sender connects first: its connection starts the room's object, before the memory baseline.
  await group.ensureSenders(target.senderSockets(rateFor(size)));
  let before = null;
  if (measureMemory) {
    await sleep(1000);
    refreshWorkerd(target.server);
    before = await rssSample(target.server);
  }
  const started = performance.now();
  group.members = await pool(
    Array.from({ length: size }, (_, i) => i),
    CONFIG.connectConcurrency,
    async (i) => {
      const socket = await connect(target.memberUrl(room, i));
      socket.parley = target.parley;
      watch(socket, i);
      if (target.parley) {
        parleySockets.add(socket);
        await target.subscribe(socket, room);
      }
      return socket;
    },
  );
  const connectS = (performance.now() - started) / 1000;
  if (measureMemory) {
    await sleep(2000);
    const pids = target.server.workerd;
    const after = await rssSample(target.server);
    if (refreshWorkerd(target.server) !== pids)
      throw new Error(`${target.name} restarted during the memory measurement`);
    group.memory = {
      sockets: size,
      rssBeforeBytes: before,
      rssAfterBytes: after,
      bytesPerSocket: Math.round((after - before) / size),
      workerdPids: target.server.workerd,
    };
  }
  log(
    `${target.name}: ${size} members connected${target.parley ? " and subscribed" : ""} in ${connectS.toFixed(1)} s` +
      (group.memory
        ? `; workerd RSS ${mib(group.memory.rssBeforeBytes)} -> ${mib(group.memory.rssAfterBytes)} MiB, ` +
          `${kib(group.memory.bytesPerSocket)} KiB per idle socket`
        : ""),
  );
  return group;
}

async function closeRoom(group) {
  closingSockets = true;
  const sockets = [...group.members, ...group.senders];
  for (const socket of sockets) parleySockets.delete(socket);
  await closeAll(sockets);
  closingSockets = false;
}

const mib = (bytes) => (bytes / 2 ** 20).toFixed(1);
const kib = (bytes) => (bytes / 1024).toFixed(1);

// --- load -------------------------------------------------------------------------------------------------------

let phaseSeq = 0;

const round3 = (x) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);

/**
 * Sends `rate` msgs/s for `durationMs` from the group's sender sockets (round robin), then waits until every member
 * got every message, or `drainMs` after the last send. Answers the delivery statistics.
 */
async function runPhase(group, rate, durationMs, { idleBaseline = false, stopWhenFailed = true } = {}) {
  const { target, room } = group;
  await group.ensureSenders(target.senderSockets(rate));
  // The server's CPU use while idle (workerd, wrangler's proxy), subtracted from the step's CPU per message.
  let idleCpuPerMs = 0;
  if (idleBaseline) {
    refreshWorkerd(target.server);
    const before = serverCpuMs(target.server);
    await sleep(1000);
    idleCpuPerMs = Math.max(0, (serverCpuMs(target.server) - before) / 1000);
  }
  const senders = group.senders.slice(0, target.senderSockets(rate));
  const messages = Math.max(1, Math.round((rate * durationMs) / 1000));
  const p = newPhase(++phaseSeq, group.members.length, messages);
  const pids = refreshWorkerd(target.server);
  const errorsBefore = JSON.stringify(problems.errors);
  const closesBefore = problems.unexpectedCloses;
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  const cpuBefore = process.cpuUsage();
  const serverCpuBefore = serverCpuMs(target.server);
  loopDelay.enable();
  phase = p;

  const interval = 1000 / rate;
  const start = performance.now();
  // A step that has certainly failed stops early, so an overloaded server is not left with a long backlog: more than
  // 1% of the step's deliveries were slower than the p99 limit, or more than 1% are missing a second after their send.
  const failAt = Math.max(1, Math.ceil(p.expected * 0.01));
  let aborted = false;
  let maxLagMs = 0;
  let i = 0;
  while (i < messages) {
    const now = performance.now();
    const due = Math.min(messages, Math.floor((now - start) / interval) + 1);
    for (; i < due; i++) {
      const t = performance.now();
      maxLagMs = Math.max(maxLagMs, t - (start + i * interval));
      senders[i % senders.length].send(target.frame(room, `${MARK}${p.id}|${i}|${t.toFixed(3)}|`));
    }
    const sentBeforeLastSecond = Math.max(0, Math.min(i, Math.floor((now - 1000 - start) / interval) + 1));
    if (stopWhenFailed && (p.over > failAt || sentBeforeLastSecond * p.receivers - p.n > failAt)) {
      aborted = true;
      break;
    }
    if (i < messages) await sleep(Math.max(0, start + i * interval - performance.now()));
  }
  const sent = i;
  const expected = sent * p.receivers;
  const sendEnd = performance.now();
  const sendSeconds = (sendEnd - start) / 1000;
  const deadline = sendEnd + (aborted ? 500 : CONFIG.drainMs);
  while (p.n < expected && performance.now() < deadline) await sleep(5);
  const elapsedMs = performance.now() - start;
  phase = IDLE_PHASE;
  loopDelay.disable();
  const cpu = process.cpuUsage(cpuBefore);
  // CPU of the same workerd processes; null when the server restarted them during the step.
  const restarted = refreshWorkerd(target.server) !== pids;
  const serverCpu = restarted ? NaN : serverCpuMs(target.server) - serverCpuBefore;

  const sorted = p.latencies.subarray(0, p.n).sort();
  let sum = 0;
  for (const x of sorted) sum += x;
  const loss = expected - p.n;
  const stats = {
    rate,
    members: p.receivers,
    deliveriesPerSecond: rate * p.receivers,
    senderSockets: senders.length,
    messages: sent,
    aborted,
    expected,
    delivered: p.n,
    loss,
    duplicates: p.duplicates,
    p50Ms: round3(percentile(sorted, 50)),
    p90Ms: round3(percentile(sorted, 90)),
    p99Ms: round3(percentile(sorted, 99)),
    maxMs: round3(sorted[sorted.length - 1]),
    meanMs: round3(sum / sorted.length),
    achievedSendRate: Math.round((sent / Math.max(sendSeconds, interval / 1000)) * 10) / 10,
    maxSendLagMs: round3(maxLagMs),
    clientCpuPercent: Math.round(((cpu.user + cpu.system) / 1000 / elapsedMs) * 1000) / 10,
    clientLoopDelayP99Ms: round3(loopDelay.percentile(99) / 1e6),
    serverCpuPercent: restarted ? null : Math.round((serverCpu / elapsedMs) * 1000) / 10,
    serverIdleCpuPercent: idleBaseline ? Math.round(idleCpuPerMs * 1000) / 10 : null,
    // CPU of the server's workerd processes per message sent, above their idle use when it was measured.
    serverCpuMsPerMessage: restarted ? null : round3(Math.max(0, serverCpu - idleCpuPerMs * elapsedMs) / sent),
    serverRestarted: restarted,
    newErrors: JSON.stringify(problems.errors) !== errorsBefore ? { ...problems.errors } : null,
    unexpectedCloses: problems.unexpectedCloses - closesBefore,
  };
  // The step's latencies, for runs that pool several steps (not written to the results).
  Object.defineProperty(stats, "samples", { value: sorted });
  stats.pass =
    !aborted &&
    loss === 0 &&
    p.duplicates === 0 &&
    stats.p99Ms !== null &&
    stats.p99Ms < CONFIG.p99LimitMs &&
    stats.unexpectedCloses === 0 &&
    stats.newErrors === null;
  return stats;
}

/**
 * Between steps: waits until no delivery of a finished step arrived for a second (at most 20 s), then until the
 * server's workerd processes use less than 15% of a core over half a second (at most 15 s): its background work
 * (Parley's outbox, queue consumer, D1 archive) is done, and the next step starts on a quiet server.
 */
async function settle(...servers) {
  let deadline = performance.now() + 20_000;
  await sleep(300);
  while (performance.now() - stray.lastAt < 1000 && performance.now() < deadline) await sleep(100);
  deadline = performance.now() + 15_000;
  while (performance.now() < deadline) {
    const before = servers.map(serverCpuMs);
    await sleep(500);
    if (servers.every((server, i) => serverCpuMs(server) - before[i] < 75)) break;
  }
}

function describe(label, s) {
  log(
    `${label}: ${s.rate} msg/s x ${s.members} = ${s.deliveriesPerSecond.toLocaleString("en-US")} deliveries/s, ` +
      `${s.delivered}/${s.expected} delivered, p50 ${s.p50Ms?.toFixed(2)} ms, p99 ${s.p99Ms?.toFixed(2)} ms, ` +
      `max ${s.maxMs?.toFixed(1)} ms; client cpu ${s.clientCpuPercent}%, server cpu ${s.serverCpuPercent}% ` +
      `(${s.serverCpuMsPerMessage} ms/msg)` +
      (s.maxSendLagMs > 50 ? `, sender lag up to ${s.maxSendLagMs.toFixed(0)} ms` : "") +
      (s.newErrors ? `, errors ${JSON.stringify(s.newErrors)}` : "") +
      (s.unexpectedCloses ? `, ${s.unexpectedCloses} sockets closed` : "") +
      (s.duplicates ? `, ${s.duplicates} duplicates` : "") +
      (s.aborted ? `, stopped after ${s.messages} msgs` : "") +
      (s.serverRestarted ? ", SERVER RESTARTED" : "") +
      ` -> ${s.pass ? "pass" : "FAIL"}`,
  );
}

/**
 * The fixed-rate latency runs of one room size, interleaved: after a short warm-up on each server, `latencyRounds`
 * rounds in which every server sends in turn for its share of BENCH_DURATION_S (the order turning by one each
 * round), pooled per server. The machine's drift over minutes (other processes, CPU frequency, a busy neighbour)
 * then weighs on every server alike, where one run after another measured each in a different minute.
 */
async function latencyRuns(groups) {
  for (const group of CONFIG.warmupS > 0 ? groups : []) {
    await runPhase(group, rateFor(group.size), CONFIG.warmupS * 1000, { stopWhenFailed: false });
    await settle(group.target.server);
  }
  const rounds = CONFIG.latencyRounds;
  const roundMs = Math.max(1000, (CONFIG.durationS * 1000) / rounds);
  const steps = new Map(groups.map((group) => [group, []]));
  for (let k = 0; k < rounds; k++) {
    for (let j = 0; j < groups.length; j++) {
      const group = groups[(j + k) % groups.length];
      const stats = await runPhase(group, rateFor(group.size), roundMs, { idleBaseline: true, stopWhenFailed: false });
      steps.get(group).push(stats);
      await settle(group.target.server);
    }
  }
  const pooledStats = new Map();
  for (const [group, list] of steps) {
    const stats = pooled(list);
    describe(`${group.target.name} ${group.size} members, latency (${rounds} rounds)`, stats);
    pooledStats.set(group, stats);
  }
  return pooledStats;
}

/** The statistics of several steps of one server as one: percentiles over all their deliveries, sums, means. */
function pooled(steps) {
  const all = new Float64Array(steps.reduce((n, s) => n + s.samples.length, 0));
  let at = 0;
  for (const s of steps) {
    all.set(s.samples, at);
    at += s.samples.length;
  }
  all.sort();
  const sum = (key) => steps.reduce((n, s) => n + s[key], 0);
  const mean = (key) => {
    const values = steps.map((s) => s[key]).filter(Number.isFinite);
    return values.length === 0 ? null : Math.round((values.reduce((a, b) => a + b, 0) / values.length) * 10) / 10;
  };
  const cpu = steps.filter((s) => Number.isFinite(s.serverCpuMsPerMessage));
  const messages = sum("messages");
  const stats = {
    rate: steps[0].rate,
    members: steps[0].members,
    deliveriesPerSecond: steps[0].deliveriesPerSecond,
    senderSockets: steps[0].senderSockets,
    rounds: steps.length,
    messages,
    aborted: steps.some((s) => s.aborted),
    expected: sum("expected"),
    delivered: sum("delivered"),
    loss: sum("loss"),
    duplicates: sum("duplicates"),
    p50Ms: round3(percentile(all, 50)),
    p90Ms: round3(percentile(all, 90)),
    p99Ms: round3(percentile(all, 99)),
    maxMs: round3(all[all.length - 1]),
    meanMs: round3(all.reduce((a, b) => a + b, 0) / all.length),
    roundsP50Ms: steps.map((s) => s.p50Ms),
    roundsP99Ms: steps.map((s) => s.p99Ms),
    achievedSendRate: mean("achievedSendRate"),
    maxSendLagMs: Math.max(...steps.map((s) => s.maxSendLagMs)),
    clientCpuPercent: mean("clientCpuPercent"),
    clientLoopDelayP99Ms: Math.max(...steps.map((s) => s.clientLoopDelayP99Ms)),
    serverCpuPercent: mean("serverCpuPercent"),
    serverIdleCpuPercent: mean("serverIdleCpuPercent"),
    // Weighted by the messages of the steps whose workerd processes stayed the same.
    serverCpuMsPerMessage:
      cpu.length === 0
        ? null
        : round3(
            cpu.reduce((n, s) => n + s.serverCpuMsPerMessage * s.messages, 0) / cpu.reduce((n, s) => n + s.messages, 0),
          ),
    serverRestarted: steps.some((s) => s.serverRestarted),
    newErrors: steps.find((s) => s.newErrors)?.newErrors ?? null,
    unexpectedCloses: sum("unexpectedCloses"),
  };
  stats.pass = steps.every((s) => s.pass) && stats.p99Ms !== null && stats.p99Ms < CONFIG.p99LimitMs;
  return stats;
}

/** One run at BENCH_PROFILE_RATE while a server's worker is CPU-profiled; answers the profile's summary. */
async function profiledRun(group) {
  const label = `${group.target.name} ${group.size} members`;
  const rate = clampRate(PROFILE_RATE);
  await group.ensureSenders(group.target.senderSockets(rate)); // connections are not what the profile is for
  let stats;
  const { summary, raw } = await profileWorker(group.target.server.inspectorPort, async () => {
    stats = await runPhase(group, rate, CONFIG.stepS * 1000, { stopWhenFailed: false });
  });
  describe(`${label}, profiled run at ${rate} msg/s`, stats);
  log(`${label}: worker busy ${(summary.busyMs / 1000).toFixed(2)} s of ${(summary.wallMs / 1000).toFixed(2)} s`);
  for (const m of summary.modules.slice(0, 12)) log(`  ${(m.share * 100).toFixed(1).padStart(5)}%  ${m.name}`);
  for (const f of summary.functions.slice(0, 25)) log(`    ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.name}`);
  profiles.push({ name: `${group.target.name}-${group.size}`, raw });
  await settle(group.target.server);
  return { rate, stats, summary };
}

/** Raw CPU profiles of the profiled runs, written beside the JSON results. */
const profiles = [];

/**
 * The delivery ceiling: from the latency run's rate, doubles the send rate until a
 * step fails (or halves it until one passes), then halves the gap between the last passing and the first failing rate
 * `refineSteps` times (geometrically). Answers the highest passing step.
 */
async function ceilingSearch(group) {
  const label = `${group.target.name} ${group.size} members`;
  const steps = [];
  const tried = new Map();
  // A failed step is tried once more: one stall of the shared machine (another process, a GC in this client) fails a
  // whole step, and should not end the search. The step passes if either try passes.
  const step = async (rate) => {
    if (tried.has(rate)) return tried.get(rate).pass;
    let stats;
    for (let attempt = 1; attempt <= 2; attempt++) {
      stats = await runPhase(group, rate, CONFIG.stepS * 1000);
      stats.attempt = attempt;
      describe(`${label}, ceiling step${attempt > 1 ? " (again)" : ""}`, stats);
      steps.push(stats);
      await settle(group.target.server);
      if (stats.pass) break;
    }
    tried.set(rate, stats);
    return stats.pass;
  };
  const clamp = clampRate;
  let rate = rateFor(group.size);
  let best = null;
  let fail = null;
  if (await step(rate)) {
    best = rate;
    while (tried.size < CONFIG.maxSteps && rate < CONFIG.maxRate) {
      rate = clamp(rate * 2);
      if (await step(rate)) best = rate;
      else {
        fail = rate;
        break;
      }
    }
  } else {
    fail = rate;
    while (tried.size < CONFIG.maxSteps && rate > 0.5) {
      rate = clamp(rate / 2);
      if (await step(rate)) {
        best = rate;
        break;
      }
      fail = rate;
    }
  }
  // The refinements are steps of their own: a search that doubled from a low rate (2 members: 20 msg/s) used up
  // BENCH_MAX_STEPS doubling and, when they counted against it, never refined between the last passing and first
  // failing rate (its ceiling was then only the last passing one).
  for (let k = 0; k < CONFIG.refineSteps && best !== null && fail !== null; k++) {
    const mid = clamp(Math.sqrt(best * fail));
    if (mid <= best || mid >= fail) break;
    if (await step(mid)) best = mid;
    else fail = mid;
  }
  const result = {
    rate: best,
    deliveriesPerSecond: best === null ? 0 : best * group.size,
    firstFailingRate: fail,
    capped: fail === null, // every step passed up to BENCH_MAX_RATE or BENCH_MAX_STEPS: the ceiling is higher
    steps,
  };
  log(
    `${label}: ceiling ${result.deliveriesPerSecond.toLocaleString("en-US")} deliveries/s ` +
      `(${best ?? 0} msg/s${result.capped ? ", not reached: every step passed" : `; ${fail} msg/s failed`})`,
  );
  return result;
}

// --- frame size -------------------------------------------------------------------------------------------------

/** Posts one message through Parley's room socket and answers the size of the event frame its members receive. */
async function parleyFrameBytes(target) {
  const room = target.room(CONFIG.sizes[0]);
  const member = await connect(target.memberUrl(room, 0));
  member.parley = true;
  const sender = await connect(target.senderUrl(room, 0));
  sender.parley = true;
  let frameText = null;
  member.on("message", (buf) => {
    if (buf.includes(MARK)) frameText = buf.toString();
    else onControl(member, buf.toString());
  });
  sender.on("message", (buf) => onControl(sender, buf.toString()));
  await target.subscribe(member, room);
  const ack = await request(sender, {
    type: "message.post",
    id: "p1",
    conversationId: room.conversationId,
    text: `${MARK}0|0|${performance.now().toFixed(3)}|`,
  });
  if (!ack.message?.seq) throw new Error(`message.post ack without a message: ${JSON.stringify(ack)}`);
  const deadline = Date.now() + 5000;
  while (frameText === null && Date.now() < deadline) await sleep(10);
  closingSockets = true;
  await closeAll([member, sender]);
  closingSockets = false;
  if (frameText === null) throw new Error("the subscribed member never received the posted message's event");
  return Buffer.byteLength(frameText);
}

// --- report -----------------------------------------------------------------------------------------------------

function buildTable(results) {
  const names = SERVERS;
  const header = ["metric"];
  for (const name of names) header.push(name, ...(name === "floor" ? [] : ["ratio"]));
  header.push("target", "met");
  const rows = [];
  const ratio = (x, floor) => (Number.isFinite(x) && Number.isFinite(floor) && floor > 0 ? x / floor : NaN);
  const fmtRatio = (r) => (Number.isFinite(r) ? `${r.toFixed(2)}x` : "-");
  /** One row: `pick(name)` answers the figure of a server; `check(values)` answers whether Parley meets its target. */
  const row = (metric, pick, fmt, target, check) => {
    const cells = [metric];
    const values = {};
    for (const name of names) {
      values[name] = pick(name);
      cells.push(Number.isFinite(values[name]) ? fmt(values[name], name) : "-");
      if (name !== "floor") cells.push(fmtRatio(ratio(values[name], values.floor)));
    }
    let met = "";
    if (check && names.includes("parley")) {
      const ok = check(values);
      met = ok === null ? "-" : ok ? "yes" : "NO";
    }
    cells.push(target, met);
    rows.push(cells);
  };
  const ms = (x) => `${x.toFixed(2)} ms`;
  const latencyCheck = (v) => {
    if (![v.parley, v.floor].every(Number.isFinite)) return null;
    const vsFloor = v.parley <= 1.25 * v.floor;
    const vsParty = Number.isFinite(v.partyserver) ? v.parley < v.partyserver : true;
    return vsFloor && vsParty;
  };
  for (const size of CONFIG.sizes) {
    const at = (name) => results.servers[name]?.sizes[size];
    row(
      `latency p50, ${size} members @${rateFor(size)} msg/s`,
      (n) => at(n)?.latency?.p50Ms,
      ms,
      "<=1.25x, < partyserver",
      latencyCheck,
    );
    row(
      `latency p99, ${size} members @${rateFor(size)} msg/s`,
      (n) => at(n)?.latency?.p99Ms,
      ms,
      "<=1.25x, < partyserver",
      latencyCheck,
    );
  }
  if (CONFIG.ceiling) {
    for (const size of CONFIG.sizes) {
      const at = (name) => results.servers[name]?.sizes[size]?.ceiling;
      row(
        `ceiling, ${size} members (deliveries/s)`,
        (n) => at(n)?.deliveriesPerSecond,
        (x, name) => Math.round(x).toLocaleString("en-US") + (at(name)?.capped ? "+" : ""),
        ">=0.80x",
        (v) => (Number.isFinite(v.parley) && v.floor > 0 ? v.parley >= 0.8 * v.floor : null),
      );
    }
  }
  row(
    `memory per idle socket (${MEMORY_SOCKETS} sockets)`,
    (n) => results.servers[n]?.memory?.bytesPerSocket,
    (x) => `${kib(x)} KiB`,
    "-",
    null,
  );
  for (const size of CONFIG.sizes) {
    row(
      `server CPU per msg above idle, ${size} members @${rateFor(size)}/s`,
      (n) => results.servers[n]?.sizes[size]?.latency?.serverCpuMsPerMessage,
      (x) => `${x.toFixed(2)} ms`,
      "-",
      null,
    );
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) =>
    cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** The verdict on the three targets, from the table's checks. */
function verdict(results) {
  if (!results.servers.parley) return null;
  const out = { latency: [], ceiling: [] };
  for (const size of CONFIG.sizes) {
    const floor = results.servers.floor.sizes[size];
    const parley = results.servers.parley.sizes[size];
    const party = results.servers.partyserver?.sizes[size];
    if (!floor?.latency || !parley?.latency) continue;
    for (const key of ["p50Ms", "p99Ms"]) {
      out.latency.push({
        size,
        key,
        parley: parley.latency[key],
        floor: floor.latency[key],
        partyserver: party?.latency?.[key] ?? null,
        ratioToFloor: round3(parley.latency[key] / floor.latency[key]),
        atMost125xFloor: parley.latency[key] <= 1.25 * floor.latency[key],
        betterThanPartyserver: party?.latency ? parley.latency[key] < party.latency[key] : null,
      });
    }
    if (floor.ceiling && parley.ceiling) {
      out.ceiling.push({
        size,
        parley: parley.ceiling.deliveriesPerSecond,
        floor: floor.ceiling.deliveriesPerSecond,
        ratioToFloor: round3(parley.ceiling.deliveriesPerSecond / floor.ceiling.deliveriesPerSecond),
        atLeast08xFloor: parley.ceiling.deliveriesPerSecond >= 0.8 * floor.ceiling.deliveriesPerSecond,
      });
    }
  }
  out.latencyMet = out.latency.every((x) => x.atMost125xFloor && x.betterThanPartyserver !== false);
  out.ceilingMet = out.ceiling.every((x) => x.atLeast08xFloor);
  return out;
}

// --- main -------------------------------------------------------------------------------------------------------

const startedAt = new Date();
const results = { servers: {} };

async function main() {
  const machine = machineInfo(["wrangler", "partyserver"]);
  results.machine = machine;
  results.config = {
    ...CONFIG,
    servers: SERVERS,
    deflate: DEFLATE,
    wranglerLogLevel: LOG_LEVEL,
    inPlace: IN_PLACE,
  };
  log(
    `node ${machine.node}, wrangler ${machine.wrangler}, partyserver ${machine.partyserver}, ${machine.cpus} cpus ` +
      `(${machine.cpuModel}), ${machine.os}, load ${machine.loadAvg.join(" ")}`,
  );
  log(`config ${JSON.stringify(results.config)}`);
  runDir = mkdtempSync(join(os.tmpdir(), "parley-bench-realtime-"));
  log(`state and server logs in ${runDir}`);

  // The three servers start together; each in its own process group.
  const runId = `r${randomBytes(3).toString("hex")}`;
  const started = await Promise.all(
    SERVERS.map((name) => (name === "parley" ? startParley() : startBenchWorker(name))),
  );
  for (const server of started) {
    server.workerd = workerdPids(server.pid);
    if (server.workerd.length === 0) throw new Error(`no workerd process found below ${server.name} (${server.pid})`);
    log(`${server.name}: workerd pids ${server.workerd.join(", ")}`);
  }

  const targets = [];
  for (const name of SERVERS) {
    const server = servers.get(name);
    if (name === "floor" || name === "durable-floor") targets.push(floorTarget(server, runId, name));
    if (name === "partyserver") targets.push(partyserverTarget(server, runId));
    if (name === "parley") {
      const ctx = await setupParley(server);
      const target = parleyTarget(server, ctx);
      padBytes = await parleyFrameBytes(target);
      log(`parley's event frame is ${padBytes} bytes: the floor's and partyserver's frames are padded to it`);
      targets.push(target);
    }
  }
  if (!padBytes) padBytes = 800;
  results.frameBytes = padBytes;
  // floor first, then partyserver, then parley, for every room size
  targets.sort((a, b) => SERVERS.indexOf(a.name) - SERVERS.indexOf(b.name));
  for (const target of targets) {
    results.servers[target.name] = { sizes: {}, memory: null, reloads: 0, workerdPids: target.server.workerd };
  }

  // Largest room first: its connections measure memory per idle socket on servers that have carried no load yet. The
  // order of the servers turns by one for each room size, so none always follows another's heavy phase; and each
  // room starts once every server is quiet (the previous room's closes, Parley's outbox and queue consumer).
  const allServers = targets.map((t) => t.server);
  const sizesDescending = [...CONFIG.sizes].sort((a, b) => b - a);
  for (const [k, size] of sizesDescending.entries()) {
    const order = targets.map((_, i) => targets[(i + k) % targets.length]);
    log(`${size}-member rooms: ${order.map((t) => t.name).join(", ")}`);
    const groups = [];
    for (const target of order) {
      const measureMemory = size === MEMORY_SOCKETS;
      await settle(...allServers);
      const reloadsBefore = serverReloads(target.server);
      const group = await openRoom(target, size, { measureMemory });
      group.reloadsBefore = reloadsBefore;
      results.servers[target.name].sizes[size] = { latency: null, ceiling: null };
      if (measureMemory) results.servers[target.name].memory = group.memory;
      groups.push(group);
    }
    await settle(...allServers);
    for (const [group, stats] of await latencyRuns(groups))
      results.servers[group.target.name].sizes[size].latency = stats;
    for (const group of groups) {
      const entry = results.servers[group.target.name].sizes[size];
      if (PROFILE_RATE > 0 && PROFILE_SERVERS.includes(group.target.name)) entry.profile = await profiledRun(group);
      if (CONFIG.ceiling) {
        await settle(...allServers);
        entry.ceiling = await ceilingSearch(group);
      }
    }
    for (const group of groups) {
      await closeRoom(group);
      const { target } = group;
      const reloads = serverReloads(target.server) - group.reloadsBefore;
      if (reloads > 0) {
        results.servers[target.name].reloads += reloads;
        log(`WARNING: ${target.name} reloaded its worker ${reloads} time(s) during the ${size}-member room`);
      }
      if (target.server.exited) throw new Error(`${target.name} exited (${target.server.exitInfo})`);
    }
  }

  results.problems = problems;
  results.strayDeliveries = stray.frames;
  results.verdict = verdict(results);
  await Promise.all([...servers.values()].map(stopServer));
  printReport(machine);
}

function printReport(machine) {
  const table = buildTable(results);
  results.table = table;
  console.log("");
  console.log("Parley realtime benchmark: room sockets vs the floor (bare hibernating DO) and partyserver, same run");
  console.log(
    `node ${machine.node}, wrangler ${machine.wrangler}, partyserver ${machine.partyserver}, ${machine.cpus} cpus ` +
      `(${machine.cpuModel}), ${machine.os}`,
  );
  console.log(
    `commit ${machine.commit ?? "?"}${machine.srcUncommitted ? " + uncommitted changes in src/" : ""}, ` +
      `load average at start ${machine.loadAvg.join(" ")}, at end ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(" ")}`,
  );
  console.log(
    `latency: send (timestamp in the frame) to receipt at every member, for ${CONFIG.durationS} s at ${CONFIG.rate} msg/s ` +
      `or ${CONFIG.rateDeliveries.toLocaleString("en-US")} deliveries/s, the lower, ` +
      `in ${CONFIG.latencyRounds} rounds in which the servers take turns; frames of ${results.frameBytes} bytes.`,
  );
  if (CONFIG.ceiling) {
    console.log(
      `ceiling: highest msgs/s x members with no loss and p99 < ${CONFIG.p99LimitMs} ms, steps of ${CONFIG.stepS} s ` +
        `(x2, then ${CONFIG.refineSteps} refinements); '+' = every step passed, the ceiling is higher.`,
    );
  }
  console.log("ratio: X/floor for every figure (latency and memory: > 1 is worse; ceiling: < 1 is worse).");
  console.log("");
  console.log(table);
  for (const name of SERVERS) {
    for (const size of CONFIG.sizes) {
      const c = results.servers[name]?.sizes[size]?.ceiling;
      if (c?.capped) console.log(`+ ${name}, ${size} members: every ceiling step passed, up to ${c.rate} msg/s`);
    }
  }
  const v = results.verdict;
  if (v) {
    console.log("");
    console.log(
      `targets: latency <= 1.25x floor and better than partyserver: ${v.latencyMet ? "MET" : "NOT MET"}; ` +
        `ceiling >= 0.8x floor: ${CONFIG.ceiling ? (v.ceilingMet ? "MET" : "NOT MET") : "not measured"}`,
    );
  }
  const errors = Object.entries(problems.errors);
  if (errors.length > 0 || problems.unexpectedCloses > 0) {
    console.log(
      `problems: error frames ${JSON.stringify(problems.errors)}, unexpected closes ${problems.unexpectedCloses} ` +
        `${JSON.stringify(problems.closeCodes)}${problems.firstError ? `, first error ${JSON.stringify(problems.firstError)}` : ""}`,
    );
  }
  const reloads = SERVERS.filter((n) => results.servers[n]?.reloads > 0);
  if (reloads.length > 0) console.log(`WARNING: worker reloads during the run: ${reloads.join(", ")}`);
  console.log("");
}

function writeResults(error) {
  const file = saveResults("realtime", startedAt, {
    bench: "realtime",
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    loadAvgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100),
    ...(error ? { error: String(error.stack ?? error) } : {}),
    ...results,
  });
  for (const { name, raw } of profiles)
    writeFileSync(file.replace(/\.json$/, `-${name}.cpuprofile`), JSON.stringify(raw));
}

let exiting = false;
async function cleanupAndExit(code) {
  if (exiting) return;
  exiting = true;
  closingSockets = true;
  await Promise.all([...servers.values()].map(stopServer));
  if (runDir && !KEEP && code === 0) rmSync(runDir, { recursive: true, force: true });
  else if (runDir) log(`state and server logs kept in ${runDir}`);
  process.exit(code);
}

process.on("exit", killServersNow);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    log(`${signal}: stopping the servers`);
    void cleanupAndExit(130);
  });
}

main().then(
  () => {
    writeResults(null);
    return cleanupAndExit(0);
  },
  (error) => {
    if (exiting) return;
    console.error(`[bench] FAILED: ${error instanceof RequestFailed ? error.message : (error.stack ?? error)}`);
    if (Object.keys(results.servers).length > 0) writeResults(error);
    void cleanupAndExit(1);
  },
);
