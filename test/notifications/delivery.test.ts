import { createMessageBatch, createExecutionContext, getQueueResult } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { messagePostedEvent } from "../../src/events/envelope";
import { NOTIFICATION_CHECK_AFTER_MS, resumeStalledNotifications } from "../../src/notifications/rules";
import type { Message } from "../../src/protocol/messages";
import { accountToken, call, createAccount, createOrg, env, eventually, post } from "../helpers/api";
import {
  createRule,
  emailsTo,
  messagesTopic,
  newPushSubscription,
  notificationsOf,
  pushesOf,
  rcptAttempts,
  uniqueEmail,
} from "../helpers/notifications";
import { openHub, subscribe } from "../helpers/realtime";

// Contract section 10: events become notifications through rules; websocket, Web Push and email deliveries, each at
// most once per (event, rule, recipient, channel), by the notifications worker (an auxiliary worker here, consuming
// the real notifications queue) to a real local push service and a real local SMTP server.

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An org with an author and two recipients (each with a unique email), all in one room with a conversation. */
async function setup() {
  const org = await createOrg();
  const author = await createAccount(org.apiKey, { type: "user", name: "Ada Author", email: uniqueEmail("author") });
  const bob = await createAccount(org.apiKey, { type: "user", name: "Bob", email: uniqueEmail("bob") });
  const carol = await createAccount(org.apiKey, { type: "user", name: "Carol", email: uniqueEmail("carol") });
  const room = await call("POST", "/v1/rooms", {
    token: org.apiKey,
    body: {
      type: "standard",
      participants: [{ accountId: author.id, role: "owner" }, { accountId: bob.id }, { accountId: carol.id }],
    },
  });
  expect(room.status, JSON.stringify(room.body)).toBe(201);
  const conversation = await call("POST", `/v1/rooms/${room.body.id}/conversations`, {
    token: org.apiKey,
    body: { name: "Launch" },
  });
  expect(conversation.status, JSON.stringify(conversation.body)).toBe(201);
  return { ...org, author, bob, carol, roomId: room.body.id as string, conversationId: conversation.body.id as string };
}

/** A websocket rule notifying the room's participants of every message, its body the message's text. */
function participantsRule(fixture: Awaited<ReturnType<typeof setup>>) {
  return createRule(fixture.apiKey, {
    name: "Room",
    topic: messagesTopic(fixture.orgId),
    channels: ["websocket"],
    recipients: "participants",
    template: { title: "New", body: "{{event.data.text}}" },
  });
}

async function postAs(fixture: Awaited<ReturnType<typeof setup>>, text: string): Promise<Message> {
  const response = await post(fixture.apiKey, fixture.conversationId, { text, authorId: fixture.author.id });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body;
}

/**
 * Registers a new push subscription of Bob's at the local push service (answering `statuses` first, then 201), with
 * `token` (the API key by default); answers the subscription and the id Parley gave it.
 */
async function subscribeBob(
  fixture: Awaited<ReturnType<typeof setup>>,
  statuses: number[] = [],
  token = fixture.apiKey,
) {
  const subscription = await newPushSubscription(statuses);
  const created = await call("POST", `/v1/accounts/${fixture.bob.id}/push-subscriptions`, {
    token,
    body: subscription.json,
  });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return { subscription, id: created.body.id as string };
}

/**
 * Bob's push subscription answering `statuses` in turn, a push rule for him, and a message posted: answers the
 * notification once its push channel ended.
 */
async function pushToBob(statuses: number[], text: string) {
  const f = await setup();
  const { subscription } = await subscribeBob(f, statuses);
  await createRule(f.apiKey, {
    name: "Push",
    topic: messagesTopic(f.orgId),
    channels: ["push"],
    recipients: { accountIds: [f.bob.id] },
    template: { title: "t", body: "b" },
  });
  const message = await postAs(f, text);
  const [notification] = await settled(f.apiKey, f.bob.id, messagePostedEvent(message).id, ["push"]);
  return { f, subscription, notification };
}

/** Waits until a notification of `accountId` for this event has every listed channel in a final state. */
async function settled(apiKey: string, accountId: string, eventId: string, channels: string[]) {
  return eventually(async () => {
    const items = (await notificationsOf(apiKey, accountId)).filter((n) => n.eventId === eventId);
    return items.length > 0 && items.every((n) => channels.every((ch) => n.channels[ch] !== undefined)) && items;
  }, 20_000);
}

