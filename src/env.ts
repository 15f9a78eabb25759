import type { Principal } from "./auth/principal";
import type { Hub } from "./hub/hub";
import type { Room } from "./room/room";
import type { QueueBody } from "./events/queue";

/** The bindings and configuration of the main worker (wrangler.toml and `.dev.vars`). */
export interface Bindings {
  DB: D1Database;
  ATTACHMENTS: R2Bucket;
  ROOMS: DurableObjectNamespace<Room>;
  HUBS: DurableObjectNamespace<Hub>;
  /** Queue bodies are `QueueBody`, or its JSON as text (what room outboxes send). */
  EVENTS: Queue<QueueBody | string>;
  NOTIFICATIONS: Queue<unknown>;
  FLOWS: Workflow;
  ADMIN_TOKEN?: string;
  JWT_SECRET?: string;
  JWT_ISSUER?: string;
  URL_SIGNING_SECRET?: string;
  MAX_ATTACHMENT_BYTES?: string;
  OPENAI_BASE_URL?: string;
  OPENAI_API_KEY?: string;
  /** Web Push application server key, served to browsers (`GET /v1/push/vapid-public-key`). */
  VAPID_PUBLIC_KEY?: string;
  /** Workers AI, for `workers-ai:<model>` agents (add an `[ai]` binding to use it). */
  AI?: Ai;
  /** Longest a model reply may take, and longest silence between its tokens (milliseconds). */
  MODEL_TIMEOUT_MS?: string;
  MODEL_IDLE_TIMEOUT_MS?: string;
  /** Origins browsers may call the API from, comma-separated (`*`, any, by default). */
  CORS_ORIGINS?: string;
  /** How long a dead-lettered events message waits before it goes back to the events queue (s; 900 by default). */
  EVENTS_REDRIVE_DELAY_SECONDS?: string;
}

/** Hono variables set by the global middleware. */
export interface Variables {
  requestId: string;
  principal: Principal;
}

/** The Hono environment of every route. */
export interface AppEnv {
  Bindings: Bindings;
  Variables: Variables;
}
