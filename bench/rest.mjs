#!/usr/bin/env node
// `npm run bench:rest`: REST benchmark of Parley against its floor, `GET /healthz` (a route that does no work).
//
// Starts its own `wrangler dev` (through scripts/dev.mjs) on free ports with fresh local state, sets up an org, two
// users, a standard room and conversations through the public API, then measures side by side with the floor:
//   a. message post latency at concurrency 1;
//   b. message post throughput and latency at concurrency 32;
//   c. history page latency (latest page, beforeSeq, afterSeq) in a conversation seeded with 100,000 messages.
// Prints a table and writes JSON to bench/.results/. Any non-2xx answer fails the run (exit code 1).
//
// Environment (all optional):
//   BENCH_HISTORY_MESSAGES   messages seeded for the history bench (default 100000)
//   BENCH_POSTS              posts at concurrency 1 (default 500); the concurrency-32 run posts 6x this (default 3000)
//   BENCH_POSTS_CONCURRENT   cap of posts at concurrency 32 (default 6 * BENCH_POSTS)
//   BENCH_DURATION_S         time cap of the concurrency-32 runs, seconds (default 5)
//   BENCH_READS              reads per history variant (default 300)
//   BENCH_SEED_CONCURRENCY   posts in flight while seeding (default 64)
//   BENCH_KEEP=1             keep the temporary state directory and the server log
//   BENCH_IN_PLACE=1         run the app from the working tree instead of a snapshot of it (see snapshotApp)
//   BENCH_LOG_LEVEL          passed to wrangler dev as --log-level (default: unset, wrangler's default, which logs
//                            every request; `warn` drops that per-request cost from both Parley and the floor)
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  intEnv,
  killProcessGroupNow,
  log,
  machineInfo,
  percentile,
  reloadsIn,
  root,
  saveResults,
  snapshotApp,
  startDevServer,
  stopProcessGroup,
} from "./lib.mjs";

const POSTS = intEnv("BENCH_POSTS", 500);
const CONFIG = {
  historyMessages: intEnv("BENCH_HISTORY_MESSAGES", 100_000),
  postsC1: POSTS,
  postsC32: intEnv("BENCH_POSTS_CONCURRENT", POSTS * 6),
  durationC32Ms: intEnv("BENCH_DURATION_S", 5) * 1000,
  reads: intEnv("BENCH_READS", 300),
  seedConcurrency: intEnv("BENCH_SEED_CONCURRENCY", 64),
  concurrency: 32,
  historyLimit: 50,
};
const KEEP = process.env.BENCH_KEEP === "1";
const IN_PLACE = process.env.BENCH_IN_PLACE === "1";
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL || null;
const STARTUP_TIMEOUT_MS = 90_000;

// --- the server -------------------------------------------------------------------------------------------------

const server = { pid: null, stateDir: null, logPath: null };

/** Stops the dev server's whole process group (node scripts/dev.mjs, wrangler, workerd). */
async function stopServer() {
  const pid = server.pid;
  server.pid = null;
  await stopProcessGroup(pid);
}

/** Last resort on process exit: synchronous, so it works in the 'exit' handler. */
function killServerNow() {
  killProcessGroupNow(server.pid);
  server.pid = null;
}

const serverReloads = () => reloadsIn(server.logPath);

async function startServer() {
  server.stateDir = mkdtempSync(join(os.tmpdir(), "parley-bench-"));
  const appDir = IN_PLACE ? root : snapshotApp(join(server.stateDir, "app"));
  log(
    IN_PLACE
      ? "running the app from the working tree"
      : `running the app from a snapshot of the working tree in ${appDir}`,
  );
  server.logPath = join(server.stateDir, "server.log");
  log(`state in ${server.stateDir}`);
  const started = await startDevServer({
    appDir,
    persistTo: join(server.stateDir, "state"),
    logPath: server.logPath,
    logLevel: LOG_LEVEL,
    timeoutMs: STARTUP_TIMEOUT_MS,
    onSpawn: (handle) => (server.pid = handle.pid),
  });
  return { base: started.base, adminToken: started.adminToken };
}

// --- HTTP -------------------------------------------------------------------------------------------------------

class RequestFailed extends Error {
  constructor(method, path, status, body) {
    super(`${method} ${path} answered ${status}: ${body}`);
    this.status = status;
    this.body = body;
  }
}

let BASE = "";

/** One request with global fetch (undici, keep-alive); reads the whole body; any non-2xx throws with the body. */
async function request(method, path, token, body) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(BASE + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new Error(`${method} ${path} failed: ${error.cause?.message ?? error.message}`);
  }
  const text = await res.text();
  if (res.status < 200 || res.status > 299) throw new RequestFailed(method, path, res.status, text);
  return text;
}

async function requestJson(method, path, token, body) {
  return JSON.parse(await request(method, path, token, body));
}

