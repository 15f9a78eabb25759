import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app";
import {
  accountToken,
  call,
  createAccount,
  createOrg,
  env,
  expectBadRequest,
  expectError,
  readResponse,
} from "../helpers/api";
import { newPushSubscription } from "../helpers/notifications";

// Contract section 10, the REST side: rules (CRUD), preferences, push subscriptions, the VAPID key, and the
// recipient's notifications; who may do what (API key: the whole org; account token: its own account only).

const rule = (orgId: string, extra: Record<string, unknown> = {}) => ({
  name: "Mentions",
  topic: `events.${orgId}.conversations.conversation.message_posted.*`,
  channels: ["websocket", "email"],
  recipients: "participants",
  template: { title: "New message", body: "{{event.data.text}}" },
  ...extra,
});

async function countRules(orgId: string) {
  return (await env.DB.prepare("SELECT count(*) AS n FROM notification_rules WHERE org_id = ?1").bind(orgId).first<{
    n: number;
  }>())!.n;
}

describe("notification rules", () => {
  it("are created, read, listed by cursor, changed and deleted with an API key", async () => {
    const { orgId, apiKey } = await createOrg();
    const ada = await createAccount(apiKey, { type: "user", name: "Ada" });
    const created = await call("POST", "/v1/notification-rules", { token: apiKey, body: rule(orgId) });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body).toEqual({
      id: expect.stringMatching(/^rule_/),
      orgId,
      ...rule(orgId),
      priority: "normal",
      createdAt: expect.any(String),
      updatedAt: created.body.createdAt,
    });
    const second = await call("POST", "/v1/notification-rules", {
      token: apiKey,
      body: rule(orgId, {
        name: "Ops",
        recipients: { accountIds: [ada.id] },
        priority: "critical",
        channels: ["push"],
      }),
    });
    expect(second.status).toBe(201);

    const got = await call("GET", `/v1/notification-rules/${created.body.id}`, { token: apiKey });
    expect(got.body).toEqual(created.body);
    const page1 = await call("GET", "/v1/notification-rules?limit=1", { token: apiKey });
    expect(page1.body.items.map((r: any) => r.id)).toEqual([second.body.id]);
    const page2 = await call("GET", `/v1/notification-rules?limit=1&cursor=${page1.body.nextCursor}`, {
      token: apiKey,
    });
    expect(page2.body).toEqual({ items: [created.body], nextCursor: null });

    const patched = await call("PATCH", `/v1/notification-rules/${created.body.id}`, {
      token: apiKey,
      body: { name: "Renamed", priority: "low", template: { title: "T {{recipient.name}}", body: "" } },
    });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body).toMatchObject({
      name: "Renamed",
      priority: "low",
      template: { title: "T {{recipient.name}}", body: "" },
      topic: created.body.topic,
    });
    const deleted = await call("DELETE", `/v1/notification-rules/${created.body.id}`, { token: apiKey });
    expect(deleted.status).toBe(204);
    expectError(await call("GET", `/v1/notification-rules/${created.body.id}`, { token: apiKey }), 404, "NOT_FOUND");
    expectError(await call("DELETE", `/v1/notification-rules/${created.body.id}`, { token: apiKey }), 404, "NOT_FOUND");
    expect(await countRules(orgId)).toBe(1);
  });

  it("refuse bad input with 400 details and change nothing", async () => {
    const { orgId, apiKey } = await createOrg();
    const other = await createOrg("Other");
    const stranger = await createAccount(other.apiKey, { type: "user", name: "Stranger" });
    const cases: [Record<string, unknown>, string][] = [
      [rule(orgId, { topic: "events.nope" }), "topic"],
      [rule(orgId, { topic: `events.${other.orgId}.conversations.*.*.*` }), "topic"],
      [rule(orgId, { topic: `events.${orgId}.conversations.conver sation.*.*` }), "topic"],
      [rule(orgId, { channels: [] }), "channels"],
      [rule(orgId, { channels: ["sms"] }), "channels.0"],
      [rule(orgId, { channels: "email" }), "channels"],
      [rule(orgId, { channels: ["push", "push"] }), "channels"],
      [rule(orgId, { recipients: "everyone" }), "recipients"],
      [rule(orgId, { recipients: { accountIds: [stranger.id] } }), "recipients.accountIds"],
      [rule(orgId, { priority: "urgent" }), "priority"],
      [rule(orgId, { template: { title: "{{env.SECRET}}", body: "" } }), "template.title"],
      [rule(orgId, { template: { title: "", body: "x" } }), "template.title"],
      [rule(orgId, { template: { title: "x" } }), "template.body"],
      [rule(orgId, { extra: true }), "(body)"],
    ];
    for (const [body, path] of cases) {
      expectBadRequest(await call("POST", "/v1/notification-rules", { token: apiKey, body }), path);
    }
    // a value of the wrong type gets that one detail (zod also checks an array's length on a string)
    const mistyped = await call("POST", "/v1/notification-rules", {
      token: apiKey,
      body: rule(orgId, { channels: "email" }),
    });
    expect(mistyped.body.error.details).toEqual([{ path: "channels", message: expect.stringContaining("array") }]);
    // a recipients value of neither form says which forms there are
    const everyone = await call("POST", "/v1/notification-rules", {
      token: apiKey,
      body: rule(orgId, { recipients: "everyone" }),
    });
    expect(everyone.body.error.details).toEqual([
      { path: "recipients", message: expect.stringContaining('"participants" or { "accountIds"') },
    ]);
    expect(await countRules(orgId)).toBe(0);
    const created = await call("POST", "/v1/notification-rules", { token: apiKey, body: rule(orgId) });
    expectBadRequest(
      await call("PATCH", `/v1/notification-rules/${created.body.id}`, { token: apiKey, body: { topic: "x" } }),
      "topic",
    );
    expectError(await call("GET", "/v1/notification-rules/nope", { token: apiKey }), 404, "NOT_FOUND");
    expect((await call("GET", `/v1/notification-rules/${created.body.id}`, { token: apiKey })).body.topic).toBe(
      rule(orgId).topic,
    );
  });

  it("belong to their org, and only API keys manage them", async () => {
    const { orgId, apiKey } = await createOrg();
    const other = await createOrg("Other");
    const ada = await createAccount(apiKey, { type: "user", name: "Ada" });
    const created = await call("POST", "/v1/notification-rules", { token: apiKey, body: rule(orgId) });
    expectError(
      await call("GET", `/v1/notification-rules/${created.body.id}`, { token: other.apiKey }),
      404,
      "NOT_FOUND",
    );
    expectError(
      await call("PATCH", `/v1/notification-rules/${created.body.id}`, { token: other.apiKey, body: { name: "x" } }),
      404,
      "NOT_FOUND",
    );
    expect((await call("GET", "/v1/notification-rules", { token: other.apiKey })).body.items).toEqual([]);
    const token = await accountToken(apiKey, ada.id);
    expectError(await call("GET", "/v1/notification-rules", { token }), 403, "FORBIDDEN");
    expectError(await call("POST", "/v1/notification-rules", { token, body: rule(orgId) }), 403, "FORBIDDEN");
    expectError(await call("GET", "/v1/notification-rules"), 401, "UNAUTHORIZED");
  });
});

