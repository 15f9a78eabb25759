import { dirname } from "node:path";
import type { ProvidedContext } from "vitest";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { notificationsVars } from "./notifications-vars";

type Inject = <K extends keyof ProvidedContext>(key: K) => ProvidedContext[K];

/**
 * The notifications worker as an auxiliary worker of the workers test project: its own wrangler config (the same D1
 * database as the main worker, the notifications queue's consumer and dead-letter queue), the bundle the global setup
 * built, and the local SMTP server and VAPID keys the global setup made.
 */
export function notificationsWorker(inject: Inject) {
  // The bundle is one module: wrangler's module rules (for unbundled sources) do not apply.
  const { modulesRules: _rules, ...workerOptions } = unstable_getMiniflareWorkerOptions(
    "./src/notifications/wrangler.toml",
  ).workerOptions;
  return {
    ...workerOptions,
    name: "parley-notifications",
    modules: true,
    scriptPath: inject("notificationsWorkerPath"),
    modulesRoot: dirname(inject("notificationsWorkerPath")),
    bindings: {
      ...(workerOptions.bindings as Record<string, unknown> | undefined),
      ...notificationsVars(inject),
    },
  };
}
