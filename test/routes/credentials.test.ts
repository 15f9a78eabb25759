import { env } from "cloudflare:test";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { ADMIN_TOKEN, accountToken, call, createAccount, createOrg, expectError } from "../helpers/api";

const JWT_SECRET = "test-jwt-secret-0123456789abcdef";

/** SHA-256 of a string as lower-case hex, as an independent check of how keys are stored. */
async function sha256Hex(text: string) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** base64url of a JSON value, without padding. */
function b64url(value: unknown) {
  return btoa(JSON.stringify(value)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The claims an account token carries (see src/auth/tokens.ts), with overrides. */
function claims(orgId: string, accountId: string, overrides: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  const base: Record<string, unknown> = {
    iss: "parley",
    aud: "parley-api",
    sub: accountId,
    org: orgId,
    typ: "account",
    jti: `tok_${crypto.randomUUID().replace(/-/g, "")}`,
    iat: now,
    exp: now + 600,
  };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) delete base[key];
    else base[key] = value;
  }
  return base;
}

/** GET of the account itself: what an account token may always do. */
function getSelf(token: string, accountId: string) {
  return call("GET", `/v1/accounts/${accountId}`, { token });
}

describe("admin token", () => {
  it("creates an org with an API key", async () => {
    const response = await call("POST", "/v1/orgs", { token: ADMIN_TOKEN, body: { name: "Acme" } });
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    expect(response.body.org.id).toMatch(/^org_[0-9a-z]+$/);
    expect(response.body.org.name).toBe("Acme");
    expect(new Date(response.body.org.createdAt).toISOString()).toBe(response.body.org.createdAt);
    expect(response.body.apiKey).toMatch(/^sk_.{20,}$/);
    // The key works in its org.
    const list = await call("GET", "/v1/accounts", { token: response.body.apiKey });
    expect(list.status).toBe(200);
  });

  it("validates the org body", async () => {
    const missing = await call("POST", "/v1/orgs", { token: ADMIN_TOKEN, body: {} });
    expectError(missing, 400, "BAD_REQUEST");
    expect(missing.body.error.details.map((d: any) => d.path)).toContain("name");
    const blank = await call("POST", "/v1/orgs", { token: ADMIN_TOKEN, body: { name: "   " } });
    expectError(blank, 400, "BAD_REQUEST");
  });

  it("POST /v1/orgs without or with a wrong admin token is 401", async () => {
    expectError(await call("POST", "/v1/orgs", { body: { name: "X" } }), 401, "UNAUTHORIZED");
    for (const token of [`${ADMIN_TOKEN}x`, ADMIN_TOKEN.slice(0, -1), "TEST-ADMIN-TOKEN", "sk_test-admin-token"]) {
      expectError(await call("POST", "/v1/orgs", { token, body: { name: "X" } }), 401, "UNAUTHORIZED");
    }
    // Not a Bearer header at all.
    const basic = await call("POST", "/v1/orgs", {
      headers: { authorization: `Basic ${btoa(`admin:${ADMIN_TOKEN}`)}` },
      body: { name: "X" },
    });
    expectError(basic, 401, "UNAUTHORIZED");
    const bare = await call("POST", "/v1/orgs", { headers: { authorization: ADMIN_TOKEN }, body: { name: "X" } });
    expectError(bare, 401, "UNAUTHORIZED");
  });

  it("POST /v1/orgs with an API key or account token is 403", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const token = await accountToken(org.apiKey, account.id);
    expectError(await call("POST", "/v1/orgs", { token: org.apiKey, body: { name: "X" } }), 403, "FORBIDDEN");
    expectError(await call("POST", "/v1/orgs", { token, body: { name: "X" } }), 403, "FORBIDDEN");
  });

  it("is 403 on every route but POST /v1/orgs", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const cases: [string, string, unknown?][] = [
      ["GET", "/v1/accounts"],
      ["POST", "/v1/accounts", { type: "user", name: "Ada" }],
      ["GET", `/v1/accounts/${account.id}`],
      ["PATCH", `/v1/accounts/${account.id}`, { name: "Changed" }],
      ["DELETE", `/v1/accounts/${account.id}`],
      ["POST", "/v1/api-keys", {}],
      ["GET", "/v1/api-keys"],
      ["DELETE", "/v1/api-keys/key_0123456789abcdef"],
      ["POST", "/v1/tokens", { accountId: account.id }],
      ["GET", "/v1/rooms"],
      ["POST", "/v1/rooms", { type: "standard" }],
      ["GET", "/v1/conversations"],
    ];
    for (const [method, path, body] of cases) {
      const response = await call(method, path, { token: ADMIN_TOKEN, body });
      expectError(response, 403, "FORBIDDEN");
    }
    // Nothing changed.
    const after = await call("GET", `/v1/accounts/${account.id}`, { token: org.apiKey });
    expect(after.status).toBe(200);
    expect(after.body.name).toBe(account.name);
  });
});