describe("preferences", () => {
  it("default to every channel on; PUT replaces what it names; an account token sets only its own", async () => {
    const { apiKey } = await createOrg();
    const ada = await createAccount(apiKey, { type: "user", name: "Ada" });
    const bob = await createAccount(apiKey, { type: "user", name: "Bob" });
    const path = `/v1/accounts/${ada.id}/notification-preferences`;
    const defaults = await call("GET", path, { token: apiKey });
    expect(defaults.body).toEqual({
      accountId: ada.id,
      channels: { push: true, email: true, websocket: true },
      mutedRoomIds: [],
      updatedAt: null,
    });
    const token = await accountToken(apiKey, ada.id);
    const created = await call("POST", "/v1/rooms", {
      token: apiKey,
      body: { type: "standard", participants: [{ accountId: ada.id }] },
    });
    const room = created.body.id as string;
    const first = await call("PUT", path, { token, body: { channels: { email: false }, mutedRoomIds: [room, room] } });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({ channels: { push: true, email: false, websocket: true }, mutedRoomIds: [room] });
    const second = await call("PUT", path, { token: apiKey, body: { channels: { push: false } } });
    expect(second.body).toMatchObject({
      channels: { push: false, email: false, websocket: true },
      mutedRoomIds: [room],
    });
    expect((await call("GET", path, { token })).body).toEqual(second.body);

    expectBadRequest(await call("PUT", path, { token, body: { channels: { sms: true } } }), "channels");
    expectBadRequest(await call("PUT", path, { token, body: { mutedRoomIds: ["conv_1"] } }), "mutedRoomIds.0");
    // a room that is not one of the org's: another org's, or none at all
    const elsewhere = await createOrg("Elsewhere");
    const theirs = await call("POST", "/v1/rooms", { token: elsewhere.apiKey, body: { type: "standard" } });
    for (const unknown of [theirs.body.id, "room_0123456789abcdefghjkmnpqrs"]) {
      expectBadRequest(await call("PUT", path, { token, body: { mutedRoomIds: [room, unknown] } }), "mutedRoomIds.1");
    }
    expectBadRequest(await call("PUT", path, { token, body: { channels: { push: "yes" } } }), "channels.push");
    expect((await call("GET", path, { token })).body).toEqual(second.body);

    const bobToken = await accountToken(apiKey, bob.id);
    expectError(await call("GET", path, { token: bobToken }), 404, "NOT_FOUND");
    expectError(await call("PUT", path, { token: bobToken, body: { channels: { push: true } } }), 404, "NOT_FOUND");
    const other = await createOrg("Other");
    expectError(await call("PUT", path, { token: other.apiKey, body: {} }), 404, "NOT_FOUND");
    expect((await call("GET", path, { token })).body).toEqual(second.body);
    // With an account token, a room of the org it takes no part in answers as one that does not exist (no leak);
    // an API key may name any room of the org.
    const notHers = await call("POST", "/v1/rooms", {
      token: apiKey,
      body: { type: "standard", participants: [{ accountId: bob.id }] },
    });
    const refused = await call("PUT", path, { token, body: { mutedRoomIds: [room, notHers.body.id] } });
    expectBadRequest(refused, "mutedRoomIds.1");
    const missing = await call("PUT", path, {
      token,
      body: { mutedRoomIds: [room, "room_0123456789abcdefghjkmnpqrs"] },
    });
    expect(refused.body.error.details).toEqual(missing.body.error.details);
    const byKey = await call("PUT", path, { token: apiKey, body: { mutedRoomIds: [room, notHers.body.id] } });
    expect(byKey.status, JSON.stringify(byKey.body)).toBe(200);
  });
});

