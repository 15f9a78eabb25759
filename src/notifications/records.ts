import type { notificationRules, notifications } from "../db/schema-notifications";
import type { ChannelStatus, Notification, Rule } from "../protocol/notifications";

type NotificationRow = typeof notifications.$inferSelect;
type RuleRow = typeof notificationRules.$inferSelect;

const FINAL = new Set(["sent", "failed", "skipped"]);

/** A channel column as the contract reports it: final states only; a channel in flight or unused is absent. */
function status(value: string | null): ChannelStatus | undefined {
  return value !== null && FINAL.has(value) ? (value as ChannelStatus) : undefined;
}

/** The contract's Notification from its row. */
export function toNotification(row: NotificationRow): Notification {
  const channels: Notification["channels"] = {};
  const websocket = status(row.websocketStatus);
  const push = status(row.pushStatus);
  const email = status(row.emailStatus);
  if (websocket) channels.websocket = websocket;
  if (push) channels.push = push;
  if (email) channels.email = email;
  return {
    id: row.id,
    ruleId: row.ruleId,
    accountId: row.accountId,
    eventId: row.eventId,
    title: row.title,
    body: row.body,
    priority: row.priority,
    channels,
    readAt: row.readAt,
    createdAt: row.createdAt,
  };
}

/** The contract's Rule from its row. */
export function toRule(row: RuleRow): Rule {
  return {
    id: row.id,
    orgId: row.orgId,
    name: row.name,
    topic: row.topic,
    channels: row.channels,
    recipients: row.recipients,
    priority: row.priority,
    template: row.template,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

/** The id of the `notification.created` event of a notification: the same whenever it is published. */
export function notificationEventId(notificationId: string): string {
  return `evt_${notificationId.slice("ntf_".length)}`;
}