describe("websocket notifications", () => {
  it("notify every participant but the author, live on the recipient's socket and stored for listing", async () => {
    const f = await setup();
    const rule = await createRule(f.apiKey, {
      name: "New messages",
      topic: messagesTopic(f.orgId),
      channels: ["websocket"],
      recipients: "participants",
      template: {
        title: "New message in {{event.data.conversationId}}",
        body: "{{recipient.name}}: {{event.data.text}}",
      },
    });
    const bobSocket = await openHub(await accountToken(f.apiKey, f.bob.id));
    const authorSocket = await openHub(await accountToken(f.apiKey, f.author.id));
    await subscribe(bobSocket, `events.${f.orgId}.notifications.>`);
    await subscribe(authorSocket, `events.${f.orgId}.notifications.>`);

    const message = await postAs(f, "Ship it <today>");
    const eventId = messagePostedEvent(message).id;
    const frame = await bobSocket.waitLog((fr) => fr.type === "event" && fr.event.source === "notifications", 20_000);
    expect(frame.topic).toBe(`events.${f.orgId}.notifications.notification.created.${f.bob.id}`);
    expect(frame.event.type).toBe("notification.created");
    expect(frame.event.data).toMatchObject({
      ruleId: rule.id,
      accountId: f.bob.id,
      eventId,
      title: `New message in ${f.conversationId}`,
      body: "Bob: Ship it <today>",
      priority: "normal",
      channels: { websocket: "sent" },
      readAt: null,
    });
    expect(frame.event.data.id).toMatch(/^ntf_/);

    const carol = await settled(f.apiKey, f.carol.id, eventId, ["websocket"]);
    expect(carol).toHaveLength(1);
    expect(carol[0].body).toBe("Carol: Ship it <today>");
    expect(await notificationsOf(f.apiKey, f.author.id)).toEqual([]);
    await authorSocket.flush();
    expect(authorSocket.events()).toEqual([]);
    expect(bobSocket.events((fr) => fr.event.source === "notifications")).toHaveLength(1);
    bobSocket.close();
    authorSocket.close();
  });

  it("listed recipients are notified, but never the author of the message, even when listed", async () => {
    const f = await setup();
    await createRule(f.apiKey, {
      name: "Escalations",
      topic: messagesTopic(f.orgId),
      channels: ["websocket"],
      recipients: { accountIds: [f.author.id, f.carol.id] },
      priority: "high",
      template: { title: "Escalation", body: "{{event.data.text}}" },
    });
    const message = await postAs(f, "Need help");
    const eventId = messagePostedEvent(message).id;
    const [notification] = await settled(f.apiKey, f.carol.id, eventId, ["websocket"]);
    expect(notification).toMatchObject({ title: "Escalation", body: "Need help", priority: "high" });
    expect(await notificationsOf(f.apiKey, f.author.id)).toEqual([]);
    expect(await notificationsOf(f.apiKey, f.bob.id)).toEqual([]);
  });

  it("participants are those in the room when the event happened: one who joins after is not notified of it", async () => {
    const f = await setup();
    await participantsRule(f);
    const dave = await createAccount(f.apiKey, { type: "user", name: "Dave" });
    const before = await postAs(f, "before Dave");
    // Dave joins before the events consumer (which batches for up to a second) gets to the message.
    const added = await call("POST", `/v1/rooms/${f.roomId}/participants`, {
      token: f.apiKey,
      body: { accountId: dave.id },
    });
    expect(added.status, JSON.stringify(added.body)).toBe(201);
    await settled(f.apiKey, f.bob.id, messagePostedEvent(before).id, ["websocket"]);
    expect(await notificationsOf(f.apiKey, dave.id)).toEqual([]);

    const after = await postAs(f, "after Dave");
    const [notification] = await settled(f.apiKey, dave.id, messagePostedEvent(after).id, ["websocket"]);
    expect(notification.body).toBe("after Dave");
    expect(await notificationsOf(f.apiKey, dave.id)).toHaveLength(1);
  });

  it("a rule applies from its creation on: events that happened before it notify nobody, however late consumed", async () => {
    const f = await setup();
    const earlier = await postAs(f, "before the rule");
    const rule = await createRule(f.apiKey, {
      name: "Late",
      topic: messagesTopic(f.orgId),
      channels: ["websocket"],
      recipients: "participants",
      template: { title: "New", body: "{{event.data.text}}" },
    });
    expect(rule.createdAt > earlier.createdAt).toBe(true);
    // The events queue delivers the earlier event (again) after the rule exists, as a retry or a redrive would.
    const batch = createMessageBatch("parley-events", [
      { id: "late", timestamp: new Date(), attempts: 2, body: JSON.stringify({ event: messagePostedEvent(earlier) }) },
    ]);
    await worker.queue(batch, env);
    expect((await getQueueResult(batch, createExecutionContext())).ackAll).toBe(true);
    const later = await postAs(f, "after the rule");
    await settled(f.apiKey, f.bob.id, messagePostedEvent(later).id, ["websocket"]);
    expect((await notificationsOf(f.apiKey, f.bob.id)).map((n) => n.body)).toEqual(["after the rule"]);
  });

  it("a participant removed just after an event is still notified of it, and of nothing after", async () => {
    const f = await setup();
    await participantsRule(f);
    const before = await postAs(f, "before Carol left");
    // Carol leaves before the events consumer (which batches for up to a second) gets to the message.
    const removed = await call("DELETE", `/v1/rooms/${f.roomId}/participants/${f.carol.id}`, { token: f.apiKey });
    expect(removed.status).toBe(204);
    const after = await postAs(f, "after Carol left");
    await settled(f.apiKey, f.bob.id, messagePostedEvent(after).id, ["websocket"]);
    const [notification] = await settled(f.apiKey, f.carol.id, messagePostedEvent(before).id, ["websocket"]);
    expect(notification.body).toBe("before Carol left");
    expect((await notificationsOf(f.apiKey, f.carol.id)).map((n) => n.body)).toEqual(["before Carol left"]);
  });

  it("notification events never trigger rules themselves, even through a catch-all topic", async () => {
    const f = await setup();
    await createRule(f.apiKey, {
      name: "Everything",
      topic: `events.${f.orgId}.>`,
      channels: ["websocket"],
      recipients: { accountIds: [f.bob.id] },
      template: { title: "{{event.type}}", body: "" },
    });
    const message = await postAs(f, "hello");
    await settled(f.apiKey, f.bob.id, messagePostedEvent(message).id, ["websocket"]);
    await sleep(1_500);
    const { results } = await env.DB.prepare(
      `SELECT n.title FROM notifications n
        WHERE n.org_id = ?1 AND n.event_id IN (SELECT 'evt_' || substr(id, 5) FROM notifications WHERE org_id = ?1)`,
    )
      .bind(f.orgId)
      .all();
    expect(results).toEqual([]);
    const titles = (await notificationsOf(f.apiKey, f.bob.id)).map((n) => n.title);
    expect(titles).toContain("conversation.message_posted");
    expect(titles).not.toContain("notification.created");
  });
});

