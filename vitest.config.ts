import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { configDefaults, defineConfig } from "vitest/config";
import { notificationsWorker } from "./test/helpers/notifications-worker-config";
import { startModelServer } from "./test/helpers/model-server";

export default defineConfig(async () => {
  const migrations = await readD1Migrations("./migrations");
  // A real OpenAI-compatible streaming server for the assistant tests (`openai:<model>` agents).
  const model = await startModelServer();
  return {
    test: {
      projects: [
        {
          // Unit and integration tests in the real Workers runtime.
          plugins: [
            cloudflareTest(({ inject }) => ({
              wrangler: { configPath: "./wrangler.toml" },
              miniflare: {
                bindings: {
                  TEST_MIGRATIONS: migrations,
                  ADMIN_TOKEN: "test-admin-token",
                  JWT_SECRET: "test-jwt-secret-0123456789abcdef",
                  URL_SIGNING_SECRET: "test-url-signing-secret-0123456789",
                  // The defaults, whatever a local .dev.vars sets (the runtime reads it too, beneath these).
                  MAX_ATTACHMENT_BYTES: String(25 * 1024 * 1024),
                  MODEL_TIMEOUT_MS: "120000",
                  CORS_ORIGINS: "*",
                  VAPID_PUBLIC_KEY: inject("vapidPublicKey"),
                  OPENAI_BASE_URL: model.url,
                  OPENAI_API_KEY: "test-openai-key",
                  MODEL_IDLE_TIMEOUT_MS: "1500",
                  EVENTS_REDRIVE_DELAY_SECONDS: "0",
                },
                workers: [notificationsWorker(inject)],
              },
            })),
          ],
          test: {
            name: "workers",
            include: ["test/**/*.test.ts"],
            exclude: [...configDefaults.exclude, "test/e2e/**"],
            setupFiles: ["./test/helpers/apply-migrations.ts"],
            globalSetup: ["./test/helpers/notification-servers.ts"],
            testTimeout: 30_000,
            hookTimeout: 30_000,
          },
        },
        {
          // End-to-end tests in Node: the SDK against `npm run dev`, started once by the global setup.
          test: {
            name: "e2e",
            environment: "node",
            include: ["test/e2e/**/*.test.ts"],
            globalSetup: ["./test/e2e/global-setup.ts"],
            testTimeout: 60_000,
            hookTimeout: 60_000,
          },
        },
      ],
    },
  };
});