// --- measurement ------------------------------------------------------------------------------------------------

function summarize(latencies, elapsedMs) {
  const sorted = Float64Array.from(latencies).sort();
  const sum = sorted.reduce((a, b) => a + b, 0);
  const round = (x) => Math.round(x * 1000) / 1000;
  return {
    count: sorted.length,
    elapsedMs: round(elapsedMs),
    perSecond: Math.round((sorted.length / elapsedMs) * 1000 * 10) / 10,
    minMs: round(sorted[0]),
    p50Ms: round(percentile(sorted, 50)),
    p90Ms: round(percentile(sorted, 90)),
    p99Ms: round(percentile(sorted, 99)),
    maxMs: round(sorted[sorted.length - 1]),
    meanMs: round(sum / sorted.length),
  };
}

/**
 * A closed-loop load: `concurrency` workers, each sending one request after the other, until `count` requests were
 * sent or `durationMs` passed. `send(i)` sends request number i. The first failure stops every worker and throws.
 */
async function load({ concurrency, count, durationMs = Infinity, send, onDone }) {
  const latencies = [];
  let issued = 0;
  let failed = false;
  const start = performance.now();
  const deadline = start + durationMs;
  async function worker() {
    while (!failed && issued < count && performance.now() < deadline) {
      const i = issued++;
      const t0 = performance.now();
      try {
        await send(i);
      } catch (error) {
        failed = true;
        throw error;
      }
      latencies.push(performance.now() - t0);
      if (onDone) onDone(latencies.length, performance.now() - start);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return summarize(latencies, performance.now() - start);
}

const floor = () => request("GET", "/healthz");

function describeRun(label, s) {
  log(
    `${label}: n=${s.count} in ${(s.elapsedMs / 1000).toFixed(2)} s, ${s.perSecond}/s, ` +
      `p50 ${s.p50Ms.toFixed(2)} ms, p99 ${s.p99Ms.toFixed(2)} ms`,
  );
}

/** Warms both routes up, then runs the floor and Parley one after the other under the same load shape. */
async function sideBySide(label, shape, send, warmup) {
  const reloadsBefore = serverReloads();
  await load({ ...shape, ...warmup, send: floor });
  await load({ ...shape, ...warmup, send });
  const floorStats = await load({ ...shape, send: floor });
  describeRun(`${label} floor`, floorStats);
  const parleyStats = await load({ ...shape, send });
  describeRun(`${label} parley`, parleyStats);
  return { parley: parleyStats, floor: floorStats, reloads: reloadsDuring(label, reloadsBefore) };
}

function reloadsDuring(label, before) {
  const reloads = serverReloads() - before;
  if (reloads > 0)
    log(`WARNING: wrangler dev reloaded the worker ${reloads} time(s) during '${label}' (its sources changed)`);
  return reloads;
}

// --- the benchmark ----------------------------------------------------------------------------------------------

async function setup(adminToken) {
  const suffix = randomBytes(4).toString("hex");
  const { apiKey, org } = await requestJson("POST", "/v1/orgs", adminToken, { name: `bench-${suffix}` });
  const alice = await requestJson("POST", "/v1/accounts", apiKey, { type: "user", name: "Bench Alice" });
  const bob = await requestJson("POST", "/v1/accounts", apiKey, { type: "user", name: "Bench Bob" });
  const room = await requestJson("POST", "/v1/rooms", apiKey, {
    type: "standard",
    name: "bench",
    participants: [{ accountId: alice.id }, { accountId: bob.id }],
  });
  const conversation = await requestJson("POST", `/v1/rooms/${room.id}/conversations`, apiKey, { name: "posts" });
  log(`set up org ${org.id}, accounts ${alice.id} and ${bob.id}, room ${room.id}, conversation ${conversation.id}`);
  return { apiKey, authors: [alice.id, bob.id], roomId: room.id, conversationId: conversation.id };
}

function poster(apiKey, conversationId, authors, tag) {
  const path = `/v1/conversations/${conversationId}/messages`;
  return (i) => request("POST", path, apiKey, { text: `${tag} message ${i}`, authorId: authors[i % authors.length] });
}

async function seedHistory(ctx) {
  const n = CONFIG.historyMessages;
  const conversation = await requestJson("POST", `/v1/rooms/${ctx.roomId}/conversations`, ctx.apiKey, {
    name: "history",
  });
  const every = n >= 100_000 ? 10_000 : Math.max(1, Math.ceil(n / 10));
  log(`seeding ${n} messages into ${conversation.id} with ${CONFIG.seedConcurrency} in flight`);
  const reloadsBefore = serverReloads();
  let lastReported = 0;
  const stats = await load({
    concurrency: CONFIG.seedConcurrency,
    count: n,
    send: poster(ctx.apiKey, conversation.id, ctx.authors, "seed"),
    onDone(done, elapsedMs) {
      if (done - lastReported >= every || done === n) {
        lastReported = done;
        log(
          `  seeded ${done}/${n} after ${(elapsedMs / 1000).toFixed(0)} s ` +
            `(${((done / elapsedMs) * 1000).toFixed(0)} messages/s so far)`,
        );
      }
    },
  });
  describeRun("seeding parley", stats);
  // The room must hold exactly n messages, seq 1..n (gapless).
  const got = await requestJson("GET", `/v1/conversations/${conversation.id}`, ctx.apiKey);
  if (got.messageCount !== n) {
    throw new Error(`after seeding ${n} messages the conversation reports messageCount ${got.messageCount}`);
  }
  // The floor at the same concurrency, for the seeding row of the table.
  const floorStats = await load({
    concurrency: CONFIG.seedConcurrency,
    count: Math.max(1000, Math.min(n, 20_000)),
    durationMs: CONFIG.durationC32Ms,
    send: floor,
  });
  describeRun(`floor at concurrency ${CONFIG.seedConcurrency}`, floorStats);
  return {
    conversationId: conversation.id,
    parley: stats,
    floor: floorStats,
    reloads: reloadsDuring("seeding", reloadsBefore),
  };
}

/** The history variants of a conversation of n messages, each with a check of the page it must answer. */
function historyVariants(n) {
  const limit = CONFIG.historyLimit;
  const before = Math.max(limit + 1, Math.round(n / 2)); // 50,000 of 100,000
  const after = Math.max(0, n - Math.max(limit + 1, Math.round(n / 100))); // 99,000 of 100,000
  // hasMore: more messages lie beyond the page in the direction of the query.
  const range = (from, to, hasMore) => ({ from, to, hasMore });
  return [
    {
      key: "latest",
      label: `history latest page (limit=${limit})`,
      query: `limit=${limit}`,
      expect: range(n - limit + 1, n, n - limit + 1 > 1),
    },
    {
      key: "beforeSeq",
      label: `history beforeSeq=${before}`,
      query: `beforeSeq=${before}&limit=${limit}`,
      expect: range(before - limit, before - 1, before - limit > 1),
    },
    {
      key: "afterSeq",
      label: `history afterSeq=${after}`,
      query: `afterSeq=${after}&limit=${limit}`,
      expect: range(after + 1, after + limit, after + limit < n),
    },
  ];
}

function checkPage(variant, text) {
  const page = JSON.parse(text);
  const seqs = page.items.map((m) => m.seq);
  const want = [];
  for (let s = variant.expect.from; s <= variant.expect.to; s++) want.push(s);
  if (seqs.length !== want.length || seqs.some((s, i) => s !== want[i]) || page.hasMore !== variant.expect.hasMore) {
    throw new Error(
      `${variant.label}: expected seq ${variant.expect.from}..${variant.expect.to} with hasMore ` +
        `${variant.expect.hasMore}, got ` +
        `${seqs.length} items (${seqs[0]}..${seqs[seqs.length - 1]}), hasMore ${page.hasMore}`,
    );
  }
}

function fmtMs(x) {
  return `${x.toFixed(2)} ms`;
}

function fmtRate(x, unit) {
  return `${Math.round(x).toLocaleString("en-US")} ${unit}`;
}

function buildTable(results) {
  const rows = [];
  // A `*` marks a measurement during which wrangler dev reloaded the worker.
  const mark = (phase, metric) => (phase.reloads > 0 ? `${metric} *` : metric);
  const lat = (metric, p, f, key) =>
    rows.push([metric, fmtMs(p[key]), fmtMs(f[key]), `${(p[key] / f[key]).toFixed(2)}x`]);
  const thr = (metric, p, f, unit) =>
    rows.push([
      metric,
      fmtRate(p.perSecond, unit),
      fmtRate(f.perSecond, "req/s"),
      `${(f.perSecond / p.perSecond).toFixed(2)}x`,
    ]);

  const a = results.postC1;
  lat(mark(a, `post, c=1, p50 (n=${a.parley.count})`), a.parley, a.floor, "p50Ms");
  lat(mark(a, `post, c=1, p99`), a.parley, a.floor, "p99Ms");
  const b = results.postC32;
  thr(mark(b, `post, c=${CONFIG.concurrency}, throughput (n=${b.parley.count})`), b.parley, b.floor, "msg/s");
  lat(mark(b, `post, c=${CONFIG.concurrency}, p50`), b.parley, b.floor, "p50Ms");
  lat(mark(b, `post, c=${CONFIG.concurrency}, p99`), b.parley, b.floor, "p99Ms");
  const s = results.seeding;
  thr(mark(s, `seeding, c=${CONFIG.seedConcurrency}, throughput (n=${s.parley.count})`), s.parley, s.floor, "msg/s");
  lat(mark(s, `seeding, c=${CONFIG.seedConcurrency}, p50`), s.parley, s.floor, "p50Ms");
  lat(mark(s, `seeding, c=${CONFIG.seedConcurrency}, p99`), s.parley, s.floor, "p99Ms");
  for (const v of results.history.variants) {
    lat(mark(v, `${v.label}, c=1, p50 (n=${v.parley.count})`), v.parley, v.floor, "p50Ms");
    lat(mark(v, `${v.label}, c=1, p99`), v.parley, v.floor, "p99Ms");
  }

  const header = ["metric", "Parley", "floor (GET /healthz)", "ratio"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

async function main() {
  const machine = machineInfo();
  log(
    `node ${machine.node}, ${machine.cpus} cpus (${machine.cpuModel}), ${machine.os}, load ${machine.loadAvg.join(" ")}`,
  );
  log(`config ${JSON.stringify({ ...CONFIG, wranglerLogLevel: LOG_LEVEL, inPlace: IN_PLACE })}`);
  const startedAt = new Date();

  const { base, adminToken } = await startServer();
  BASE = base;
  const ctx = await setup(adminToken);
  const results = {};

  // a. Post latency at concurrency 1.
  const post = poster(ctx.apiKey, ctx.conversationId, ctx.authors, "bench");
  results.postC1 = await sideBySide("post c=1", { concurrency: 1, count: CONFIG.postsC1 }, post, {
    count: Math.min(50, CONFIG.postsC1),
  });

  // b. Post throughput and latency at concurrency 32.
  results.postC32 = await sideBySide(
    `post c=${CONFIG.concurrency}`,
    { concurrency: CONFIG.concurrency, count: CONFIG.postsC32, durationMs: CONFIG.durationC32Ms },
    post,
    { count: CONFIG.concurrency * 5, durationMs: 2000 },
  );

  // c. History pages in a long conversation.
  results.seeding = await seedHistory(ctx);
  const variants = historyVariants(CONFIG.historyMessages);
  results.history = { conversationId: results.seeding.conversationId, messages: CONFIG.historyMessages, variants: [] };
  const historyPath = `/v1/conversations/${results.seeding.conversationId}/messages?`;
  for (const v of variants) {
    const read = () => request("GET", historyPath + v.query, ctx.apiKey);
    checkPage(v, await read());
    const run = await sideBySide(v.label, { concurrency: 1, count: CONFIG.reads }, read, {
      count: Math.min(30, CONFIG.reads),
    });
    results.history.variants.push({ key: v.key, label: v.label, query: v.query, ...run });
  }

  await stopServer();

  const table = buildTable(results);
  console.log("");
  console.log("Parley REST benchmark vs the floor (GET /healthz, same server, same run)");
  console.log(
    `node ${machine.node}, wrangler ${machine.wrangler}, ${machine.cpus} cpus (${machine.cpuModel}), ${machine.os}`,
  );
  console.log(
    `commit ${machine.commit ?? "?"}${machine.srcUncommitted ? " + uncommitted changes in src/" : ""}, ` +
      `load average at start ${machine.loadAvg.join(" ")}, at end ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(" ")}`,
  );
  console.log("ratio: Parley/floor for latencies, floor/Parley for throughput; so > 1 always means Parley is slower.");
  console.log("");
  console.log(table);
  const reloads = serverReloads();
  if (reloads > 0) {
    console.log(
      `* wrangler dev reloaded the worker during this measurement (its sources changed while the bench ran): ` +
        `${reloads} reload(s) in the whole run; rows marked * mix a stall, cold objects and maybe other code.`,
    );
  }
  console.log("");

  saveResults("rest", startedAt, {
    bench: "rest",
    startedAt: startedAt.toISOString(),
    machine,
    config: { ...CONFIG, wranglerLogLevel: LOG_LEVEL, inPlace: IN_PLACE },
    serverReloads: reloads,
    loadAvgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100),
    results,
    table,
  });
}

let exiting = false;
async function cleanupAndExit(code) {
  if (exiting) return;
  exiting = true;
  await stopServer();
  // Kept after a failure (its server.log shows what the app said), or when asked; removed otherwise.
  if (server.stateDir && !KEEP && code !== 1) rmSync(server.stateDir, { recursive: true, force: true });
  else if (server.stateDir) log(`state and server log kept in ${server.stateDir}`);
  process.exit(code);
}

process.on("exit", killServerNow);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    log(`${signal}: stopping the app`);
    void cleanupAndExit(130);
  });
}

main().then(
  () => cleanupAndExit(0),
  (error) => {
    if (exiting) return; // interrupted: the failure is the interruption's doing
    console.error(`[bench] FAILED: ${error instanceof RequestFailed ? error.message : (error.stack ?? error)}`);
    void cleanupAndExit(1);
  },
);