describe("Web Push", () => {
  it("delivers to the subscription's push service: decrypted there with its key, VAPID verified, TTL and Urgency", async () => {
    const f = await setup();
    const token = await accountToken(f.apiKey, f.bob.id);
    const { subscription } = await subscribeBob(f, [], token);
    const rule = await createRule(f.apiKey, {
      name: "Push",
      topic: messagesTopic(f.orgId),
      channels: ["push"],
      recipients: { accountIds: [f.bob.id] },
      priority: "high",
      template: { title: "From {{event.data.authorId}}", body: "{{event.data.text}}" },
    });
    const message = await postAs(f, 'Zürich ☕ "quoted"');
    const eventId = messagePostedEvent(message).id;
    const [notification] = await settled(f.apiKey, f.bob.id, eventId, ["push"]);
    expect(notification.channels).toEqual({ push: "sent" });

    const pushes = await pushesOf(subscription.id);
    expect(pushes).toHaveLength(1);
    const [push] = pushes;
    expect(push.decryptError).toBeUndefined();
    expect(push.vapid).toMatchObject({ valid: true });
    expect(push.vapid.claims.sub).toBe("mailto:ops@parley.test");
    expect(push.headers["content-encoding"]).toBe("aes128gcm");
    expect(push.headers.ttl).toBe("86400");
    expect(push.headers.urgency).toBe("high");
    expect(push.recordSize).toBe(4096);
    expect(JSON.parse(push.payload)).toEqual({
      id: notification.id,
      ruleId: rule.id,
      eventId,
      title: `From ${f.author.id}`,
      body: 'Zürich ☕ "quoted"',
      priority: "high",
      createdAt: notification.createdAt,
    });
  });

  it("a push service answering 410 removes the subscription and marks the push failed", async () => {
    const { f, subscription, notification } = await pushToBob([410], "gone?");
    expect(notification.channels).toEqual({ push: "failed" });
    expect(await pushesOf(subscription.id)).toHaveLength(1);
    const list = await call("GET", `/v1/accounts/${f.bob.id}/push-subscriptions`, { token: f.apiKey });
    expect(list.body.items).toEqual([]);

    // The next notification finds no subscription: its push channel is skipped, and nothing is sent.
    const next = await postAs(f, "again");
    const [second] = await settled(f.apiKey, f.bob.id, messagePostedEvent(next).id, ["push"]);
    expect(second.channels).toEqual({ push: "skipped" });
    expect(await pushesOf(subscription.id)).toHaveLength(1);
  });

  it("a push service that never answers is tried again after PUSH_TIMEOUT_MS; each try carries the same Topic", async () => {
    const { subscription, notification } = await pushToBob([0], "anyone?");
    expect(notification.channels).toEqual({ push: "sent" });
    const pushes = await pushesOf(subscription.id);
    expect(pushes.map((p: any) => p.status)).toEqual([0, 201]);
    expect(pushes.map((p: any) => p.headers.topic)).toEqual([notification.id, notification.id]);
  });

  it("429 and 5xx answers are retried with backoff until the push is accepted, once", async () => {
    const { subscription, notification } = await pushToBob([503, 429], "retry me");
    expect(notification.channels).toEqual({ push: "sent" });
    const pushes = await pushesOf(subscription.id);
    expect(pushes.map((p: any) => p.status)).toEqual([503, 429, 201]);
    expect(pushes.every((p: any) => p.vapid.valid && p.decryptError === undefined)).toBe(true);
    await sleep(2_000);
    expect(await pushesOf(subscription.id)).toHaveLength(3);
  });
});

