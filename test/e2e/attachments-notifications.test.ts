import { afterEach, describe, expect, it } from "vitest";
import { RealtimeClient, realtimeUrl, type ParleyEvent } from "../../src/sdk";
import { baseUrl, createFixture, eventually } from "./helpers";

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
