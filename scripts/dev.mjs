#!/usr/bin/env node
// `npm run dev`: prepares local state and starts every worker with `wrangler dev`.
// 1. creates .dev.vars from .dev.vars.example when it is missing (with a VAPID key pair when it has none), and gives
//    every worker's config directory a copy of it;
// 2. applies the D1 migrations to the local database;
// 3. starts `wrangler dev` with every worker (the main worker on 127.0.0.1:8787, the notifications worker beside it),
//    passing through any arguments given after `npm run dev --`.
import { spawn, spawnSync } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { appendFileSync, copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
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
ensureVapidKeys(devVars);
shareDevVars(devVars, [join(root, "src", "notifications")]);

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

/**
 * Web Push needs a VAPID key pair: when VAPID_PUBLIC_KEY or VAPID_PRIVATE_KEY is missing or empty, a fresh P-256 pair
 * is written into .dev.vars: the public key as base64url of the uncompressed point (what browsers take as
 * `applicationServerKey`), the private key as base64url of the 32-byte scalar `d` (the `web-push` format).
 */
function ensureVapidKeys(path) {
  const text = readFileSync(path, "utf8");
  const value = (name) =>
    text
      .split(/\r?\n/)
      .map((line) => new RegExp(`^\\s*${name}\\s*=\\s*(\\S.*)$`).exec(line)?.[1])
      .findLast(Boolean);
  if (value("VAPID_PUBLIC_KEY") && value("VAPID_PRIVATE_KEY")) return;
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const jwk = privateKey.export({ format: "jwk" });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, "base64url"), Buffer.from(jwk.y, "base64url")]);
  const keys = { VAPID_PUBLIC_KEY: point.toString("base64url"), VAPID_PRIVATE_KEY: jwk.d };
  if (!value("VAPID_SUBJECT")) keys.VAPID_SUBJECT = "mailto:dev@example.com";
  let next = text;
  for (const [name, key] of Object.entries(keys)) {
    const line = new RegExp(`^[ \\t]*${name}[ \\t]*=.*$`, "m");
    next = line.test(next)
      ? next.replace(line, `${name}=${key}`)
      : `${next}${next.endsWith("\n") ? "" : "\n"}${name}=${key}\n`;
  }
  writeFileSync(path, next);
  log("generated a VAPID key pair for Web Push into .dev.vars");
}

/**
 * Wrangler reads `.dev.vars` next to each worker's config: the other workers get a copy of the root file, so one file
 * configures every worker `npm run dev` starts.
 */
function shareDevVars(path, dirs) {
  const text = readFileSync(path, "utf8");
  for (const dir of dirs) {
    writeFileSync(
      join(dir, ".dev.vars"),
      `# A copy of the repository's .dev.vars, written by npm run dev: edit that file instead.\n${text}`,
    );
  }
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

// Every worker in one wrangler dev: the first config is the main worker (on --port), the others run beside it.
const devArgs = [wrangler, "dev", "--config", "wrangler.toml", "--config", "src/notifications/wrangler.toml", ...args];
if (!args.includes("--ip")) devArgs.push("--ip", "127.0.0.1");
if (!args.includes("--port")) devArgs.push("--port", "8787");
if (persistIndex < 0) devArgs.push("--persist-to", persistTo);

log(`starting wrangler dev (${devArgs.slice(2).join(" ")})`);
const child = spawn(process.execPath, devArgs, { cwd: root, stdio: "inherit" });
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