describe("email", () => {
  it("is sent over SMTP to the account's address: title as subject, text and HTML parts, no header injection", async () => {
    const f = await setup();
    await createRule(f.apiKey, {
      name: "Mail",
      topic: messagesTopic(f.orgId),
      channels: ["email"],
      recipients: { accountIds: [f.bob.id] },
      priority: "critical",
      template: { title: "Re: {{event.data.text}}", body: "{{recipient.name}}, you got: {{event.data.text}}" },
    });
    const hostile = 'Hi <b>"there"</b> at the café\r\nBcc: evil@attacker.test\r\nX-Injected: yes';
    const message = await postAs(f, hostile);
    const [notification] = await settled(f.apiKey, f.bob.id, messagePostedEvent(message).id, ["email"]);
    expect(notification.channels).toEqual({ email: "sent" });
    expect(notification.title).toBe('Re: Hi <b>"there"</b> at the café Bcc: evil@attacker.test X-Injected: yes');

    const emails = await emailsTo(f.bob.email);
    expect(emails).toHaveLength(1);
    const [email] = emails;
    expect(email.rcptTo).toEqual([f.bob.email]);
    expect(email.mailFrom).toBe("notify@parley.test");
    expect(email.auth).toEqual({ user: "parley", password: "smtp-secret" });
    const header = (name: string) =>
      email.headers
        .filter(([n]: [string, string]) => n.toLowerCase() === name.toLowerCase())
        .map(([, v]: string[]) => v);
    expect(header("Subject")).toEqual([notification.title]);
    expect(header("Bcc")).toEqual([]);
    expect(header("X-Injected")).toEqual([]);
    expect(header("To")).toEqual([`"Bob" <${f.bob.email}>`]);
    expect(header("From")[0]).toContain("notify@parley.test");
    expect(header("X-Parley-Notification")).toEqual([notification.id]);
    expect(header("Importance")).toEqual(["high"]);
    expect(email.text).toContain(`Bob, you got: ${hostile}`);
    expect(email.html).toContain("Hi &lt;b&gt;&quot;there&quot;&lt;/b&gt; at the café");
    expect(email.raw).not.toContain("café");
    expect(email.html).not.toContain("<b>");
    expect(await rcptAttempts("evil@attacker.test")).toEqual([]);
  });

  it("a 4xx reply or a dropped connection is retried and the email sent once; a 5xx reply fails it for good", async () => {
    const org = await createOrg();
    const author = await createAccount(org.apiKey, { type: "user", name: "Author" });
    const flaky = await createAccount(org.apiKey, { type: "user", name: "Flaky", email: uniqueEmail("tempfail") });
    const gone = await createAccount(org.apiKey, { type: "user", name: "Gone", email: uniqueEmail("reject") });
    const dropped = await createAccount(org.apiKey, { type: "user", name: "Dropped", email: uniqueEmail("drop") });
    const room = await call("POST", "/v1/rooms", {
      token: org.apiKey,
      body: {
        type: "standard",
        participants: [author, flaky, gone, dropped].map((account) => ({ accountId: account.id })),
      },
    });
    const conversation = await call("POST", `/v1/rooms/${room.body.id}/conversations`, { token: org.apiKey, body: {} });
    await createRule(org.apiKey, {
      name: "Mail",
      topic: messagesTopic(org.orgId),
      channels: ["email"],
      recipients: "participants",
      template: { title: "Hello", body: "{{event.data.text}}" },
    });
    const sent = await post(org.apiKey, conversation.body.id, { text: "ping", authorId: author.id });
    const eventId = messagePostedEvent(sent.body).id;
    const [ok] = await settled(org.apiKey, flaky.id, eventId, ["email"]);
    const [failed] = await settled(org.apiKey, gone.id, eventId, ["email"]);
    expect(ok.channels).toEqual({ email: "sent" });
    expect(failed.channels).toEqual({ email: "failed" });
    const [redone] = await settled(org.apiKey, dropped.id, eventId, ["email"]);
    expect(redone.channels).toEqual({ email: "sent" });
    expect((await rcptAttempts(dropped.email)).map((r) => r.code)).toEqual([0, 250]);
    expect(await emailsTo(dropped.email)).toHaveLength(1);
    expect((await rcptAttempts(flaky.email)).map((r) => r.code)).toEqual([451, 250]);
    expect(await emailsTo(flaky.email)).toHaveLength(1);
    expect((await rcptAttempts(gone.email)).map((r) => r.code)).toEqual([550]);
    expect(await emailsTo(gone.email)).toHaveLength(0);
    // The author has no address and is the author anyway: nothing for them.
    expect(await notificationsOf(org.apiKey, author.id)).toEqual([]);
  });

  it("a server that took the whole message but never confirmed it is not sent it again: the email fails", async () => {
    const f = await setup();
    const silent = await createAccount(f.apiKey, { type: "user", name: "Silent", email: uniqueEmail("silent") });
    await createRule(f.apiKey, {
      name: "Mail",
      topic: messagesTopic(f.orgId),
      channels: ["email"],
      recipients: { accountIds: [silent.id] },
      template: { title: "Hello", body: "{{event.data.text}}" },
    });
    const message = await postAs(f, "once only");
    const [notification] = await settled(f.apiKey, silent.id, messagePostedEvent(message).id, ["email"]);
    expect(notification.channels).toEqual({ email: "failed" });
    await sleep(2_000);
    expect(await emailsTo(silent.email)).toHaveLength(1);
  });
});