describe("API keys", () => {
  it("are returned once with the sk_ prefix and stored only as a hash", async () => {
    const org = await createOrg();
    const created = await call("POST", "/v1/api-keys", { token: org.apiKey, body: { name: "ci" } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.id).toMatch(/^key_[0-9a-z]+$/);
    expect(created.body.apiKey).toMatch(/^sk_.{20,}$/);
    expect(created.body.apiKey).not.toBe(org.apiKey);
    expect(new Date(created.body.createdAt).toISOString()).toBe(created.body.createdAt);

    const { results } = await env.DB.prepare("SELECT * FROM api_keys WHERE org_id = ? ORDER BY id")
      .bind(org.orgId)
      .all();
    expect(results.length).toBe(2);
    const hashes = await Promise.all([org.apiKey, created.body.apiKey].map(sha256Hex));
    for (const row of results) {
      expect(hashes).toContain(row.key_hash);
      // No column holds a secret.
      for (const value of Object.values(row)) {
        expect(String(value)).not.toContain(org.apiKey);
        expect(String(value)).not.toContain(created.body.apiKey);
        expect(String(value)).not.toMatch(/^sk_/);
      }
    }
    const row = results.find((r) => r.id === created.body.id)!;
    expect(row.key_hash).toBe(await sha256Hex(created.body.apiKey));

    // Listing keys never shows a secret.
    const list = await call("GET", "/v1/api-keys", { token: org.apiKey });
    expect(list.status).toBe(200);
    expect(list.body.items.map((k: any) => k.id)).toContain(created.body.id);
    expect(JSON.stringify(list.body)).not.toContain("sk_");
    expect(JSON.stringify(list.body)).not.toContain(row.key_hash as string);
  });

  it("a new key works and can itself create another key", async () => {
    const org = await createOrg();
    const first = await call("POST", "/v1/api-keys", { token: org.apiKey, body: {} });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    const account = await createAccount(first.body.apiKey, { type: "user", name: "Via new key" });
    expect(account.orgId).toBe(org.orgId);
    const second = await call("POST", "/v1/api-keys", { token: first.body.apiKey, body: { name: "third" } });
    expect(second.status, JSON.stringify(second.body)).toBe(201);
    expect(new Set([org.apiKey, first.body.apiKey, second.body.apiKey]).size).toBe(3);
    const seen = await call("GET", `/v1/accounts/${account.id}`, { token: second.body.apiKey });
    expect(seen.status).toBe(200);
    expect(seen.body.id).toBe(account.id);
  });

  it("an unknown sk_ key is 401", async () => {
    const response = await call("GET", "/v1/accounts", { token: "sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" });
    expectError(response, 401, "UNAUTHORIZED");
  });

  it("DELETE /v1/api-keys/{id} revokes the key: it is 401 afterwards, other keys keep working", async () => {
    const org = await createOrg();
    const extra = await call("POST", "/v1/api-keys", { token: org.apiKey, body: { name: "temp" } });
    expect(extra.status).toBe(201);
    expect((await call("GET", "/v1/accounts", { token: extra.body.apiKey })).status).toBe(200);

    const revoked = await call("DELETE", `/v1/api-keys/${extra.body.id}`, { token: org.apiKey });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(204);

    expectError(await call("GET", "/v1/accounts", { token: extra.body.apiKey }), 401, "UNAUTHORIZED");
    expectError(await call("POST", "/v1/api-keys", { token: extra.body.apiKey, body: {} }), 401, "UNAUTHORIZED");
    expect((await call("GET", "/v1/accounts", { token: org.apiKey })).status).toBe(200);

    // Revoking again is 404; the revoked key no longer appears in the list.
    expectError(await call("DELETE", `/v1/api-keys/${extra.body.id}`, { token: org.apiKey }), 404, "NOT_FOUND");
    const list = await call("GET", "/v1/api-keys", { token: org.apiKey });
    expect(list.body.items.map((k: any) => k.id)).not.toContain(extra.body.id);
  });

  it("revoking a key revokes the account and session tokens it issued (401), not those of other keys", async () => {
    const org = await createOrg();
    const user = await createAccount(org.apiKey, { type: "user", name: "Uma" });
    const room = await call("POST", "/v1/rooms", {
      token: org.apiKey,
      body: { type: "standard", participants: [{ accountId: user.id }] },
    });
    const conversation = await call("POST", `/v1/rooms/${room.body.id}/conversations`, { token: org.apiKey, body: {} });
    const extra = await call("POST", "/v1/api-keys", { token: org.apiKey, body: { name: "temp" } });
    const issued = await accountToken(extra.body.apiKey, user.id);
    const session = await call("POST", `/v1/conversations/${conversation.body.id}/sessions`, {
      token: extra.body.apiKey,
      body: { accountId: user.id },
    });
    const other = await accountToken(org.apiKey, user.id);
    const readConversation = (token: string) => call("GET", `/v1/conversations/${conversation.body.id}`, { token });
    for (const token of [issued, session.body.token, other]) expect((await readConversation(token)).status).toBe(200);

    expect((await call("DELETE", `/v1/api-keys/${extra.body.id}`, { token: org.apiKey })).status).toBe(204);
    for (const token of [issued, session.body.token]) {
      const refused = await readConversation(token);
      expectError(refused, 401, "UNAUTHORIZED");
      expect(refused.body.error.message).toBe("the API key that issued this token was revoked");
    }
    expect((await readConversation(other)).status).toBe(200);
  });

  it("a key can revoke itself", async () => {
    const org = await createOrg();
    const extra = await call("POST", "/v1/api-keys", { token: org.apiKey, body: {} });
    const self = await call("DELETE", `/v1/api-keys/${extra.body.id}`, { token: extra.body.apiKey });
    expect(self.status).toBe(204);
    expectError(await call("GET", "/v1/accounts", { token: extra.body.apiKey }), 401, "UNAUTHORIZED");
  });

  it("revoking another org's key is 404 and leaves it working", async () => {
    const mine = await createOrg("Mine");
    const theirs = await createOrg("Theirs");
    const key = await call("POST", "/v1/api-keys", { token: theirs.apiKey, body: {} });
    expect(key.status).toBe(201);

    const response = await call("DELETE", `/v1/api-keys/${key.body.id}`, { token: mine.apiKey });
    expectError(response, 404, "NOT_FOUND");
    expect((await call("GET", "/v1/accounts", { token: key.body.apiKey })).status).toBe(200);

    // Another org's key never appears in my list.
    const list = await call("GET", "/v1/api-keys", { token: mine.apiKey });
    expect(list.body.items.map((k: any) => k.id)).not.toContain(key.body.id);
  });

  it("revoking an unknown key is 404", async () => {
    const org = await createOrg();
    const response = await call("DELETE", "/v1/api-keys/key_0123456789abcdefghjk", { token: org.apiKey });
    expectError(response, 404, "NOT_FOUND");
  });
});

describe("POST /v1/tokens", () => {
  it("issues an account token that expires at now + ttl (default one hour)", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);

    const before = Date.now();
    const custom = await call("POST", "/v1/tokens", {
      token: org.apiKey,
      body: { accountId: account.id, ttlSeconds: 120 },
    });
    const after = Date.now();
    expect(custom.status, JSON.stringify(custom.body)).toBe(201);
    expect(typeof custom.body.token).toBe("string");
    expect(custom.body.token.split(".")).toHaveLength(3);
    expect(new Date(custom.body.expiresAt).toISOString()).toBe(custom.body.expiresAt);
    const expires = Date.parse(custom.body.expiresAt);
    expect(expires).toBeGreaterThanOrEqual(before + 120_000 - 2_000);
    expect(expires).toBeLessThanOrEqual(after + 120_000 + 2_000);

    const fallback = await call("POST", "/v1/tokens", { token: org.apiKey, body: { accountId: account.id } });
    expect(fallback.status).toBe(201);
    expect(Math.abs(Date.parse(fallback.body.expiresAt) - (Date.now() + 3600_000))).toBeLessThan(5_000);

    const max = await call("POST", "/v1/tokens", {
      token: org.apiKey,
      body: { accountId: account.id, ttlSeconds: 30 * 24 * 3600 },
    });
    expect(max.status).toBe(201);
    expect(Math.abs(Date.parse(max.body.expiresAt) - (Date.now() + 30 * 24 * 3600_000))).toBeLessThan(5_000);

    // The token acts as the account.
    const self = await getSelf(custom.body.token, account.id);
    expect(self.status, JSON.stringify(self.body)).toBe(200);
    expect(self.body.id).toBe(account.id);
  });

  it("ttlSeconds out of range or not an integer is 400 with details", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    for (const ttlSeconds of [0, -1, 30 * 24 * 3600 + 1, 1e12, 90.5, "3600", null, true]) {
      const response = await call("POST", "/v1/tokens", {
        token: org.apiKey,
        body: { accountId: account.id, ttlSeconds },
      });
      expectError(response, 400, "BAD_REQUEST");
      expect(
        response.body.error.details.map((d: any) => d.path),
        String(ttlSeconds),
      ).toEqual(["ttlSeconds"]);
    }
    // Past every bound at once, the detail names the field's own (not also an integer's safe range).
    const huge = await call("POST", "/v1/tokens", {
      token: org.apiKey,
      body: { accountId: account.id, ttlSeconds: 1e300 },
    });
    expect(huge.body.error.details).toEqual([{ path: "ttlSeconds", message: expect.stringContaining("2592000") }]);
    const min = await call("POST", "/v1/tokens", {
      token: org.apiKey,
      body: { accountId: account.id, ttlSeconds: 1 },
    });
    expect(min.status).toBe(201);
  });

  it("a token issued with ttlSeconds 1 works at once and is 401 once it has expired", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const issued = await call("POST", "/v1/tokens", {
      token: org.apiKey,
      body: { accountId: account.id, ttlSeconds: 1 },
    });
    expect(issued.status).toBe(201);
    expect(Date.parse(issued.body.expiresAt) - Date.now()).toBeLessThanOrEqual(1_000);
    const fresh = await call("GET", `/v1/accounts/${account.id}`, { token: issued.body.token });
    expect(fresh.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    expectError(await call("GET", `/v1/accounts/${account.id}`, { token: issued.body.token }), 401, "UNAUTHORIZED");
  });

  it("a missing or malformed accountId is 400 with details", async () => {
    const org = await createOrg();
    for (const body of [{}, { accountId: "nope" }, { accountId: 42 }, { accountId: "room_0123456789abcdef" }]) {
      const response = await call("POST", "/v1/tokens", { token: org.apiKey, body });
      expectError(response, 400, "BAD_REQUEST");
      expect(response.body.error.details.map((d: any) => d.path)).toContain("accountId");
    }
  });

  it("rejects unknown and other-org accounts alike, without issuing a token", async () => {
    const mine = await createOrg("Mine");
    const theirs = await createOrg("Theirs");
    const foreign = await createAccount(theirs.apiKey, { type: "user", name: "Foreign" });

    const unknown = await call("POST", "/v1/tokens", {
      token: mine.apiKey,
      body: { accountId: "acc_0123456789abcdefghjkmnpqrs" },
    });
    const other = await call("POST", "/v1/tokens", { token: mine.apiKey, body: { accountId: foreign.id } });
    for (const response of [unknown, other]) {
      expect([400, 404], JSON.stringify(response.body)).toContain(response.status);
      expect(response.body.token).toBeUndefined();
      expectError(response, response.status, response.status === 400 ? "BAD_REQUEST" : "NOT_FOUND");
    }
    // Existence in another org does not leak: same answer as an unknown id.
    expect(other.status).toBe(unknown.status);
    expect(other.body.error.code).toBe(unknown.body.error.code);
  });
});

