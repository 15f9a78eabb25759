import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/** Notification rules: events matching `topic` become notifications for the rule's recipients. */
export const notificationRules = sqliteTable(
  "notification_rules",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    name: text("name").notNull(),
    topic: text("topic").notNull(),
    channels: text("channels", { mode: "json" }).$type<("websocket" | "push" | "email")[]>().notNull(),
    recipients: text("recipients", { mode: "json" }).$type<"participants" | { accountIds: string[] }>().notNull(),
    priority: text("priority", { enum: ["low", "normal", "high", "critical"] }).notNull(),
    template: text("template", { mode: "json" }).$type<{ title: string; body: string }>().notNull(),
    createdAt: text("created_at").notNull(),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [index("notification_rules_org_idx").on(t.orgId, t.id)],
);

/**
 * Notifications: one per (event, rule, recipient), which the unique index makes idempotent under redelivery. Each
 * channel column is null when the rule does not use the channel, else `pending`, `sent`, `failed` or `skipped`.
 */
export const notifications = sqliteTable(
  "notifications",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    accountId: text("account_id").notNull(),
    ruleId: text("rule_id").notNull(),
    eventId: text("event_id").notNull(),
    title: text("title").notNull(),
    body: text("body").notNull(),
    priority: text("priority", { enum: ["low", "normal", "high", "critical"] }).notNull(),
    websocketStatus: text("websocket_status"),
    pushStatus: text("push_status"),
    emailStatus: text("email_status"),
    readAt: text("read_at"),
    createdAt: text("created_at").notNull(),
    /** When a push or email still pending is due for a check that its job was not lost (ms; `resumeStalledNotifications`). */
    checkAt: integer("check_at"),
  },
  (t) => [
    uniqueIndex("notifications_event_rule_account_idx").on(t.eventId, t.ruleId, t.accountId),
    index("notifications_account_idx").on(t.orgId, t.accountId, t.id),
    // The notifications whose push or email has not ended, by when they are due for a check.
    index("notifications_pending_idx")
      .on(t.checkAt)
      .where(sql`${t.pushStatus} = 'pending' or ${t.emailStatus} = 'pending'`),
  ],
);

/**
 * Deliveries of one notification on one channel to one target (the email address's slot, or a push subscription):
 * the notifications worker claims a row (`pending` -> `sending`) before it sends, so a redelivered job sends nothing.
 */
export const notificationDeliveries = sqliteTable(
  "notification_deliveries",
  {
    notificationId: text("notification_id").notNull(),
    channel: text("channel", { enum: ["push", "email"] }).notNull(),
    target: text("target").notNull(),
    status: text("status", { enum: ["pending", "sending", "sent", "failed"] }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    claimedAt: integer("claimed_at"),
    error: text("error"),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.notificationId, t.channel, t.target] })],
);

/** Per-account notification preferences; an account without a row has every channel on and nothing muted. */
export const notificationPreferences = sqliteTable("notification_preferences", {
  accountId: text("account_id").primaryKey(),
  orgId: text("org_id").notNull(),
  websocket: integer("websocket", { mode: "boolean" }).notNull(),
  push: integer("push", { mode: "boolean" }).notNull(),
  email: integer("email", { mode: "boolean" }).notNull(),
  mutedRoomIds: text("muted_room_ids", { mode: "json" }).$type<string[]>().notNull(),
  updatedAt: text("updated_at").notNull(),
});

/** Web Push subscriptions of accounts (a browser's `PushSubscription`). */
export const pushSubscriptions = sqliteTable(
  "push_subscriptions",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    accountId: text("account_id").notNull(),
    endpoint: text("endpoint").notNull(),
    p256dh: text("p256dh").notNull(),
    auth: text("auth").notNull(),
    createdAt: text("created_at").notNull(),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [
    uniqueIndex("push_subscriptions_account_endpoint_idx").on(t.accountId, t.endpoint),
    index("push_subscriptions_org_account_idx").on(t.orgId, t.accountId, t.id),
  ],
);