describe("preferences", () => {
  it("channels turned off and muted rooms skip delivery; critical rules ignore preferences", async () => {
    const f = await setup();
    const token = await accountToken(f.apiKey, f.bob.id);
    const { subscription } = await subscribeBob(f, [], token);
    const normal = await createRule(f.apiKey, {
      name: "Normal",
      topic: messagesTopic(f.orgId),
      channels: ["websocket", "push", "email"],
      recipients: { accountIds: [f.bob.id] },
      template: { title: "normal", body: "{{event.data.text}}" },
    });
    const critical = await createRule(f.apiKey, {
      name: "Critical",
      topic: messagesTopic(f.orgId),
      channels: ["websocket", "push", "email"],
      recipients: { accountIds: [f.bob.id] },
      priority: "critical",
      template: { title: "critical", body: "{{event.data.text}}" },
    });
    const prefs = await call("PUT", `/v1/accounts/${f.bob.id}/notification-preferences`, {
      token,
      body: { channels: { email: false, push: false } },
    });
    expect(prefs.status, JSON.stringify(prefs.body)).toBe(200);

    const first = await postAs(f, "one");
    const firstId = messagePostedEvent(first).id;
    const round1 = await settled(f.apiKey, f.bob.id, firstId, ["websocket", "push", "email"]);
    const byRule1 = Object.fromEntries(round1.map((n: any) => [n.ruleId, n.channels]));
    expect(byRule1[normal.id]).toEqual({ websocket: "sent", push: "skipped", email: "skipped" });
    expect(byRule1[critical.id]).toEqual({ websocket: "sent", push: "sent", email: "sent" });

    const muted = await call("PUT", `/v1/accounts/${f.bob.id}/notification-preferences`, {
      token,
      body: { mutedRoomIds: [f.roomId] },
    });
    expect(muted.body).toMatchObject({
      channels: { email: false, push: false, websocket: true },
      mutedRoomIds: [f.roomId],
    });
    const second = await postAs(f, "two");
    const secondId = messagePostedEvent(second).id;
    const round2 = await settled(f.apiKey, f.bob.id, secondId, ["websocket", "push", "email"]);
    const byRule2 = Object.fromEntries(round2.map((n: any) => [n.ruleId, n.channels]));
    expect(byRule2[normal.id]).toEqual({ websocket: "skipped", push: "skipped", email: "skipped" });
    expect(byRule2[critical.id]).toEqual({ websocket: "sent", push: "sent", email: "sent" });

    const pushes = await pushesOf(subscription.id);
    expect(pushes.map((p: any) => JSON.parse(p.payload).title)).toEqual(["critical", "critical"]);
    const emails = await emailsTo(f.bob.email);
    expect(emails.map((e: any) => e.headers.find(([n]: string[]) => n === "Subject")[1])).toEqual([
      "critical",
      "critical",
    ]);
  });
});

