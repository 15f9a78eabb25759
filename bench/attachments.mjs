#!/usr/bin/env node
// `npm run bench:attachments`: attachment upload and download throughput of Parley against its floor, a bare Worker
// that only puts request bodies to R2 and streams objects back (bench/r2-floor/).
//
// Starts Parley (through scripts/dev.mjs, from a snapshot of the working tree) and the floor, each in its own
// `wrangler dev` on free ports with fresh local state, creates an org through the public API, then for each file size:
//   a. upload: Parley `POST /v1/attachments` with a raw body, and with multipart/form-data (encoded once by Node's
//      FormData, as a browser would send it), against the floor's PUT;
//   b. download: Parley's signed URL against the floor's GET, every byte read (and checked once by SHA-256).
// Each measurement runs at concurrency 1 and BENCH_ATTACHMENT_CONCURRENCY, in two halves interleaved with the floor's
// (floor, Parley, floor, Parley), so both see the same machine. Prints a table and writes JSON to bench/.results/.
//
// Environment (all optional):
//   BENCH_ATTACHMENT_SIZES_MIB     file sizes in MiB, comma-separated (default 1,20)
//   BENCH_ATTACHMENT_ROUNDS        requests per measurement and server for 8 MiB and larger files (default 12); smaller
//                                  files get proportionally more (up to 256), so every row lasts about as long
//   BENCH_ATTACHMENT_CONCURRENCY   the concurrent runs' requests in flight (default 4)
//   BENCH_KEEP=1                   keep the temporary state directory and the server logs
//   BENCH_IN_PLACE=1               run Parley from the working tree instead of a snapshot of it
//   BENCH_LOG_LEVEL                passed to both wrangler dev as --log-level
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  intEnv,
  killProcessGroupNow,
  log,
  percentile,
  reloadsIn,
  root,
  saveResults,
  snapshotApp,
  startDevServer,
  startWorker,
  stopProcessGroup,
} from "./lib.mjs";

const MiB = 1024 * 1024;
const SIZES = (process.env.BENCH_ATTACHMENT_SIZES_MIB || "1,20").split(",").map((s) => {
  const value = Number(s.trim());
  if (!(value > 0 && value <= 25)) {
    console.error(`[bench] BENCH_ATTACHMENT_SIZES_MIB: sizes are MiB in (0, 25], got '${s}'`);
    process.exit(2);
  }
  return Math.round(value * MiB);
});
const ROUNDS = Math.max(4, intEnv("BENCH_ATTACHMENT_ROUNDS", 12));
/** Floor and Parley take turns this many times per row, so a drift of the machine reaches both alike. */
const SLICES = 4;
/** Requests per server for a row of `size`-byte files: a multiple of SLICES. */
const roundsFor = (size) =>
  Math.ceil(Math.min(256, Math.max(ROUNDS, Math.round((ROUNDS * 8 * MiB) / size))) / SLICES) * SLICES;
const CONCURRENCY = intEnv("BENCH_ATTACHMENT_CONCURRENCY", 4);
const KEEP = process.env.BENCH_KEEP === "1";
const IN_PLACE = process.env.BENCH_IN_PLACE === "1";
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL || null;
const STARTUP_TIMEOUT_MS = 90_000;

// --- servers ----------------------------------------------------------------------------------------------------

const servers = [];
let runDir = null;

function killServersNow() {
  for (const server of servers) {
    killProcessGroupNow(server.pid);
    server.pid = null;
  }
}

async function stopServers() {
  for (const server of servers) {
    const pid = server.pid;
    server.pid = null;
    await stopProcessGroup(pid);
  }
}

/** Starts Parley through scripts/dev.mjs (from a snapshot of the working tree unless BENCH_IN_PLACE). */
async function startParley() {
  const appDir = IN_PLACE ? root : snapshotApp(join(runDir, "app"));
  return startDevServer({
    appDir,
    persistTo: join(runDir, "parley-state"),
    logPath: join(runDir, "parley.log"),
    vars: { URL_SIGNING_SECRET: randomBytes(16).toString("hex") },
    logLevel: LOG_LEVEL,
    timeoutMs: STARTUP_TIMEOUT_MS,
    onSpawn: (server) => servers.push(server),
  });
}

