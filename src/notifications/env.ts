/** The bindings and configuration of the notifications worker (`src/notifications/wrangler.toml` and `.dev.vars`). */
export interface NotificationsBindings {
  DB: D1Database;
  SMTP_HOST?: string;
  SMTP_PORT?: string;
  SMTP_USER?: string;
  SMTP_PASSWORD?: string;
  SMTP_FROM?: string;
  VAPID_PUBLIC_KEY?: string;
  VAPID_PRIVATE_KEY?: string;
  VAPID_SUBJECT?: string;
  /** How long a push service or an SMTP reply may take (ms; defaults 10,000 and 15,000). */
  PUSH_TIMEOUT_MS?: string;
  SMTP_TIMEOUT_MS?: string;
  /** Seconds between the dead-letter queue's tries of a job (default 900). */
  NOTIFICATIONS_REDRIVE_DELAY_SECONDS?: string;
}