describe("exactly-once intent", () => {
  it("a push or email job the queue lost is sent again by the check for lost jobs, once", async () => {
    const f = await setup();
    // As a restart of the local queue leaves it: the notification written, its email pending, its job gone.
    const created = Date.now() - NOTIFICATION_CHECK_AFTER_MS - 1_000;
    const id = `ntf_lost${crypto.randomUUID().replaceAll("-", "")}`;
    await env.DB.prepare(
      `INSERT INTO notifications (id, org_id, account_id, rule_id, event_id, title, body, priority, email_status,
         created_at, check_at) VALUES (?1, ?2, ?3, 'rule_lost', ?4, 'Lost', 'found again', 'normal', 'pending', ?5, ?6)`,
    )
      .bind(id, f.orgId, f.bob.id, `evt_${id}`, new Date(created).toISOString(), created + NOTIFICATION_CHECK_AFTER_MS)
      .run();
    expect(await resumeStalledNotifications(env)).toBe(1);
    const [notification] = await eventually(async () => {
      const items = (await notificationsOf(f.apiKey, f.bob.id)).filter((n) => n.id === id);
      return items[0]?.channels.email !== undefined && items;
    }, 20_000);
    expect(notification.channels).toEqual({ email: "sent" });
    const emails = async () =>
      (await emailsTo(f.bob.email)).filter((e: any) =>
        e.headers.some(([name, value]: [string, string]) => name === "X-Parley-Notification" && value === id),
      );
    expect(await emails()).toHaveLength(1);
    // Ended: a later check finds nothing of it to send.
    await resumeStalledNotifications(env, Date.now() + 60 * 60_000);
    await sleep(1_500);
    expect(await emails()).toHaveLength(1);
  });

  it("redelivered events and jobs create and send nothing twice", async () => {
    const f = await setup();
    const { subscription } = await subscribeBob(f);
    await createRule(f.apiKey, {
      name: "All channels",
      topic: messagesTopic(f.orgId),
      channels: ["websocket", "push", "email"],
      recipients: { accountIds: [f.bob.id] },
      template: { title: "dup?", body: "{{event.data.text}}" },
    });
    const socket = await openHub(await accountToken(f.apiKey, f.bob.id));
    await subscribe(socket, `events.${f.orgId}.notifications.notification.created.${f.bob.id}`);
    const message = await postAs(f, "once");
    const event = messagePostedEvent(message);
    const [notification] = await settled(f.apiKey, f.bob.id, event.id, ["websocket", "push", "email"]);

    // The events queue delivers the same event again, twice, in one batch and in another.
    for (const copies of [2, 1]) {
      const batch = createMessageBatch(
        "parley-events",
        Array.from({ length: copies }, (_, i) => ({
          id: `redelivery-${copies}-${i}`,
          timestamp: new Date(),
          attempts: 2,
          body: JSON.stringify({ event }),
        })),
      );
      const ctx = createExecutionContext();
      await worker.queue(batch, env);
      const result = await getQueueResult(batch, ctx);
      expect(result.ackAll).toBe(true);
      expect(result.retryBatch.retry).toBe(false);
    }
    // The notifications queue delivers the push and email jobs again.
    await env.NOTIFICATIONS.sendBatch([
      { body: { notificationId: notification.id, channel: "push" } },
      { body: { notificationId: notification.id, channel: "email" } },
      { body: { notificationId: notification.id, channel: "push" } },
    ]);
    await sleep(2_500);

    const items = (await notificationsOf(f.apiKey, f.bob.id)).filter((n) => n.eventId === event.id);
    expect(items).toHaveLength(1);
    expect(items[0]).toEqual(notification);
    expect(await pushesOf(subscription.id)).toHaveLength(1);
    expect(await emailsTo(f.bob.email)).toHaveLength(1);
    await socket.flush();
    expect(socket.events().map((frame) => frame.event.data.id)).toEqual([notification.id]);
    socket.close();
    const deliveries = await env.DB.prepare(
      "SELECT channel, status, attempts FROM notification_deliveries WHERE notification_id = ?1 ORDER BY channel",
    )
      .bind(notification.id)
      .all();
    expect(deliveries.results).toEqual([
      { channel: "email", status: "sent", attempts: 1 },
      { channel: "push", status: "sent", attempts: 1 },
    ]);
  });
});