async function startFloor() {
  return startWorker({
    name: "r2-floor",
    config: join("bench", "r2-floor", "wrangler.toml"),
    persistTo: join(runDir, "floor-state"),
    logPath: join(runDir, "r2-floor.log"),
    logLevel: LOG_LEVEL,
    timeoutMs: STARTUP_TIMEOUT_MS,
    onSpawn: (server) => servers.push(server),
  });
}

// --- HTTP -------------------------------------------------------------------------------------------------------

/** A request whose whole answer is read; any non-2xx throws with the body. Answers the body's bytes. */
async function send(method, url, { headers = {}, body } = {}) {
  const res = await fetch(url, { method, headers, body });
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (res.status < 200 || res.status > 299) {
    throw new Error(`${method} ${url} answered ${res.status}: ${new TextDecoder().decode(bytes.slice(0, 500))}`);
  }
  return bytes;
}

const json = (bytes) => JSON.parse(new TextDecoder().decode(bytes));
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

// --- measurement ------------------------------------------------------------------------------------------------

/** Runs `task(i)` `count` times with `concurrency` in flight; answers each latency (ms) and the elapsed time. */
async function run(count, concurrency, task) {
  const latencies = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const i = next++;
        const t0 = performance.now();
        await task(i);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  return { latencies, elapsedMs: performance.now() - started };
}

function summarize(runs, bytesPerRequest) {
  const latencies = Float64Array.from(runs.flatMap((r) => r.latencies)).sort();
  const elapsedMs = runs.reduce((sum, r) => sum + r.elapsedMs, 0);
  const round = (x) => Math.round(x * 100) / 100;
  return {
    count: latencies.length,
    elapsedMs: round(elapsedMs),
    mibPerSecond: round((latencies.length * bytesPerRequest) / MiB / (elapsedMs / 1000)),
    p50Ms: round(percentile(latencies, 50)),
    p99Ms: round(percentile(latencies, 99)),
  };
}

/**
 * One side-by-side measurement: a warm-up of each, then floor, Parley, floor, Parley... (SLICES turns each, a slice
 * of the rounds each time). Answers both summaries.
 */
async function sideBySide(label, size, concurrency, floorTask, parleyTask) {
  await run(2, 1, floorTask);
  await run(2, 1, parleyTask);
  const rounds = roundsFor(size);
  const floor = [];
  const parley = [];
  for (let slice = 0; slice < SLICES; slice++) {
    floor.push(await run(rounds / SLICES, concurrency, floorTask));
    parley.push(await run(rounds / SLICES, concurrency, parleyTask));
  }
  const result = { label, size, concurrency, rounds, floor: summarize(floor, size), parley: summarize(parley, size) };
  log(
    `${label}: parley ${result.parley.mibPerSecond} MiB/s, floor ${result.floor.mibPerSecond} MiB/s ` +
      `(${(result.parley.mibPerSecond / result.floor.mibPerSecond).toFixed(2)}x)`,
  );
  return result;
}

