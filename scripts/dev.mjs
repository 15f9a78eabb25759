#!/usr/bin/env node
// `npm run dev`: prepares local state and starts every worker with `wrangler dev`.
// 1. creates .dev.vars from .dev.vars.example when it is missing;
// 2. applies the D1 migrations to the local database;
// 3. starts `wrangler dev` on 127.0.0.1:8787, passing through any arguments given after `npm run dev --`.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, copyFileSync, existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const wrangler = join(root, "node_modules", "wrangler", "bin", "wrangler.js");
const args = process.argv.slice(2);

function log(message) {
  console.log(`[parley] ${message}`);
}

const devVars = join(root, ".dev.vars");
if (!existsSync(devVars)) {
  copyFileSync(join(root, ".dev.vars.example"), devVars);
  log("created .dev.vars from .dev.vars.example");
}
completeDevVars(devVars);

/**
 * Makes sure the settings the server cannot run without are in .dev.vars: a file written by hand may lack them.
 * Missing signing secrets get fresh random values; a missing admin token gets the example's.
 */
function completeDevVars(path) {
  const text = readFileSync(path, "utf8");
  const present = new Set(
    text
      .split(/\r?\n/)
      .map((line) => /^\s*([A-Z0-9_]+)\s*=\s*(\S.*)$/.exec(line))
      .filter(Boolean)
      .map((match) => match[1]),
  );
  const additions = [];
  if (!present.has("ADMIN_TOKEN")) additions.push("ADMIN_TOKEN=dev-admin-token");
  for (const name of ["JWT_SECRET", "URL_SIGNING_SECRET"]) {
    if (!present.has(name)) additions.push(`${name}=${randomBytes(32).toString("base64url")}`);
  }
  if (additions.length === 0) return;
  appendFileSync(
    path,
    `${text.endsWith("\n") || text === "" ? "" : "\n"}# added by npm run dev\n${additions.join("\n")}\n`,
  );
  log(`added ${additions.map((line) => line.split("=")[0]).join(", ")} to .dev.vars`);
}

// Where local D1, R2, Durable Object and queue state live; shared by the migration step and the dev server.
const persistIndex = args.indexOf("--persist-to");
const persistTo = persistIndex >= 0 ? args[persistIndex + 1] : join(root, ".wrangler", "state");

log("applying D1 migrations to the local database");
const migrate = spawnSync(
  process.execPath,
  [wrangler, "d1", "migrations", "apply", "DB", "--local", "--persist-to", persistTo],
  { cwd: root, stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, CI: "true" } },
);
if (migrate.status !== 0) {
  console.error("[parley] applying migrations failed");
  process.exit(migrate.status ?? 1);
}

const devArgs = [wrangler, "dev", ...args];
if (!args.includes("--ip")) devArgs.push("--ip", "127.0.0.1");
if (!args.includes("--port")) devArgs.push("--port", "8787");
if (persistIndex < 0) devArgs.push("--persist-to", persistTo);

log(`starting wrangler dev (${devArgs.slice(2).join(" ")})`);
const child = spawn(process.execPath, devArgs, { cwd: root, stdio: "inherit" });
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