describe("a sender that stopped mid-send", () => {
  it("is never retried: a delivery claimed longer ago than the lease is failed, not sent again", async () => {
    const f = await setup();
    const { subscription, id: subscriptionId } = await subscribeBob(f);
    const id = `ntf_01stale${crypto.randomUUID().replace(/-/g, "").slice(0, 18)}`;
    const now = new Date().toISOString();
    await env.DB.batch([
      env.DB.prepare(
        `INSERT INTO notifications (id, org_id, account_id, rule_id, event_id, title, body, priority, websocket_status,
           push_status, email_status, read_at, created_at)
         VALUES (?1, ?2, ?3, 'rule_0123456789', 'evt_0123456789', 't', 'b', 'normal', NULL, 'pending', NULL, NULL, ?4)`,
      ).bind(id, f.orgId, f.bob.id, now),
      // A worker claimed this delivery ten minutes ago and never reported back: whether it was sent is unknown.
      env.DB.prepare(
        `INSERT INTO notification_deliveries (notification_id, channel, target, status, attempts, claimed_at, updated_at)
         VALUES (?1, 'push', ?2, 'sending', 1, ?3, ?4)`,
      ).bind(id, subscriptionId, Date.now() - 10 * 60_000, now),
    ]);
    await env.NOTIFICATIONS.send({ notificationId: id, channel: "push" });
    const [notification] = await eventually(async () => {
      const items = (await notificationsOf(f.apiKey, f.bob.id)).filter((n) => n.id === id);
      return items[0]?.channels.push && items;
    });
    expect(notification.channels).toEqual({ push: "failed" });
    expect(await pushesOf(subscription.id)).toEqual([]);
    const delivery = await env.DB.prepare(
      "SELECT status, error FROM notification_deliveries WHERE notification_id = ?1",
    )
      .bind(id)
      .first();
    expect(delivery).toEqual({ status: "failed", error: "the sender stopped while sending" });
  });
});
