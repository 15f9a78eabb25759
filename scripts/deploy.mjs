#!/usr/bin/env node
// `npm run deploy`: applies D1 migrations remotely, then deploys every worker with `wrangler deploy`.
// Arguments after `npm run deploy --` go to each `wrangler deploy` (for example `--dry-run`).
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const wrangler = join(root, "node_modules", "wrangler", "bin", "wrangler.js");
const args = process.argv.slice(2);
const dryRun = args.includes("--dry-run");

/** Every worker's wrangler config, deployed in this order. */
const configs = ["wrangler.toml", "src/notifications/wrangler.toml"];

function run(argv) {
  console.log(`[parley] wrangler ${argv.join(" ")}`);
  const result = spawnSync(process.execPath, [wrangler, ...argv], { cwd: root, stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

if (!dryRun) run(["d1", "migrations", "apply", "DB", "--remote"]);
for (const config of configs) run(["deploy", "--config", config, ...args]);
