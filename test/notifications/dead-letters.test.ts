import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { describe, expect, it, inject } from "vitest";
import { consumeJobs, DEAD_LETTER_ATTEMPTS } from "../../src/notifications/consume";
import type { NotificationsBindings } from "../../src/notifications/env";
import { createAccount, createOrg, env } from "../helpers/api";
import { emailsTo, uniqueEmail } from "../helpers/notifications";
import { notificationsVars } from "../helpers/notifications-vars";

// The notifications dead-letter queue: a job the notifications queue failed on every retry (D1 unavailable, say) is
// tried again by the same worker, slowly; after DEAD_LETTER_ATTEMPTS tries it is given up, and its channel ends
// `failed` (or `sent`, for targets that got it) instead of staying `pending`. Never sent twice.

/** The notifications worker's configuration, as the auxiliary worker of the tests has it. */
const workerEnv: NotificationsBindings = {
  DB: env.DB,
  ...notificationsVars(inject),
  NOTIFICATIONS_REDRIVE_DELAY_SECONDS: "900",
};

/** A notification of a new account (with an email address) whose push and email channels are pending. */
async function pendingNotification() {
  const org = await createOrg();
  const email = uniqueEmail("dlq");
  const account = await createAccount(org.apiKey, { type: "user", name: "Dee", email });
  const id = `ntf_01dlq${crypto.randomUUID().replace(/-/g, "").slice(0, 20)}`;
  await env.DB.prepare(
    `INSERT INTO notifications (id, org_id, account_id, rule_id, event_id, title, body, priority, websocket_status,
       push_status, email_status, read_at, created_at)
     VALUES (?1, ?2, ?3, 'rule_0123456789', 'evt_0123456789', 'Dead letter', 'back again', 'normal', NULL, 'pending',
       'pending', NULL, ?4)`,
  )
    .bind(id, org.orgId, account.id, new Date().toISOString())
    .run();
  return { id, email };
}

async function deadLetter(body: unknown, attempts: number) {
  const batch = createMessageBatch("parley-notifications-dlq", [
    { id: crypto.randomUUID(), timestamp: new Date(), attempts, body },
  ]);
  const ctx = createExecutionContext();
  await consumeJobs(batch, workerEnv);
  return getQueueResult(batch, ctx);
}

async function statuses(id: string) {
  const row = await env.DB.prepare("SELECT push_status, email_status FROM notifications WHERE id = ?1")
    .bind(id)
    .first<{ push_status: string; email_status: string }>();
  const { results } = await env.DB.prepare(
    "SELECT target, status, error FROM notification_deliveries WHERE notification_id = ?1 ORDER BY target",
  )
    .bind(id)
    .all<{ target: string; status: string; error: string | null }>();
  return { ...row, deliveries: results };
}

/** A push delivery row of the notification, `sending` since `claimedAt` or already `sent`. */
function insertDelivery(id: string, target: string, status: "sending" | "sent", claimedAt: number | null) {
  return env.DB.prepare(
    `INSERT INTO notification_deliveries (notification_id, channel, target, status, attempts, claimed_at, updated_at)
     VALUES (?1, 'push', ?2, ?3, 1, ?4, ?5)`,
  )
    .bind(id, target, status, claimedAt, new Date().toISOString())
    .run();
}

describe("the notifications dead-letter queue", () => {
  it("delivers a dead-lettered job once D1 answers again, and only once", async () => {
    const { id, email } = await pendingNotification();
    const first = await deadLetter({ notificationId: id, channel: "email" }, 1);
    expect(first.explicitAcks).toHaveLength(1);
    expect(first.retryMessages).toEqual([]);
    const mails = await emailsTo(email);
    expect(mails).toHaveLength(1);
    expect(mails[0].headers).toContainEqual(["Subject", "Dead letter"]);
    expect((await statuses(id)).email_status).toBe("sent");

    // The same job dead-lettered again (a duplicate) sends nothing.
    const again = await deadLetter({ notificationId: id, channel: "email" }, 1);
    expect(again.explicitAcks).toHaveLength(1);
    expect(await emailsTo(email)).toHaveLength(1);
  });

  it("retries a job that cannot finish yet, before its last try, and changes nothing", async () => {
    const { id } = await pendingNotification();
    // Another sender holds the one delivery (claimed a second ago, within its lease): nothing can be decided yet.
    await insertDelivery(id, "psub_held", "sending", Date.now() - 1_000);
    const result = await deadLetter({ notificationId: id, channel: "push" }, 3);
    expect(result.explicitAcks).toEqual([]);
    expect(result.retryMessages).toHaveLength(1);
    expect(await statuses(id)).toMatchObject({ push_status: "pending", deliveries: [{ status: "sending" }] });
  });

  it("gives a job up after its last try: unfinished deliveries fail, the channel ends sent if any target got it", async () => {
    const partly = await pendingNotification();
    await insertDelivery(partly.id, "psub_a_sent", "sent", null);
    await insertDelivery(partly.id, "psub_b_held", "sending", Date.now() - 1_000);
    const result = await deadLetter({ notificationId: partly.id, channel: "push" }, DEAD_LETTER_ATTEMPTS);
    expect(result.explicitAcks).toHaveLength(1);
    expect(result.retryMessages).toEqual([]);
    expect(await statuses(partly.id)).toMatchObject({
      push_status: "sent",
      email_status: "pending", // another channel's job: untouched
      deliveries: [
        { target: "psub_a_sent", status: "sent", error: null },
        { target: "psub_b_held", status: "failed", error: expect.stringContaining("gave up") },
      ],
    });

    const none = await pendingNotification();
    await insertDelivery(none.id, "psub_held", "sending", Date.now() - 1_000);
    await deadLetter({ notificationId: none.id, channel: "push" }, DEAD_LETTER_ATTEMPTS);
    expect(await statuses(none.id)).toMatchObject({ push_status: "failed", deliveries: [{ status: "failed" }] });
  });

  it("drops a job that is not a job, and leaves a finished channel alone", async () => {
    const dropped = await deadLetter({ notificationId: "nope", channel: "fax" }, 1);
    expect(dropped.explicitAcks).toHaveLength(1);

    const { id, email } = await pendingNotification();
    await env.DB.prepare("UPDATE notifications SET email_status = 'skipped' WHERE id = ?1").bind(id).run();
    const result = await deadLetter({ notificationId: id, channel: "email" }, DEAD_LETTER_ATTEMPTS);
    expect(result.explicitAcks).toHaveLength(1);
    expect((await statuses(id)).email_status).toBe("skipped");
    expect(await emailsTo(email)).toEqual([]);
  });
});
