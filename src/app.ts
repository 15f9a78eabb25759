import { Hono, type Context } from "hono";
import { cors } from "hono/cors";
import { methodNotAllowed } from "hono/method-not-allowed";
import type { AppEnv } from "./env";
import { ApiError, errorBody } from "./errors";
import { buildOpenApi } from "./http/openapi";
import { newId } from "./lib/ids";
import { accountRoutes } from "./routes/accounts";
import { apiKeyRoutes } from "./routes/api-keys";
import { attachmentRoutes } from "./routes/attachments";
import { conversationRoutes } from "./routes/conversations";
import { docsPage } from "./routes/docs";
import { flowRunRoutes } from "./routes/flow-runs";
import { notificationRuleRoutes } from "./routes/notification-rules";
import { accountNotificationRoutes, notificationRoutes, pushRoutes } from "./routes/notifications";
import { orgRoutes } from "./routes/orgs";
import { realtimeRoutes } from "./routes/realtime";
import { roomRoutes } from "./routes/rooms";
import { tokenRoutes } from "./routes/tokens";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The `/v1` API, chained so its types flow to `hono/client`. */
const api = new Hono<AppEnv>()
  .route("/orgs", orgRoutes)
  .route("/api-keys", apiKeyRoutes)
  .route("/tokens", tokenRoutes)
  .route("/accounts", accountRoutes)
  .route("/accounts", accountNotificationRoutes)
  .route("/notification-rules", notificationRuleRoutes)
  .route("/notifications", notificationRoutes)
  .route("/push", pushRoutes)
  .route("/rooms", roomRoutes)
  .route("/conversations", conversationRoutes)
  .route("/flow-runs", flowRunRoutes)
  .route("/attachments", attachmentRoutes)
  .route("/", realtimeRoutes);

/** The type of the `/v1` API, for typed clients. */
export type ApiType = typeof api;

/**
 * Sets a response header. The 101 of a WebSocket upgrade comes from a Durable Object with headers that cannot
 * change: it is rebuilt around the same socket.
 */
function setHeader(c: Context<AppEnv>, name: string, value: string): void {
  try {
    c.res.headers.set(name, value);
  } catch {
    const headers = new Headers(c.res.headers);
    headers.set(name, value);
    c.res = new Response(c.res.body, { status: c.res.status, headers, webSocket: c.res.webSocket });
  }
}

/**
 * Builds the Worker's Hono app: request ids, CORS, the error shape, unknown routes and methods (404), the API, and
 * its OpenAPI document.
 */
export function createApp() {
  const app = new Hono<AppEnv>();

  app.use(async function requestId(c, next) {
    const incoming = c.req.header("x-request-id");
    const id = incoming && REQUEST_ID.test(incoming) ? incoming : newId("req");
    c.set("requestId", id);
    await next();
    setHeader(c, "x-request-id", id);
  });

  // Browsers call the API from their application's origin: credentials are bearer tokens, never cookies, so any
  // origin may (`CORS_ORIGINS`, `*` by default, narrows it to a comma-separated list).
  app.use(
    cors({
      origin: (origin, c) => allowedOrigin(c.env.CORS_ORIGINS, origin),
      allowHeaders: ["Authorization", "Content-Type", "X-Request-Id", "Range", "If-None-Match"],
      exposeHeaders: ["X-Request-Id", "Retry-After", "ETag", "Content-Disposition", "Content-Range", "Accept-Ranges"],
      maxAge: 86_400,
    }),
  );

  // A method a path does not take is an unknown route: 404 in the contract's shape (its list of codes has no 405),
  // with an Allow header naming the methods it takes.
  app.use(
    methodNotAllowed({
      app,
      onMethodNotAllowed: (c, methods) =>
        c.json(
          errorBody(
            {
              code: "NOT_FOUND",
              message: `no route ${c.req.method} ${c.req.path}; this path takes ${methods.join(", ")}`,
            },
            c.get("requestId"),
          ),
          404,
          { Allow: methods.join(", ") },
        ),
    }),
  );

  app.route("/v1", api);

  let openapi: ReturnType<typeof buildOpenApi> | undefined;
  app.get("/v1/openapi.json", (c) => {
    openapi ??= buildOpenApi(app, {
      title: "Parley API",
      version: "1.0.0",
      description: "Real-time conversations for people and AI agents. See API.md for the full contract.",
    });
    return c.json(openapi);
  });
  app.get("/docs", (c) => c.html(docsPage("/v1/openapi.json")));
  app.get("/", (c) => c.json({ name: "parley", docs: "/docs", openapi: "/v1/openapi.json" }));
  // Liveness, and the floor of the benchmarks: a route that does no work.
  app.get("/healthz", (c) => c.json({ ok: true }));

  app.notFound((c) =>
    c.json(
      errorBody({ code: "NOT_FOUND", message: `no route for ${c.req.method} ${c.req.path}` }, c.get("requestId")),
      404,
    ),
  );

  app.onError((error, c) => {
    const requestId = c.get("requestId") ?? newId("req");
    if (error instanceof ApiError) {
      if (error.status >= 500) console.error("request failed", { requestId, code: error.code, message: error.message });
      return c.json(errorBody(error.toInfo(), requestId), error.status, {
        "x-request-id": requestId,
        // What a 401 asks for (RFC 9110): a bearer token.
        ...(error.status === 401 ? { "www-authenticate": 'Bearer realm="parley"' } : {}),
        ...error.headers,
      });
    }
    console.error("unhandled error", {
      requestId,
      error: error instanceof Error ? (error.stack ?? error.message) : String(error),
    });
    return c.json(errorBody({ code: "INTERNAL", message: "internal error" }, requestId), 500, {
      "x-request-id": requestId,
    });
  });

  return app;
}

/** The `Access-Control-Allow-Origin` for a request's origin: `*` unless `CORS_ORIGINS` lists the allowed ones. */
function allowedOrigin(configured: string | undefined, origin: string): string | null {
  const list = (configured ?? "*")
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean);
  if (list.length === 0 || list.includes("*")) return "*";
  return list.includes(origin) ? origin : null;
}