describe("push subscriptions and the VAPID key", () => {
  it("register a browser's PushSubscription; the same endpoint again updates it; list and delete", async () => {
    const { apiKey } = await createOrg();
    const ada = await createAccount(apiKey, { type: "user", name: "Ada" });
    const bob = await createAccount(apiKey, { type: "user", name: "Bob" });
    const token = await accountToken(apiKey, ada.id);
    const path = `/v1/accounts/${ada.id}/push-subscriptions`;
    const subscription = await newPushSubscription();
    const created = await call("POST", path, { token, body: { ...subscription.json, expirationTime: null } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body).toEqual({
      id: expect.stringMatching(/^psub_/),
      accountId: ada.id,
      endpoint: subscription.json.endpoint,
      createdAt: expect.any(String),
    });
    const fresh = await newPushSubscription();
    const again = await call("POST", path, {
      token,
      body: { endpoint: subscription.json.endpoint, keys: fresh.json.keys },
    });
    expect(again.body.id).toBe(created.body.id);
    const row = await env.DB.prepare("SELECT p256dh FROM push_subscriptions WHERE id = ?1")
      .bind(created.body.id)
      .first();
    expect(row).toEqual({ p256dh: fresh.json.keys.p256dh });
    expect((await call("GET", path, { token })).body).toEqual({ items: [created.body], nextCursor: null });

    const bad: [unknown, string][] = [
      [{ ...subscription.json, endpoint: "http://push.example.com/x" }, "endpoint"],
      [{ ...subscription.json, endpoint: "not a url" }, "endpoint"],
      [{ ...subscription.json, keys: { ...subscription.json.keys, p256dh: "AAAA" } }, "keys.p256dh"],
      // 65 bytes of the uncompressed form, but not a point on the curve.
      [{ ...subscription.json, keys: { ...subscription.json.keys, p256dh: `BA${"E".repeat(85)}` } }, "keys.p256dh"],
      [{ ...subscription.json, keys: { ...subscription.json.keys, auth: subscription.json.keys.p256dh } }, "keys.auth"],
      [{ endpoint: subscription.json.endpoint }, "keys"],
    ];
    for (const [body, at] of bad) expectBadRequest(await call("POST", path, { token, body }), at);

    const bobToken = await accountToken(apiKey, bob.id);
    expectError(await call("POST", path, { token: bobToken, body: subscription.json }), 404, "NOT_FOUND");
    expectError(await call("GET", path, { token: bobToken }), 404, "NOT_FOUND");
    expectError(await call("DELETE", `${path}/${created.body.id}`, { token: bobToken }), 404, "NOT_FOUND");
    expect((await call("DELETE", `${path}/${created.body.id}`, { token })).status).toBe(204);
    expectError(await call("DELETE", `${path}/${created.body.id}`, { token }), 404, "NOT_FOUND");
    expect((await call("GET", path, { token: apiKey })).body.items).toEqual([]);
  });

  it("serves the VAPID public key without credentials, and 503 when push is not configured", async () => {
    const served = await call("GET", "/v1/push/vapid-public-key");
    expect(served.status).toBe(200);
    expect(served.body).toEqual({ publicKey: env.VAPID_PUBLIC_KEY });
    expect(served.body.publicKey).toMatch(/^B[A-Za-z0-9_-]{86}$/);

    const app = createApp();
    for (const VAPID_PUBLIC_KEY of [undefined, "", "not-a-key"]) {
      const response = await readResponse(
        await app.request("/v1/push/vapid-public-key", {}, { ...env, VAPID_PUBLIC_KEY }),
      );
      expectError(response, 503, "UNAVAILABLE");
    }
  });
});

describe("a recipient's notifications", () => {
  async function seed(orgId: string, accountId: string, count: number) {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = `ntf_01seed${crypto.randomUUID().replace(/-/g, "").slice(0, 20)}${i}`;
      ids.push(id);
      await env.DB.prepare(
        `INSERT INTO notifications (id, org_id, account_id, rule_id, event_id, title, body, priority, websocket_status,
           push_status, email_status, read_at, created_at)
         VALUES (?1, ?2, ?3, 'rule_0123456789', ?4, ?5, 'body', 'normal', 'sent', 'pending', NULL, NULL, ?6)`,
      )
        .bind(id, orgId, accountId, `evt_seed${i}${crypto.randomUUID().slice(0, 8)}`, `n${i}`, new Date().toISOString())
        .run();
    }
    return ids.sort();
  }

  it("are listed newest first, filtered by unread, marked read once, only by their recipient or an API key", async () => {
    const { orgId, apiKey } = await createOrg();
    const ada = await createAccount(apiKey, { type: "user", name: "Ada" });
    const bob = await createAccount(apiKey, { type: "user", name: "Bob" });
    const ids = await seed(orgId, ada.id, 3);
    const token = await accountToken(apiKey, ada.id);

    const all = await call("GET", "/v1/notifications", { token });
    expect(all.status, JSON.stringify(all.body)).toBe(200);
    expect(all.body.items.map((n: any) => n.id)).toEqual([...ids].reverse());
    // A channel still in flight is not reported; one the rule does not use is absent.
    expect(all.body.items[0].channels).toEqual({ websocket: "sent" });

    const read = await call("POST", `/v1/notifications/${ids[1]}/read`, { token });
    expect(read.status, JSON.stringify(read.body)).toBe(200);
    expect(read.body.readAt).toEqual(expect.any(String));
    const again = await call("POST", `/v1/notifications/${ids[1]}/read`, { token: apiKey });
    expect(again.body.readAt).toBe(read.body.readAt);

    const unread = await call("GET", `/v1/notifications?unread=true`, { token });
    expect(unread.body.items.map((n: any) => n.id)).toEqual([ids[2], ids[0]]);
    const page = await call("GET", `/v1/notifications?accountId=${ada.id}&limit=2`, { token: apiKey });
    expect(page.body.items).toHaveLength(2);
    const rest = await call("GET", `/v1/notifications?accountId=${ada.id}&cursor=${page.body.nextCursor}`, {
      token: apiKey,
    });
    expect(rest.body).toMatchObject({ items: [{ id: ids[0] }], nextCursor: null });

    const bobToken = await accountToken(apiKey, bob.id);
    expect((await call("GET", "/v1/notifications", { token: bobToken })).body.items).toEqual([]);
    expectError(await call("GET", `/v1/notifications?accountId=${ada.id}`, { token: bobToken }), 403, "FORBIDDEN");
    expectError(await call("POST", `/v1/notifications/${ids[0]}/read`, { token: bobToken }), 404, "NOT_FOUND");
    const other = await createOrg("Other");
    expectError(await call("POST", `/v1/notifications/${ids[0]}/read`, { token: other.apiKey }), 404, "NOT_FOUND");
    expect((await call("GET", `/v1/notifications?accountId=${ada.id}`, { token: other.apiKey })).body.items).toEqual(
      [],
    );
    expectBadRequest(await call("GET", "/v1/notifications?unread=maybe", { token }), "unread");
    expectBadRequest(await call("GET", "/v1/notifications?accountId=bob", { token: apiKey }), "accountId");
    expectError(await call("POST", "/v1/notifications/nope/read", { token }), 404, "NOT_FOUND");
    const unchanged = await call("GET", "/v1/notifications?unread=true", { token });
    expect(unchanged.body.items).toHaveLength(2);
  });

  it("are described in the OpenAPI document", async () => {
    const doc = await call("GET", "/v1/openapi.json");
    for (const path of [
      "/v1/notification-rules",
      "/v1/notification-rules/{id}",
      "/v1/notifications",
      "/v1/notifications/{id}/read",
      "/v1/accounts/{id}/notification-preferences",
      "/v1/accounts/{id}/push-subscriptions",
      "/v1/push/vapid-public-key",
    ]) {
      expect(doc.body.paths[path], path).toBeDefined();
    }
    expect(doc.body.paths["/v1/push/vapid-public-key"].get.security).toEqual([]);
  });
});
