import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    /** The origin of the dev server the e2e tests run against, e.g. `http://127.0.0.1:40123`. */
    baseUrl: string;
    /** The `ADMIN_TOKEN` the dev server was started with. */
    adminToken: string;
  }
}

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const STARTUP_TIMEOUT_MS = 120_000;
const LOG_LINES = 200;

/** Ports the OS reports free right now (listening on port 0), distinct from each other. */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => (server.address() as AddressInfo).port);
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

/** Kills the dev server's whole process group (dev.mjs, wrangler, workerd). */
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * Starts the app the way a user does, `node scripts/dev.mjs`, on free ports with fresh local state and a random admin
 * token; provides `baseUrl` and `adminToken` to the tests; stops the whole process group afterwards.
 */
export default async function setup(project: TestProject) {
  const [port, inspectorPort] = await freePorts(2);
  const persistTo = mkdtempSync(join(tmpdir(), "parley-e2e-"));
  const adminToken = randomBytes(24).toString("hex");
  const baseUrl = `http://127.0.0.1:${port}`;

  const child = spawn(
    process.execPath,
    [
      join(root, "scripts", "dev.mjs"),
      "--port",
      String(port),
      "--inspector-port",
      String(inspectorPort),
      "--persist-to",
      persistTo,
      "--var",
      `ADMIN_TOKEN:${adminToken}`,
      // The default, whatever a local .dev.vars sets: the browser test's page is served from another origin.
      "--var",
      "CORS_ORIGINS:*",
    ],
    {
      cwd: root,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" },
    },
  );
  const log: string[] = [];
  const record = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (!line.trim()) continue;
      log.push(line);
      if (log.length > LOG_LINES) log.shift();
      if (process.env.PARLEY_E2E_LOG) console.log(`[dev] ${line}`);
    }
  };
  child.stdout?.on("data", record);
  child.stderr?.on("data", record);
  let exited: string | null = null;
  const exit = new Promise<void>((resolve) =>
    child.once("exit", (code, signal) => {
      exited = `exited with ${signal ?? code}`;
      resolve();
    }),
  );
  // Last resort if the runner dies without teardown: never leave a dev server behind.
  const onExit = () => killGroup(child, "SIGKILL");
  process.once("exit", onExit);

  const teardown = async () => {
    process.off("exit", onExit);
    if (exited === null) {
      killGroup(child, "SIGTERM");
      const timer = setTimeout(() => killGroup(child, "SIGKILL"), 5_000);
      await exit;
      clearTimeout(timer);
    }
    // workerd may outlive its parent for a moment: make sure the group is gone before removing its state.
    killGroup(child, "SIGKILL");
    rmSync(persistTo, { recursive: true, force: true });
  };

  try {
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    for (;;) {
      if (exited !== null) throw new Error(`the dev server ${exited}`);
      try {
        const response = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(2_000) });
        if (response.ok) break;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new Error(`the dev server did not answer /healthz in ${STARTUP_TIMEOUT_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  } catch (error) {
    await teardown();
    throw new Error(`${(error as Error).message}\n--- dev server output ---\n${log.join("\n")}`);
  }

  project.provide("baseUrl", baseUrl);
  project.provide("adminToken", adminToken);
  return teardown;
}