async function benchSize(parley, floor, apiKey, size) {
  const file = randomBytes(size);
  const digest = sha256(file);
  const mib = `${(size / MiB).toFixed(size % MiB === 0 ? 0 : 1)} MiB`;
  const auth = { authorization: `Bearer ${apiKey}` };
  const results = [];

  // Correctness once, outside the timings: the same bytes come back from both.
  const stored = json(
    await send("POST", `${parley.base}/v1/attachments?name=bench.bin`, {
      headers: { ...auth, "content-type": "application/octet-stream" },
      body: file,
    }),
  );
  if (stored.sha256 !== digest || stored.size !== size) throw new Error(`upload answered ${JSON.stringify(stored)}`);
  if (sha256(await send("GET", stored.url)) !== digest) throw new Error("Parley's download differs from the upload");
  await send("PUT", `${floor.base}/objects/bench-${size}`, { body: file });
  if (sha256(await send("GET", `${floor.base}/objects/bench-${size}`)) !== digest) {
    throw new Error("the floor's download differs from the upload");
  }

  // Every upload is a new object on both sides (Parley's get new ids): the local R2 grows alike on each, so neither
  // gains from overwriting a few keys while the other fills the disk.
  let floorKeys = 0;
  const floorPut = () => send("PUT", `${floor.base}/objects/put-${size}-${floorKeys++}`, { body: file });
  const rawUpload = () =>
    send("POST", `${parley.base}/v1/attachments?name=bench.bin`, {
      headers: { ...auth, "content-type": "application/octet-stream" },
      body: file,
    });
  // The multipart body is encoded once, as the raw file is made once: the timing is the server's, not Node's
  // FormData encoder streaming the file through JavaScript (a browser encodes natively).
  const form = new FormData();
  form.append("file", new Blob([file], { type: "application/octet-stream" }), "bench.bin");
  const encoded = new Request("http://encode.invalid/", { method: "POST", body: form });
  const formType = encoded.headers.get("content-type");
  const formBody = new Uint8Array(await encoded.arrayBuffer());
  const formUpload = () =>
    send("POST", `${parley.base}/v1/attachments`, { headers: { ...auth, "content-type": formType }, body: formBody });
  const floorGet = () => send("GET", `${floor.base}/objects/bench-${size}`);
  const parleyGet = () => send("GET", stored.url);

  for (const concurrency of [1, CONCURRENCY]) {
    results.push(await sideBySide(`upload raw ${mib}, c=${concurrency}`, size, concurrency, floorPut, rawUpload));
    results.push(
      await sideBySide(`upload multipart ${mib}, c=${concurrency}`, size, concurrency, floorPut, formUpload),
    );
    results.push(await sideBySide(`download ${mib}, c=${concurrency}`, size, concurrency, floorGet, parleyGet));
  }
  return results;
}

// --- output -----------------------------------------------------------------------------------------------------

function table(results) {
  const rows = [["metric", "floor", "Parley", "ratio", "Parley p50", "floor p50"]];
  for (const r of results) {
    rows.push([
      r.label,
      `${r.floor.mibPerSecond.toFixed(1)} MiB/s`,
      `${r.parley.mibPerSecond.toFixed(1)} MiB/s`,
      `${(r.parley.mibPerSecond / r.floor.mibPerSecond).toFixed(2)}x`,
      `${r.parley.p50Ms.toFixed(1)} ms`,
      `${r.floor.p50Ms.toFixed(1)} ms`,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows
    .map((row) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join("  "))
    .join("\n");
}

// --- main -------------------------------------------------------------------------------------------------------

async function main() {
  const startedAt = new Date();
  runDir = mkdtempSync(join(os.tmpdir(), "parley-bench-attachments-"));
  const [parley, floor] = [await startParley(), await startFloor()];
  const org = json(
    await send("POST", `${parley.base}/v1/orgs`, {
      headers: { authorization: `Bearer ${parley.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "Bench" }),
    }),
  );
  const results = [];
  for (const size of SIZES) results.push(...(await benchSize(parley, floor, org.apiKey, size)));
  const reloads = servers.map((s) => reloadsIn(s.logPath)).reduce((a, b) => a + b, 0);

  const machine = { node: process.version, cpus: os.cpus().length, os: `${os.type()} ${os.release()}` };
  console.log("");
  console.log(table(results));
  console.log("");
  console.log(
    `ratio = Parley / floor throughput (target at least 0.8x); requests per server and row: ` +
      `${SIZES.map((size) => `${roundsFor(size)} (${(size / MiB).toFixed(size % MiB === 0 ? 0 : 1)} MiB)`).join(", ")}; ` +
      `node ${machine.node}, ${machine.cpus} cpus, ${machine.os}` +
      (reloads > 0 ? `; ${reloads} wrangler reload(s) during the run: figures suspect` : ""),
  );
  saveResults("attachments", startedAt, {
    config: { sizes: SIZES, rounds: ROUNDS, concurrency: CONCURRENCY },
    machine,
    results,
  });
}

process.on("exit", killServersNow);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    killServersNow();
    process.exit(130);
  });
}

let failed = false;
try {
  await main();
} catch (error) {
  failed = true;
  console.error(`[bench] failed: ${error.stack ?? error.message}`);
} finally {
  await stopServers();
  if (runDir && !KEEP && !failed) rmSync(runDir, { recursive: true, force: true });
  else if (runDir) log(`state and logs kept in ${runDir}`);
}
process.exit(failed ? 1 : 0);
