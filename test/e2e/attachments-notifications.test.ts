import { afterEach, describe, expect, it } from "vitest";
import { RealtimeClient, realtimeUrl, type ParleyEvent } from "../../src/sdk";
import { baseUrl, createFixture, eventually, expectParleyError } from "./helpers";

// Attachments and in-app notifications against `npm run dev`, over plain HTTP as any client would use them.

const clients: RealtimeClient[] = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

async function http(method: string, path: string, token: string | null, body?: BodyInit, type?: string) {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (type) headers["content-type"] = type;
  const response = await fetch(new URL(path, baseUrl), { method, headers, body });
  return response;
}

// The smallest valid PNG: the signature and an IHDR, IDAT and IEND chunk (a 1x1 pixel).
const PNG = Uint8Array.from(
  atob("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="),
  (c) => c.charCodeAt(0),
);

describe("attachments under npm run dev", () => {
  it("uploads a file, downloads it byte for byte through its signed URL, and a message carries it", async () => {
    const f = await createFixture();
    const uploaded = await http("POST", "/v1/attachments?name=dot.png", f.apiKey, PNG, "image/png");
    expect(uploaded.status).toBe(201);
    const attachment = (await uploaded.json()) as any;
    expect(attachment).toMatchObject({ name: "dot.png", contentType: "image/png", size: PNG.byteLength });
    expect(attachment.sha256).toMatch(/^[0-9a-f]{64}$/);

    const download = await fetch(attachment.url);
    expect(download.status).toBe(200);
    expect(new Uint8Array(await download.arrayBuffer())).toEqual(PNG);
    expect(download.headers.get("x-content-type-options")).toBe("nosniff");
    expect(download.headers.get("content-security-policy")).toContain("sandbox");
    const tampered = await fetch(attachment.url.replace(/sig=[^&]+/, "sig=AAAA"));
    expect(tampered.status).toBe(403);

    const message = await f.client.messages.post(f.conversation.id, {
      authorId: f.alice.id,
      text: "see attached",
      attachmentIds: [attachment.id],
    });
    expect(message.attachments).toEqual([
      { id: attachment.id, name: "dot.png", contentType: "image/png", size: PNG.byteLength },
    ]);
  });
});

describe("notifications under npm run dev", () => {
  it("a rule notifies the other participants live over /v1/realtime, never the author, and lists them", async () => {
    const f = await createFixture();
    const rule = await http(
      "POST",
      "/v1/notification-rules",
      f.apiKey,
      JSON.stringify({
        name: "new messages",
        topic: `events.${f.org.id}.conversations.conversation.message_posted.*`,
        channels: ["websocket"],
        recipients: "participants",
        template: { title: "New message", body: "{{event.data.text}}" },
      }),
      "application/json",
    );
    expect(rule.status).toBe(201);
    const { token } = await f.client.tokens.create({ accountId: f.bob.id });
    const bob = new RealtimeClient({ url: realtimeUrl(baseUrl), token });
    clients.push(bob);
    const events: ParleyEvent[] = [];
    bob.on("event", (event) => events.push(event));
    await bob.subscribe(`events.${f.org.id}.notifications.notification.created.${f.bob.id}`);

    await f.client.messages.post(f.conversation.id, { authorId: f.alice.id, text: "hello <b>bob</b>" });
    await eventually(() => events.length > 0, 20_000);
    expect(events[0].data).toMatchObject({
      accountId: f.bob.id,
      title: "New message",
      body: "hello <b>bob</b>",
      readAt: null,
    });

    const listed = await http("GET", `/v1/notifications?accountId=${f.bob.id}`, f.apiKey);
    const items = ((await listed.json()) as any).items;
    expect(items).toHaveLength(1);
    const aliceList = await http("GET", `/v1/notifications?accountId=${f.alice.id}`, f.apiKey);
    expect(((await aliceList.json()) as any).items).toEqual([]);
    const read = await http("POST", `/v1/notifications/${items[0].id}/read`, f.apiKey);
    expect(read.status).toBe(200);
    const unread = await http("GET", `/v1/notifications?accountId=${f.bob.id}&unread=true`, f.apiKey);
    expect(((await unread.json()) as any).items).toEqual([]);
  });
});

describe("ParleyClient: attachments and notifications", () => {
  it("uploads a File, reads and deletes it; manages rules, notifications, preferences and push subscriptions", async () => {
    const f = await createFixture();
    const file = new File([PNG], "dot.png", { type: "image/png" });
    const attachment = await f.client.attachments.upload(file);
    expect(attachment).toMatchObject({ name: "dot.png", contentType: "image/png", size: PNG.byteLength });
    const bytes = await f.client.attachments.upload(PNG, { name: "raw.png", contentType: "image/png" });
    expect(bytes).toMatchObject({ name: "raw.png", sha256: attachment.sha256 });
    expect((await f.client.attachments.get(attachment.id)).url).toMatch(/sig=/);
    await f.client.attachments.delete(bytes.id);
    await expectParleyError(f.client.attachments.get(bytes.id), 404, "NOT_FOUND");

    const rule = await f.client.notificationRules.create({
      name: "new messages",
      topic: `events.${f.org.id}.conversations.conversation.message_posted.*`,
      channels: ["websocket"],
      recipients: "participants",
      template: { title: "From {{event.data.authorId}}", body: "{{event.data.text}}" },
    });
    expect((await f.client.notificationRules.get(rule.id)).name).toBe("new messages");
    expect((await f.client.notificationRules.update(rule.id, { name: "messages" })).name).toBe("messages");
    expect((await f.client.notificationRules.list()).items.map((r) => r.id)).toEqual([rule.id]);

    await f.client.messages.post(f.conversation.id, {
      authorId: f.alice.id,
      text: "ping",
      attachmentIds: [attachment.id],
    });
    const bob = f.client.withToken((await f.client.tokens.create({ accountId: f.bob.id })).token);
    const [notification] = await eventually(async () => {
      const { items } = await bob.notifications.list();
      return items.length > 0 && items;
    });
    expect(notification).toMatchObject({ accountId: f.bob.id, body: "ping", readAt: null });
    expect((await bob.notifications.read(notification.id)).readAt).not.toBeNull();
    expect((await bob.notifications.list({ unread: true })).items).toEqual([]);

    const preferences = await bob.notifications.setPreferences(f.bob.id, { channels: { email: false } });
    expect(preferences.channels.email).toBe(false);
    expect((await bob.notifications.preferences(f.bob.id)).channels.email).toBe(false);

    const { publicKey } = await f.client.push.vapidPublicKey();
    expect(publicKey).toMatch(/^[A-Za-z0-9_-]{80,}$/);
    const keys = (await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, [
      "deriveBits",
    ])) as CryptoKeyPair;
    const p256dh = Buffer.from(await crypto.subtle.exportKey("raw", keys.publicKey)).toString("base64url");
    const auth = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64url");
    const subscription = await bob.push.subscribe(f.bob.id, {
      endpoint: "https://push.example.com/send/1",
      keys: { p256dh, auth },
    });
    expect((await bob.push.subscriptions(f.bob.id)).items.map((s) => s.id)).toEqual([subscription.id]);
    await bob.push.unsubscribe(f.bob.id, subscription.id);
    expect((await bob.push.subscriptions(f.bob.id)).items).toEqual([]);
    await f.client.notificationRules.delete(rule.id);
    await expectParleyError(f.client.notificationRules.get(rule.id), 404, "NOT_FOUND");
  });
});
