// Helpers shared by the benchmarks: ports, process groups, server logs, the app snapshot, starting servers, statistics.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  cpSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import { dirname, join, relative } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

/** The repository root. */
export const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Prints a progress line. */
export function log(message) {
  console.log(`[bench] ${message}`);
}

/** Writes a run's results as JSON to bench/.results/<bench>-<startedAt>.json; answers the file's path. */
export function saveResults(bench, startedAt, data) {
  const dir = join(root, "bench", ".results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${bench}-${startedAt.toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify(data, null, 2) + "\n");
  log(`results written to ${relative(root, file)}`);
  return file;
}

/** Waits `ms` milliseconds. */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** An integer from the environment, at least `min`; exits with a message when it is not one. */
export function intEnv(name, fallback, min = 1) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    console.error(`[bench] ${name} must be an integer of at least ${min}, got '${raw}'`);
    process.exit(2);
  }
  return value;
}

/** Free TCP ports on 127.0.0.1: listens on port 0 for each, then closes them all. */
export async function freePorts(count) {
  const servers = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", resolve);
      });
      servers.push(server);
    }
    return servers.map((server) => server.address().port);
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

function groupAlive(pid) {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Stops a whole process group (node, wrangler, esbuild, workerd): TERM, then KILL after 5 s. */
export async function stopProcessGroup(pid) {
  if (!pid) return;
  try {
    process.kill(-pid, "SIGTERM");
  } catch {
    return; // already gone
  }
  const deadline = Date.now() + 5000;
  while (groupAlive(pid) && Date.now() < deadline) await sleep(100);
  if (groupAlive(pid)) killProcessGroupNow(pid);
}

/** Kills a process group at once; synchronous, so it works in an 'exit' handler. */
export function killProcessGroupNow(pid) {
  if (!pid) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** The last lines of a server log. */
export function logTail(logPath, lines = 40) {
  if (!logPath || !existsSync(logPath)) return "";
  return readFileSync(logPath, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
}

/**
 * How often wrangler dev has reloaded the worker so far, from its log. It reloads on every change of the bundle's
 * inputs, so a reload inside a measurement means a stall, cold objects, maybe other code.
 */
export function reloadsIn(logPath) {
  if (!logPath || !existsSync(logPath)) return 0;
  return readFileSync(logPath, "utf8").split("Reloading local server").length - 1;
}

/** Mirrors a directory tree with hard links: cheap, and later replacements of the originals do not reach it. */
function linkTree(src, dst) {
  mkdirSync(dst);
  for (const entry of readdirSync(src, { withFileTypes: true })) {
    const from = join(src, entry.name);
    const to = join(dst, entry.name);
    if (entry.isDirectory()) linkTree(from, to);
    else if (entry.isSymbolicLink()) symlinkSync(readlinkSync(from), to);
    else linkSync(from, to);
  }
}

/**
 * A copy of the project to run the app from. wrangler dev watches every input of the bundle, node_modules included,
 * and reloads the worker on any change; run from the working tree, an edit or an `npm install` made during a long run
 * lands inside a measurement (a stall, cold objects, other code, a broken build, or a 503 "worker restarted
 * mid-request"). The snapshot pins the code and dependencies the run started with. node_modules is mirrored with hard
 * links (npm replaces files rather than rewriting them); where that is impossible (another filesystem) it is linked
 * as a whole, and a change there still reloads the worker. Local secrets stay behind: scripts/dev.mjs makes the
 * snapshot's .dev.vars from .dev.vars.example.
 */
export function snapshotApp(dir) {
  const skip = new Set(["node_modules", ".git", ".wrangler", "bench", "test", "coverage", "dist"]);
  mkdirSync(dir);
  for (const entry of readdirSync(root)) {
    if (skip.has(entry) || (entry.startsWith(".dev.vars") && entry !== ".dev.vars.example")) continue;
    cpSync(join(root, entry), join(dir, entry), { recursive: true });
  }
  try {
    linkTree(join(root, "node_modules"), join(dir, "node_modules"));
  } catch (error) {
    log(`cannot hard-link node_modules (${error.code ?? error.message}); linking the directory instead`);
    rmSync(join(dir, "node_modules"), { recursive: true, force: true });
    symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  }
  return dir;
}

/** The p-th percentile of sorted numbers (nearest rank). */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/**
 * The environment of every server a bench starts. `wrangler dev` attaches a local trace collector to every worker
 * and Workflow engine by default (`X_LOCAL_OBSERVABILITY`, for its local explorer): a streaming tail that turns each
 * invocation's trace into JavaScript objects on the one workerd thread, measured at 12-15% of that thread and about
 * 40% of server CPU per assistant stream. Production has no such collector in the worker's process, so the benches
 * run without it (set X_LOCAL_OBSERVABILITY=true to measure with it). Metrics are not sent.
 */
export const SERVER_ENV = {
  ...process.env,
  X_LOCAL_OBSERVABILITY: process.env.X_LOCAL_OBSERVABILITY ?? "false",
  WRANGLER_SEND_METRICS: "false",
};

/**
 * Spawns a server (`node ...args`) in its own process group, so the whole tree can be killed with kill(-pid), its
 * output appended to `logPath`. Answers a handle: { name, pid, exited, exitInfo, logPath, base }; `exited` and
 * `exitInfo` follow the process.
 */
export function spawnLogged(name, args, cwd, logPath) {
  const server = { name, pid: null, exited: false, exitInfo: null, logPath, base: null };
  const out = openSync(logPath, "a");
  const child = spawn(process.execPath, args, {
    cwd,
    detached: true,
    stdio: ["ignore", out, out],
    env: SERVER_ENV,
  });
  closeSync(out);
  server.pid = child.pid;
  child.on("exit", (code, signal) => {
    server.exited = true;
    server.exitInfo = signal ? `signal ${signal}` : `code ${code}`;
  });
  return server;
}

/** Waits until `GET /healthz` on 127.0.0.1:`port` answers 200; sets `server.base`. Throws with the log's tail. */
export async function waitHealthy(server, port, timeoutMs = 90_000) {
  server.base = `http://127.0.0.1:${port}`;
  const started = performance.now();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (server.exited) {
      throw new Error(`${server.name} exited before answering (${server.exitInfo}); log:\n${logTail(server.logPath)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${server.name}: GET /healthz did not answer 200 within ${timeoutMs / 1000} s; log:\n` +
          logTail(server.logPath),
      );
    }
    try {
      const res = await fetch(`${server.base}/healthz`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    await sleep(250);
  }
  log(`${server.name} ready on ${server.base} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return server;
}

/**
 * Starts Parley as a user does, `node scripts/dev.mjs`, from `appDir` (the working tree or a snapshot of it) on free
 * ports, with its state in `persistTo`, its output in `logPath`, a random ADMIN_TOKEN and JWT_SECRET, and `vars`
 * ({ NAME: value }) passed as `--var NAME:value`. `onSpawn(server)` is called as soon as the process exists, so the
 * caller can kill it on any failure; answers once `/healthz` answers: the handle of spawnLogged plus `adminToken` and `inspectorPort`.
 */
export async function startDevServer({
  name = "parley",
  appDir,
  persistTo,
  logPath,
  vars = {},
  logLevel = null,
  timeoutMs = 90_000,
  onSpawn = () => {},
}) {
  const [port, inspectorPort] = await freePorts(2);
  const adminToken = vars.ADMIN_TOKEN ?? `bench-admin-${randomBytes(16).toString("hex")}`;
  const jwtSecret = randomBytes(16).toString("hex"); // 32 characters
  const args = [
    join(appDir, "scripts", "dev.mjs"),
    "--port",
    String(port),
    "--inspector-port",
    String(inspectorPort),
    "--persist-to",
    persistTo,
  ];
  for (const [key, value] of Object.entries({ ADMIN_TOKEN: adminToken, JWT_SECRET: jwtSecret, ...vars })) {
    args.push("--var", `${key}:${value}`);
  }
  if (logLevel) args.push("--log-level", logLevel);
  log(
    `starting ${name} on 127.0.0.1:${port} (inspector ${inspectorPort}) from ${appDir === root ? "the working tree" : appDir}`,
  );
  const server = spawnLogged(name, args, appDir, logPath);
  server.adminToken = adminToken;
  server.inspectorPort = inspectorPort;
  onSpawn(server);
  return waitHealthy(server, port, timeoutMs);
}

// --- /proc: the workerd processes of a server and their CPU ---------------------------------------------------

const CLK_TCK = (() => {
  const out = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const value = Number(out.stdout?.trim());
  return Number.isFinite(value) && value > 0 ? value : 100;
})();

/** `/proc/{pid}/stat` split after the command name: [state, ppid, ...]; null when the process is gone. */
function procStat(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const close = text.lastIndexOf(")");
    return { comm: text.slice(text.indexOf("(") + 1, close), fields: text.slice(close + 2).split(" ") };
  } catch {
    return null;
  }
}

/**
 * Starts a bench worker (a floor, the partyserver room) as `wrangler dev --config <config>`, run in place from the
 * repository, on free ports of 127.0.0.1 with its state in `persistTo`, its output in `logPath`, and `vars` ({ NAME:
 * value }) passed as `--var NAME:value`. `onSpawn(server)` is called as soon as the process exists; answers the handle
 * of spawnLogged once `/healthz` answers.
 */
export async function startWorker({ name, config, persistTo, logPath, vars = {}, logLevel, timeoutMs, onSpawn }) {
  const [port, inspectorPort] = await freePorts(2);
  const args = [
    join(root, "node_modules", "wrangler", "bin", "wrangler.js"),
    "dev",
    ...["--config", join(root, config), "--port", String(port), "--inspector-port", String(inspectorPort)],
    ...["--persist-to", persistTo, "--ip", "127.0.0.1"],
    ...Object.entries(vars).flatMap(([key, value]) => ["--var", `${key}:${value}`]),
  ];
  if (logLevel) args.push("--log-level", logLevel);
  log(`starting ${name} on 127.0.0.1:${port} (inspector ${inspectorPort})`);
  const server = spawnLogged(name, args, root, logPath);
  server.inspectorPort = inspectorPort;
  onSpawn?.(server);
  return waitHealthy(server, port, timeoutMs);
}

/** The pids of every workerd process below `pid` in the process tree. */
export function workerdPids(pid) {
  const children = new Map();
  const comms = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(entry);
    if (!stat) continue;
    const ppid = Number(stat.fields[1]);
    comms.set(Number(entry), stat.comm);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(Number(entry));
  }
  const found = [];
  const stack = [pid];
  while (stack.length > 0) {
    const current = stack.pop();
    for (const child of children.get(current) ?? []) {
      if (comms.get(child) === "workerd") found.push(child);
      stack.push(child);
    }
  }
  return found.sort((a, b) => a - b);
}

/** Re-reads the server's workerd pids (wrangler restarts workerd on a reload); answers the list, the same object
 * when nothing changed. */
export function refreshWorkerd(server) {
  const pids = workerdPids(server.pid);
  if (pids.join() !== server.workerd.join()) server.workerd = pids;
  return server.workerd;
}

/** CPU time (ms, user + system) used so far by the server's workerd processes, summed. */
export function serverCpuMs(server) {
  let ticks = 0;
  for (const pid of server.workerd) {
    const stat = procStat(pid);
    if (stat) ticks += Number(stat.fields[11]) + Number(stat.fields[12]); // utime, stime
  }
  return (ticks / CLK_TCK) * 1000;
}

// --- where the worker's CPU goes -------------------------------------------------------------------------------

/**
 * A CPU profile of the app's main worker (the Room and Hub objects, the flow Workflow and the AI SDK share its
 * isolate) while `work` runs, through wrangler's inspector port. Self time is summed per module of the bundle (esbuild
 * marks each with a `// path` comment) and per function; native calls count under their caller's module.
 */
export async function profileWorker(inspectorPort, work) {
  const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const target =
    targets.find((t) => t.title === "Cloudflare Worker: parley" || t.id?.endsWith("-parley")) ?? targets[0];
  const ws = new WebSocket(target.webSocketDebuggerUrl, { perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  const waiting = new Map();
  let ids = 0;
  ws.on("message", (buf) => {
    const message = JSON.parse(buf.toString());
    waiting.get(message.id)?.(message);
    waiting.delete(message.id);
  });
  const send = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = ++ids;
      const timer = setTimeout(() => reject(new Error(`the inspector did not answer ${method}`)), 60_000);
      waiting.set(id, (message) => {
        clearTimeout(timer);
        if (message.error) reject(new Error(`${method}: ${message.error.message}`));
        else resolve(message.result);
      });
      ws.send(JSON.stringify({ id, method, params }));
    });
  try {
    await send("Profiler.enable");
    await send("Profiler.setSamplingInterval", { interval: 200 });
    await send("Profiler.start");
    const started = performance.now();
    await work();
    const wallMs = performance.now() - started;
    const { profile } = await send("Profiler.stop");
    await send("Debugger.enable");
    const sections = new Map(); // scriptId -> [{ line, name }] in line order
    for (const scriptId of new Set(profile.nodes.map((n) => n.callFrame.scriptId))) {
      if (!scriptId || scriptId === "0") continue;
      const { scriptSource } = await send("Debugger.getScriptSource", { scriptId }).catch(() => ({ scriptSource: "" }));
      const marks = [];
      scriptSource.split("\n").forEach((text, line) => {
        const mark = /^\/\/ ((?:\.\.\/)*(?:node_modules|src|bench|scripts)\/\S+)$/.exec(text);
        if (mark) marks.push({ line, name: moduleName(mark[1]) });
      });
      sections.set(scriptId, marks);
    }
    await send("Debugger.disable");
    return { summary: summarizeProfile(profile, sections, wallMs), raw: profile };
  } finally {
    ws.close();
  }
}

/** `node_modules/@ai-sdk/provider-utils/dist/index.mjs` -> `@ai-sdk/provider-utils`; `src/room/room.ts` stays. */
function moduleName(path) {
  const at = path.lastIndexOf("node_modules/");
  if (at < 0) return path.replace(/^(\.\.\/)+/, "");
  const parts = path.slice(at + "node_modules/".length).split("/");
  return parts[0].startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0];
}

/** The profiler's own nodes: time outside JavaScript functions. */
const V8_NODES = new Set(["(program)", "(garbage collector)", "(root)"]);

function summarizeProfile(profile, sections, wallMs) {
  const round3 = (x) => Math.round(x * 1000) / 1000;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const sectionOf = (node) => {
    for (let n = node; n; n = byId.get(parent.get(n.id))) {
      const marks = sections.get(n.callFrame.scriptId);
      if (!marks || n.callFrame.url === "") continue;
      let name = "(worker code outside any module)";
      for (const mark of marks) if (mark.line <= n.callFrame.lineNumber) name = mark.name;
      return name;
    }
    return null;
  };
  const self = new Map();
  // Each sample weighs the same (the wall time over the samples): weighting a sample by the gap to the next one, as
  // profilers usually do, gives a function all the time the thread was descheduled after it, which on a busy
  // machine put 9% in a function that had 0.3% of the samples.
  const weightMs = profile.samples.length > 0 ? wallMs / profile.samples.length : 0;
  for (const id of profile.samples) self.set(id, (self.get(id) ?? 0) + weightMs);
  const modules = new Map();
  const functions = new Map();
  let idleMs = 0;
  let busyMs = 0;
  for (const [id, ms] of self) {
    const node = byId.get(id);
    const name = node.callFrame.functionName || "(anonymous)";
    if (name === "(idle)") {
      idleMs += ms;
      continue;
    }
    busyMs += ms;
    const module = V8_NODES.has(name) ? name : (sectionOf(node) ?? "(runtime: no worker code on the stack)");
    modules.set(module, (modules.get(module) ?? 0) + ms);
    const key = `${name} [${module}${node.callFrame.url ? `:${node.callFrame.lineNumber + 1}` : ""}]`;
    functions.set(key, (functions.get(key) ?? 0) + ms);
  }
  const top = (map, n) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, ms]) => ({ name, ms: round3(ms), share: round3(ms / busyMs) }));
  return {
    wallMs: round3(wallMs),
    busyMs: round3(busyMs),
    idleMs: round3(idleMs),
    modules: top(modules, 15),
    functions: top(functions, 25),
  };
}

/**
 * What a benchmark ran on, for its results: Node, the versions of `packages` as installed, CPUs, OS, memory, load,
 * and the commit (and whether src/ had uncommitted changes).
 */
export function machineInfo(packages = ["wrangler"]) {
  const cpus = os.cpus();
  const version = (pkg) => {
    try {
      return JSON.parse(readFileSync(join(root, "node_modules", pkg, "package.json"), "utf8")).version;
    } catch {
      return null;
    }
  };
  const git = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" });
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "src"], { cwd: root, encoding: "utf8" });
  return {
    node: process.version,
    ...Object.fromEntries(packages.map((pkg) => [pkg, version(pkg)])),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? "unknown",
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    totalMemGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadAvg: os.loadavg().map((x) => Math.round(x * 100) / 100),
    localObservability: SERVER_ENV.X_LOCAL_OBSERVABILITY,
    commit: git.status === 0 ? git.stdout.trim() : null,
    srcUncommitted: dirty.status === 0 ? dirty.stdout.trim() !== "" : null,
  };
}
