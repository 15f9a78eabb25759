import type { NotificationJob, Priority } from "../protocol/notifications";
import { sendEmail, smtpConfig, type EmailOutcome } from "./email";
import type { NotificationsBindings } from "./env";
import { MAX_PAYLOAD_BYTES } from "./push/encrypt";
import { PUSH_TIMEOUT_MS, sendPush, type PushOutcome } from "./push/send";
import { numberSetting } from "../lib/settings";
import type { VapidKeys } from "./push/vapid";
import { truncate } from "./template";

/** How many times one delivery is tried before it is marked failed. */
export const MAX_ATTEMPTS = 6;
/** A claim older than this whose sender never reported back is given up as failed (never sent twice). */
export const CLAIM_LEASE_MS = 5 * 60_000;

/** What to do with a job's queue message. */
export type JobResult = { action: "ack" } | { action: "retry"; delaySeconds: number };

/** Delay before retry `attempts` (1-based): 1 s doubling, at most 10 minutes. */
export function backoffSeconds(attempts: number): number {
  return Math.min(600, 2 ** Math.max(0, attempts - 1));
}

interface NotificationRow {
  id: string;
  org_id: string;
  account_id: string;
  rule_id: string;
  event_id: string;
  title: string;
  body: string;
  priority: Priority;
  created_at: string;
  push_status: string | null;
  email_status: string | null;
}

interface DeliveryRow {
  target: string;
  status: "pending" | "sending" | "sent" | "failed";
  attempts: number;
  claimed_at: number | null;
}

type Outcome = PushOutcome | EmailOutcome;

/** A send to one target of a channel; `target` is the delivery row's key. */
type Sender = (target: string) => Promise<Outcome>;

/**
 * Delivers one notification on one channel, at most once per target whatever the queue redelivers: each target's
 * delivery row is claimed (`pending` -> `sending`) by a conditional UPDATE before anything is sent, so a concurrent or
 * repeated job finds nothing to claim. Transient failures release the claim and ask for a retry with backoff; once
 * every target is final the channel's status is written to the notification.
 */
export async function deliverJob(env: NotificationsBindings, job: NotificationJob): Promise<JobResult> {
  const column = job.channel === "push" ? "push_status" : "email_status";
  const row = await env.DB.prepare(
    `SELECT id, org_id, account_id, rule_id, event_id, title, body, priority, created_at, push_status, email_status
       FROM notifications WHERE id = ?1`,
  )
    .bind(job.notificationId)
    .first<NotificationRow>();
  if (!row || row[column] !== "pending") return { action: "ack" };

  const plan = job.channel === "push" ? await planPush(env, row) : await planEmail(env, row);
  if ("final" in plan) {
    if (plan.error)
      console.warn("notification channel not delivered", { id: row.id, channel: job.channel, error: plan.error });
    await finishChannel(env, row.id, column, plan.final);
    return { action: "ack" };
  }

  const now = new Date().toISOString();
  if (plan.targets.length > 0) {
    await env.DB.batch(
      plan.targets.map((target) =>
        env.DB.prepare(
          `INSERT INTO notification_deliveries (notification_id, channel, target, status, attempts, updated_at)
           VALUES (?1, ?2, ?3, 'pending', 0, ?4) ON CONFLICT DO NOTHING`,
        ).bind(row.id, job.channel, target, now),
      ),
    );
  }
  const { results: deliveries } = await env.DB.prepare(
    `SELECT target, status, attempts, claimed_at FROM notification_deliveries WHERE notification_id = ?1 AND channel = ?2`,
  )
    .bind(row.id, job.channel)
    .all<DeliveryRow>();

  let retryAfter = 0;
  for (const delivery of deliveries) {
    const delay = await deliverTarget(env, row.id, job.channel, delivery, plan.send);
    retryAfter = Math.max(retryAfter, delay);
  }
  if (retryAfter > 0) return { action: "retry", delaySeconds: retryAfter };

  const { results: finals } = await env.DB.prepare(
    `SELECT status FROM notification_deliveries WHERE notification_id = ?1 AND channel = ?2`,
  )
    .bind(row.id, job.channel)
    .all<{ status: string }>();
  if (finals.some((d) => d.status === "pending" || d.status === "sending")) return { action: "retry", delaySeconds: 1 };
  await finishChannel(env, row.id, column, finals.some((d) => d.status === "sent") ? "sent" : "failed");
  return { action: "ack" };
}

