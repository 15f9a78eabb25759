import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import type { TestProject } from "vitest/node";
import { startPushEndpoint } from "./push-endpoint";
import { startSmtpServer } from "./smtp-server";

declare module "vitest" {
  export interface ProvidedContext {
    /** The bundled notifications worker, run by the tests as an auxiliary worker. */
    notificationsWorkerPath: string;
    /** Port of the local SMTP server the notifications worker sends to. */
    smtpPort: number;
    /** Origin of the local push service and of the control API of both servers (`/control/...`). */
    controlOrigin: string;
    /** The VAPID key pair the workers are configured with (base64url point and base64url `d`). */
    vapidPublicKey: string;
    vapidPrivateKey: string;
  }
}

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Bundles the notifications worker the way wrangler would, for Miniflare to load as an auxiliary worker. */
export async function bundleNotificationsWorker(outdir: string): Promise<string> {
  const outfile = join(outdir, "index.js");
  await build({
    entryPoints: [join(root, "src", "notifications", "index.ts")],
    outfile,
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    mainFields: ["module", "main"],
    conditions: ["workerd", "worker", "browser"],
    external: ["cloudflare:*", "node:*"],
    logLevel: "warning",
  });
  return outfile;
}

/**
 * Global setup of the workers project: bundles the notifications worker, makes a VAPID key pair, and starts a real
 * local push service and SMTP server (both recording what they receive) for the notification tests.
 */
export default async function setup(project: TestProject) {
  // Inside the project: Miniflare resolves modules relative to it and refuses paths that climb out of it.
  const tmp = join(root, ".wrangler", "tmp");
  mkdirSync(tmp, { recursive: true });
  const outdir = mkdtempSync(join(tmp, "test-notifications-"));
  const workerPath = await bundleNotificationsWorker(outdir);
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = privateKey.export({ format: "jwk" });
  const point = publicKey.export({ format: "der", type: "spki" }).subarray(-65);
  const vapidPublicKey = Buffer.from(point).toString("base64url");

  const smtp = await startSmtpServer();
  const push = await startPushEndpoint({ vapidPublicKey, smtp });

  project.provide("notificationsWorkerPath", workerPath);
  project.provide("smtpPort", smtp.port);
  project.provide("controlOrigin", push.origin);
  project.provide("vapidPublicKey", vapidPublicKey);
  project.provide("vapidPrivateKey", jwk.d!);

  return async () => {
    await Promise.all([smtp.close(), push.close()]);
    rmSync(outdir, { recursive: true, force: true });
  };
}