describe("account tokens", () => {
  it("a token signed here with the test secret and the service's claims is accepted (control)", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const token = await sign(claims(org.orgId, account.id), JWT_SECRET, "HS256");
    const response = await getSelf(token, account.id);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
  });

  it("malformed tokens are 401", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const real = await accountToken(org.apiKey, account.id);
    const [header, payload, signature] = real.split(".");
    const tampered = b64url({ ...JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))), sub: "acc_other" });
    for (const token of [
      "garbage",
      "a.b.c",
      "a.b",
      `${header}.${payload}`,
      `${header}.${payload}.`,
      `${header}.${payload}.${signature}x`,
      `${header}.${payload}.${signature.slice(0, -4)}`,
      `${header}.${tampered}.${signature}`,
      `${header}.${payload}.${signature}.extra`,
      "eyJhbGciOiJIUzI1NiJ9.eyJ9.sig",
    ]) {
      const response = await getSelf(token, account.id);
      expectError(response, 401, "UNAUTHORIZED");
    }
    // The untouched token still works.
    expect((await getSelf(real, account.id)).status).toBe(200);
  });

  it("a token signed with a different secret is 401", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    for (const secret of ["another-secret-0123456789abcdef", `${JWT_SECRET}x`, JWT_SECRET.toUpperCase()]) {
      const token = await sign(claims(org.orgId, account.id), secret, "HS256");
      expectError(await getSelf(token, account.id), 401, "UNAUTHORIZED");
    }
  });

  it("a token with alg none, or another algorithm, is 401", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const body = b64url(claims(org.orgId, account.id));
    for (const alg of ["none", "None", "NONE"]) {
      const header = b64url({ alg, typ: "JWT" });
      expectError(await getSelf(`${header}.${body}.`, account.id), 401, "UNAUTHORIZED");
      expectError(await getSelf(`${header}.${body}`, account.id), 401, "UNAUTHORIZED");
    }
    const noAlg = b64url({ typ: "JWT" });
    expectError(await getSelf(`${noAlg}.${body}.`, account.id), 401, "UNAUTHORIZED");
    for (const alg of ["HS384", "HS512"] as const) {
      const token = await sign(claims(org.orgId, account.id), JWT_SECRET, alg);
      expectError(await getSelf(token, account.id), 401, "UNAUTHORIZED");
    }
  });

  it("expired tokens and tokens without exp are 401", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const now = Math.floor(Date.now() / 1000);
    const expired = await sign(claims(org.orgId, account.id, { iat: now - 7200, exp: now - 60 }), JWT_SECRET, "HS256");
    expectError(await getSelf(expired, account.id), 401, "UNAUTHORIZED");
    const justExpired = await sign(claims(org.orgId, account.id, { iat: now - 10, exp: now - 1 }), JWT_SECRET, "HS256");
    expectError(await getSelf(justExpired, account.id), 401, "UNAUTHORIZED");
    const noExp = await sign(claims(org.orgId, account.id, { exp: undefined }), JWT_SECRET, "HS256");
    expectError(await getSelf(noExp, account.id), 401, "UNAUTHORIZED");
    const stringExp = await sign(claims(org.orgId, account.id, { exp: String(now + 600) }), JWT_SECRET, "HS256");
    expectError(await getSelf(stringExp, account.id), 401, "UNAUTHORIZED");
  });

  it("tokens with a wrong or missing aud or iss are 401", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const variants: Record<string, unknown>[] = [
      { aud: "other-api" },
      { aud: undefined },
      { aud: ["other-api"] },
      { iss: "someone-else" },
      { iss: undefined },
      { iss: "Parley" },
    ];
    for (const overrides of variants) {
      const token = await sign(claims(org.orgId, account.id, overrides), JWT_SECRET, "HS256");
      expectError(await getSelf(token, account.id), 401, "UNAUTHORIZED");
    }
  });

  it("tokens with a wrong type, or missing org or sub, are 401", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const variants: Record<string, unknown>[] = [
      { typ: "admin" },
      { typ: undefined },
      { typ: "session" }, // a session token needs a conversation
      { org: undefined },
      { sub: undefined },
      { sub: 42 },
    ];
    for (const overrides of variants) {
      const token = await sign(claims(org.orgId, account.id, overrides), JWT_SECRET, "HS256");
      expectError(await getSelf(token, account.id), 401, "UNAUTHORIZED");
    }
  });

  it("a correctly signed token naming an account of another org is 401", async () => {
    const mine = await createOrg("Mine");
    const theirs = await createOrg("Theirs");
    const foreign = await createAccount(theirs.apiKey, { type: "user", name: "Foreign" });
    // Claims the foreign account belongs to my org.
    const token = await sign(claims(mine.orgId, foreign.id), JWT_SECRET, "HS256");
    expectError(await getSelf(token, foreign.id), 401, "UNAUTHORIZED");
    // An unknown account too.
    const ghost = await sign(claims(mine.orgId, "acc_0123456789abcdefghjkmnpqrs"), JWT_SECRET, "HS256");
    expectError(await getSelf(ghost, "acc_0123456789abcdefghjkmnpqrs"), 401, "UNAUTHORIZED");
  });

  it("an account token is 403 on API-key-only routes", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const token = await accountToken(org.apiKey, account.id);
    const cases: [string, string, unknown?][] = [
      ["POST", "/v1/accounts", { type: "user", name: "Sneaky" }],
      ["GET", "/v1/accounts"],
      ["PATCH", `/v1/accounts/${account.id}`, { name: "Renamed" }],
      ["DELETE", `/v1/accounts/${account.id}`],
      ["POST", "/v1/api-keys", {}],
      ["GET", "/v1/api-keys"],
      ["DELETE", "/v1/api-keys/key_0123456789abcdef"],
      ["POST", "/v1/tokens", { accountId: account.id }],
    ];
    for (const [method, path, body] of cases) {
      expectError(await call(method, path, { token, body }), 403, "FORBIDDEN");
    }
    // Nothing changed, and no key was minted.
    const after = await call("GET", `/v1/accounts/${account.id}`, { token: org.apiKey });
    expect(after.body.name).toBe(account.name);
    const accounts = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(accounts.body.items.map((a: any) => a.id)).toEqual([account.id]);
    const { results } = await env.DB.prepare("SELECT id FROM api_keys WHERE org_id = ?").bind(org.orgId).all();
    expect(results.length).toBe(1);
  });

  it("a token for a deleted account is 401", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const token = await accountToken(org.apiKey, account.id);
    expect((await getSelf(token, account.id)).status).toBe(200);
    const deleted = await call("DELETE", `/v1/accounts/${account.id}`, { token: org.apiKey });
    expect(deleted.status).toBe(204);
    expectError(await getSelf(token, account.id), 401, "UNAUTHORIZED");
    expectError(await call("GET", "/v1/rooms", { token }), 401, "UNAUTHORIZED");
    // And no new token can be issued for it.
    const again = await call("POST", "/v1/tokens", { token: org.apiKey, body: { accountId: account.id } });
    expect([400, 404]).toContain(again.status);
  });

  it("the Authorization header must be a Bearer token", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const token = await accountToken(org.apiKey, account.id);
    for (const authorization of [token, `Token ${token}`, "Bearer", "Bearer ", `Bearer ${token} extra`]) {
      const response = await call("GET", `/v1/accounts/${account.id}`, { headers: { authorization } });
      expectError(response, 401, "UNAUTHORIZED");
    }
    const lower = await call("GET", `/v1/accounts/${account.id}`, { headers: { authorization: `bearer ${token}` } });
    expect(lower.status).toBe(200);
  });

  it("?token= is not accepted outside WebSocket upgrades", async () => {
    const org = await createOrg();
    const response = await call("GET", `/v1/accounts?token=${encodeURIComponent(org.apiKey)}`);
    expectError(response, 401, "UNAUTHORIZED");
  });
});