/**
 * Claims and sends one delivery. Answers 0 when the delivery is final (or was final already), else the seconds to
 * wait before the job is tried again.
 */
async function deliverTarget(
  env: NotificationsBindings,
  notificationId: string,
  channel: string,
  delivery: DeliveryRow,
  send: Sender,
): Promise<number> {
  const key = [notificationId, channel, delivery.target] as const;
  const nowMs = Date.now();
  if (delivery.status === "sent" || delivery.status === "failed") return 0;
  if (delivery.status === "sending") {
    if (delivery.claimed_at !== null && nowMs - delivery.claimed_at < CLAIM_LEASE_MS) {
      return Math.ceil((CLAIM_LEASE_MS - (nowMs - delivery.claimed_at)) / 1000);
    }
    // The sender stopped mid-send: whether it went out is unknown, and at most once means never trying again.
    await env.DB.prepare(
      `UPDATE notification_deliveries SET status = 'failed', error = 'the sender stopped while sending', updated_at = ?5
        WHERE notification_id = ?1 AND channel = ?2 AND target = ?3 AND status = 'sending' AND claimed_at IS ?4`,
    )
      .bind(...key, delivery.claimed_at, new Date(nowMs).toISOString())
      .run();
    return 0;
  }
  const claim = await env.DB.prepare(
    `UPDATE notification_deliveries SET status = 'sending', claimed_at = ?4, attempts = attempts + 1, updated_at = ?5
      WHERE notification_id = ?1 AND channel = ?2 AND target = ?3 AND status = 'pending'`,
  )
    .bind(...key, nowMs, new Date(nowMs).toISOString())
    .run();
  if (claim.meta.changes !== 1) return 0;

  const attempts = delivery.attempts + 1;
  let outcome: Outcome;
  try {
    outcome = await send(delivery.target);
  } catch (error) {
    outcome = { kind: "permanent", error: `send failed: ${String(error)}` } as Outcome;
  }
  const record = (status: string, error: string | null) =>
    env.DB.prepare(
      `UPDATE notification_deliveries SET status = ?4, error = ?5, claimed_at = NULL, updated_at = ?6
        WHERE notification_id = ?1 AND channel = ?2 AND target = ?3 AND status = 'sending'`,
    )
      .bind(...key, status, error, new Date().toISOString())
      .run();

  switch (outcome.kind) {
    case "sent":
      await record("sent", null);
      return 0;
    case "gone":
      await record("failed", `push subscription gone (${outcome.status})`);
      await env.DB.prepare("DELETE FROM push_subscriptions WHERE id = ?1").bind(delivery.target).run();
      return 0;
    case "permanent":
      await record("failed", outcome.error);
      return 0;
    case "transient":
      if (attempts >= MAX_ATTEMPTS) {
        await record("failed", `gave up after ${attempts} attempts: ${outcome.error}`);
        return 0;
      }
      await record("pending", outcome.error);
      return Math.max(backoffSeconds(attempts), "retryAfterSeconds" in outcome ? (outcome.retryAfterSeconds ?? 0) : 0);
  }
}

/**
 * Gives up on a job for good: every delivery of its channel not yet final is marked failed (one being sent too: at
 * most once means never sending it again), and the channel ends `sent` if any target got it, else `failed`. For a
 * job the dead-letter queue could not deliver either, so that its notification never stays `pending`.
 */
export async function abandonJob(env: NotificationsBindings, job: NotificationJob, reason: string): Promise<void> {
  const column = job.channel === "push" ? "push_status" : "email_status";
  const now = new Date().toISOString();
  await env.DB.batch([
    env.DB.prepare(
      `UPDATE notification_deliveries SET status = 'failed', error = ?3, claimed_at = NULL, updated_at = ?4
        WHERE notification_id = ?1 AND channel = ?2 AND status IN ('pending', 'sending')`,
    ).bind(job.notificationId, job.channel, reason, now),
    env.DB.prepare(
      `UPDATE notifications SET ${column} = CASE WHEN EXISTS (SELECT 1 FROM notification_deliveries
           WHERE notification_id = ?1 AND channel = ?2 AND status = 'sent') THEN 'sent' ELSE 'failed' END
        WHERE id = ?1 AND ${column} = 'pending'`,
    ).bind(job.notificationId, job.channel),
  ]);
}

/** Writes a channel's final status, once. */
async function finishChannel(
  env: NotificationsBindings,
  id: string,
  column: string,
  status: "sent" | "failed" | "skipped",
) {
  await env.DB.prepare(`UPDATE notifications SET ${column} = ?2 WHERE id = ?1 AND ${column} = 'pending'`)
    .bind(id, status)
    .run();
}

type Plan = { final: "skipped" | "failed"; error?: string } | { targets: string[]; send: Sender };

/** Push: one delivery per subscription of the recipient. */
async function planPush(env: NotificationsBindings, row: NotificationRow): Promise<Plan> {
  const vapid = vapidKeys(env);
  if (!vapid)
    return { final: "failed", error: "VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY or VAPID_SUBJECT is not configured" };
  const { results: subscriptions } = await env.DB.prepare(
    "SELECT id, endpoint, p256dh, auth FROM push_subscriptions WHERE account_id = ?1 AND org_id = ?2",
  )
    .bind(row.account_id, row.org_id)
    .all<{ id: string; endpoint: string; p256dh: string; auth: string }>();
  const known = await env.DB.prepare(
    "SELECT count(*) AS n FROM notification_deliveries WHERE notification_id = ?1 AND channel = 'push'",
  )
    .bind(row.id)
    .first<{ n: number }>();
  if (subscriptions.length === 0 && (known?.n ?? 0) === 0) return { final: "skipped" };
  const byId = new Map(subscriptions.map((s) => [s.id, s]));
  const payload = pushPayload(row);
  return {
    targets: subscriptions.map((s) => s.id),
    send: async (target) => {
      const subscription = byId.get(target);
      if (!subscription) return { kind: "permanent", status: 0, error: "push subscription removed" };
      return sendPush(
        { endpoint: subscription.endpoint, keys: { p256dh: subscription.p256dh, auth: subscription.auth } },
        { payload, priority: row.priority, topic: row.id },
        vapid,
        numberSetting(env.PUSH_TIMEOUT_MS, PUSH_TIMEOUT_MS, 1),
      );
    },
  };
}

/** Email: one delivery to the recipient's address. */
async function planEmail(env: NotificationsBindings, row: NotificationRow): Promise<Plan> {
  const account = await env.DB.prepare("SELECT email, name FROM accounts WHERE id = ?1 AND org_id = ?2")
    .bind(row.account_id, row.org_id)
    .first<{ email: string | null; name: string }>();
  if (!account?.email) return { final: "skipped" };
  const config = smtpConfig(env);
  if (!config) return { final: "failed", error: "SMTP_HOST or SMTP_FROM is not configured" };
  const to = { email: account.email, name: account.name };
  return {
    targets: ["email"],
    send: () =>
      sendEmail(config, { to, title: row.title, body: row.body, priority: row.priority, notificationId: row.id }),
  };
}

/** The VAPID keys from configuration, or null when any is missing. */
export function vapidKeys(env: NotificationsBindings): VapidKeys | null {
  const publicKey = env.VAPID_PUBLIC_KEY?.trim();
  const privateKey = env.VAPID_PRIVATE_KEY?.trim();
  const subject = env.VAPID_SUBJECT?.trim();
  return publicKey && privateKey && subject ? { publicKey, privateKey, subject } : null;
}

/** The JSON a service worker receives: the notification, its body cut so the encrypted record fits. */
export function pushPayload(
  row: Pick<NotificationRow, "id" | "rule_id" | "event_id" | "title" | "body" | "priority" | "created_at">,
) {
  const base = {
    id: row.id,
    ruleId: row.rule_id,
    eventId: row.event_id,
    title: row.title,
    priority: row.priority,
    createdAt: row.created_at,
  };
  let body = row.body;
  for (;;) {
    const text = JSON.stringify({ ...base, body });
    const chars = [...body].length;
    if (new TextEncoder().encode(text).byteLength <= MAX_PAYLOAD_BYTES || chars <= 1) return text;
    body = truncate(body, Math.floor(chars * 0.8));
  }
}
