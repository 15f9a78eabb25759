import { describe, expect, it } from "vitest";
import { accountToken, call, createAccount, createOrg, expectError } from "../helpers/api";
import { closedWithin, openHub, openRoom, subscribe } from "../helpers/realtime";

const ACCOUNT_KEYS = ["agent", "createdAt", "email", "id", "meta", "name", "orgId", "type"];

/** Asserts a 400 whose details include a path equal to, or under, `path`. */
function expectInvalid(response: { status: number; body: any }, path: string) {
  expectError(response, 400, "BAD_REQUEST");
  const paths: string[] = (response.body.error.details ?? []).map((d: any) => d.path);
  expect(
    paths.some((p) => p === path || p.startsWith(`${path}.`)),
    `${path} not in ${JSON.stringify(paths)}`,
  ).toBe(true);
}

/** Every page of `GET /v1/accounts` with this query, following nextCursor. */
async function listAll(apiKey: string, query: string) {
  const pages: any[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 50; i++) {
    const sep = query ? "&" : "";
    const path = `/v1/accounts?${query}${cursor ? `${sep}cursor=${encodeURIComponent(cursor)}` : ""}`;
    const response = await call("GET", path, { token: apiKey });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    pages.push(response.body);
    cursor = response.body.nextCursor;
    if (!cursor) break;
  }
  return pages;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("POST /v1/accounts", () => {
  it("creates a user with the contract's Account shape", async () => {
    const org = await createOrg();
    const before = Date.now();
    const response = await call("POST", "/v1/accounts", {
      token: org.apiKey,
      body: { type: "user", name: "Ada Lovelace", email: "ada@example.com", meta: { plan: "pro", seats: 3 } },
    });
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    const account = response.body;
    expect(Object.keys(account).sort()).toEqual(expect.arrayContaining(ACCOUNT_KEYS));
    expect(account.id).toMatch(/^acc_[0-9a-z]+$/);
    expect(account).toMatchObject({
      orgId: org.orgId,
      type: "user",
      name: "Ada Lovelace",
      email: "ada@example.com",
      meta: { plan: "pro", seats: 3 },
      agent: null,
    });
    expect(new Date(account.createdAt).toISOString()).toBe(account.createdAt);
    expect(Date.parse(account.createdAt)).toBeGreaterThanOrEqual(before - 5_000);

    const fetched = await call("GET", `/v1/accounts/${account.id}`, { token: org.apiKey });
    expect(fetched.status).toBe(200);
    expect(fetched.body).toEqual(account);
  });

  it("defaults email to null and meta to {}", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey, { type: "user", name: "Bare" });
    expect(account.email).toBeNull();
    expect(account.meta).toEqual({});
    expect(account.agent).toBeNull();
    const explicitNull = await createAccount(org.apiKey, { type: "user", name: "Null mail", email: null });
    expect(explicitNull.email).toBeNull();
  });

  it("creates an agent and stores its settings", async () => {
    const org = await createOrg();
    const agent = {
      instructions: "Be brief.",
      model: "openai:gpt-4o-mini",
      flow: {
        onStart: [{ type: "reply", text: "Hello! How can I help?" }],
        onMessage: [
          { type: "webhook", url: "https://hooks.example.com/parley?x=1" },
          { type: "assistant", instructions: "Answer in French.", model: "workers-ai:@cf/meta/llama-3.1-8b-instruct" },
          { type: "assistant" },
        ],
      },
    };
    const created = await createAccount(org.apiKey, { type: "agent", name: "Helper", agent });
    expect(created.type).toBe("agent");
    expect(created.agent).toEqual(agent);
    const fetched = await call("GET", `/v1/accounts/${created.id}`, { token: org.apiKey });
    expect(fetched.body.agent).toEqual(agent);
  });

  it("accepts an agent without settings, and each provider", async () => {
    const org = await createOrg();
    const bare = await createAccount(org.apiKey, { type: "agent", name: "Bare bot" });
    expect(bare.type).toBe("agent");
    expect(bare.agent).not.toBeUndefined();
    for (const model of ["local:echo", "openai:gpt-4o-mini", "workers-ai:@cf/meta/llama-3.1-8b-instruct"]) {
      const account = await createAccount(org.apiKey, { type: "agent", name: model, agent: { model } });
      expect(account.agent.model).toBe(model);
    }
    const httpHook = await createAccount(org.apiKey, {
      type: "agent",
      name: "Hooked",
      agent: { flow: { onMessage: [{ type: "webhook", url: "http://127.0.0.1:9999/hook" }] } },
    });
    expect(httpHook.agent.flow.onMessage[0].url).toBe("http://127.0.0.1:9999/hook");
  });

  it("rejects models that are not provider:model with a known provider", async () => {
    const org = await createOrg();
    for (const model of [
      "gpt-4o-mini",
      "anthropic:claude-3",
      "local:",
      ":echo",
      "openai:gpt 4o",
      "OpenAI:gpt-4o",
      "local",
      "",
      42,
    ]) {
      const response = await call("POST", "/v1/accounts", {
        token: org.apiKey,
        body: { type: "agent", name: "Bot", agent: { model } },
      });
      expectInvalid(response, "agent.model");
    }
    // A step's model is validated the same way.
    const stepModel = await call("POST", "/v1/accounts", {
      token: org.apiKey,
      body: { type: "agent", name: "Bot", agent: { flow: { onMessage: [{ type: "assistant", model: "gpt-4" }] } } },
    });
    expectInvalid(stepModel, "agent.flow.onMessage.0");
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items).toEqual([]);
  });

  it("validates flow steps", async () => {
    const org = await createOrg();
    const badFlows: unknown[] = [
      { onMessage: [{ type: "reply" }] },
      { onMessage: [{ type: "reply", text: "" }] },
      { onMessage: [{ type: "reply", text: 42 }] },
      { onMessage: [{ type: "sleep", seconds: 3 }] },
      { onMessage: [{ text: "no type" }] },
      { onMessage: [{ type: "reply", text: "hi", extra: true }] },
      { onMessage: [{ type: "webhook" }] },
      { onMessage: [{ type: "webhook", url: "not a url" }] },
      { onMessage: [{ type: "webhook", url: "ftp://example.com/hook" }] },
      { onMessage: [{ type: "webhook", url: "javascript:alert(1)" }] },
      { onMessage: [{ type: "webhook", url: "file:///etc/passwd" }] },
      { onMessage: [{ type: "webhook", url: "data:text/plain,hi" }] },
      { onMessage: [{ type: "webhook", url: "ws://example.com/hook" }] },
      { onStart: [{ type: "assistant", instructions: 5 }] },
      { onStart: { type: "reply", text: "not a list" } },
      { onEnd: [{ type: "reply", text: "unknown list" }] },
      { onMessage: Array.from({ length: 21 }, () => ({ type: "assistant" })) },
      "assistant",
    ];
    for (const flow of badFlows) {
      const response = await call("POST", "/v1/accounts", {
        token: org.apiKey,
        body: { type: "agent", name: "Bot", agent: { flow } },
      });
      expect(response.status, JSON.stringify(flow)).toBe(400);
      expectInvalid(response, "agent.flow");
    }
    const unknownSetting = await call("POST", "/v1/accounts", {
      token: org.apiKey,
      body: { type: "agent", name: "Bot", agent: { temperature: 2 } },
    });
    expectInvalid(unknownSetting, "agent");
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items).toEqual([]);
  });

  it("`agent` on a user is 400", async () => {
    const org = await createOrg();
    for (const agent of [{}, { model: "local:echo" }, { flow: { onMessage: [{ type: "assistant" }] } }]) {
      const response = await call("POST", "/v1/accounts", {
        token: org.apiKey,
        body: { type: "user", name: "U", agent },
      });
      expectInvalid(response, "agent");
    }
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items).toEqual([]);
  });

  it("validates type and name", async () => {
    const org = await createOrg();
    expectInvalid(await call("POST", "/v1/accounts", { token: org.apiKey, body: { name: "No type" } }), "type");
    expectInvalid(
      await call("POST", "/v1/accounts", { token: org.apiKey, body: { type: "bot", name: "Bad type" } }),
      "type",
    );
    expectInvalid(await call("POST", "/v1/accounts", { token: org.apiKey, body: { type: "user" } }), "name");
    expectInvalid(await call("POST", "/v1/accounts", { token: org.apiKey, body: { type: "user", name: "" } }), "name");
    expectInvalid(
      await call("POST", "/v1/accounts", { token: org.apiKey, body: { type: "user", name: "x".repeat(201) } }),
      "name",
    );
    expectInvalid(await call("POST", "/v1/accounts", { token: org.apiKey, body: { type: "user", name: 7 } }), "name");
  });

  it("validates email", async () => {
    const org = await createOrg();
    for (const email of [
      "not-an-email",
      "a@",
      "@example.com",
      "a b@example.com",
      "ada@@example.com",
      `${"a".repeat(320)}@example.com`,
      42,
      "",
    ]) {
      const response = await call("POST", "/v1/accounts", {
        token: org.apiKey,
        body: { type: "user", name: "E", email },
      });
      expectInvalid(response, "email");
    }
    for (const email of ["ada@example.com", "first.last+tag@sub.example.co.uk"]) {
      const account = await createAccount(org.apiKey, { type: "user", name: "E", email });
      expect(account.email).toBe(email);
    }
  });

  it("limits meta to a JSON object of at most 16 KiB", async () => {
    const org = await createOrg();
    // `{"blob":""}` is 11 bytes.
    const exact = { blob: "x".repeat(16 * 1024 - 11) };
    const ok = await createAccount(org.apiKey, { type: "user", name: "Exact", meta: exact });
    expect(ok.meta).toEqual(exact);

    const over = await call("POST", "/v1/accounts", {
      token: org.apiKey,
      body: { type: "user", name: "Over", meta: { blob: "x".repeat(16 * 1024 - 10) } },
    });
    expectInvalid(over, "meta");
    // The limit is in bytes, not characters: 8,200 two-byte characters are over 16 KiB.
    const wide = await call("POST", "/v1/accounts", {
      token: org.apiKey,
      body: { type: "user", name: "Wide", meta: { blob: "é".repeat(8200) } },
    });
    expectInvalid(wide, "meta");
    for (const meta of [[1, 2], "meta", 5, null]) {
      const response = await call("POST", "/v1/accounts", {
        token: org.apiKey,
        body: { type: "user", name: "M", meta },
      });
      expectInvalid(response, "meta");
    }
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items.map((a: any) => a.id)).toEqual([ok.id]);
  });
});

describe("GET /v1/accounts", () => {
  it("lists the org's accounts in the list envelope, filtered by ?type=", async () => {
    const org = await createOrg();
    const u1 = await createAccount(org.apiKey, { type: "user", name: "U1" });
    const a1 = await createAccount(org.apiKey, { type: "agent", name: "A1" });
    const u2 = await createAccount(org.apiKey, { type: "user", name: "U2" });

    const all = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(all.status).toBe(200);
    expect(Object.keys(all.body).sort()).toEqual(["items", "nextCursor"]);
    expect(all.body.nextCursor).toBeNull();
    expect(all.body.items.map((a: any) => a.id).sort()).toEqual([u1.id, a1.id, u2.id].sort());
    for (const item of all.body.items) expect(Object.keys(item)).toEqual(expect.arrayContaining(ACCOUNT_KEYS));

    const users = await call("GET", "/v1/accounts?type=user", { token: org.apiKey });
    expect(users.body.items.map((a: any) => a.id).sort()).toEqual([u1.id, u2.id].sort());
    expect(users.body.items.every((a: any) => a.type === "user")).toBe(true);

    const agents = await call("GET", "/v1/accounts?type=agent", { token: org.apiKey });
    expect(agents.body.items.map((a: any) => a.id)).toEqual([a1.id]);

    expectInvalid(await call("GET", "/v1/accounts?type=robot", { token: org.apiKey }), "type");
  });

  it("lists newest first", async () => {
    const org = await createOrg();
    const ids: string[] = [];
    for (const name of ["first", "second", "third"]) {
      ids.push((await createAccount(org.apiKey, { type: "user", name })).id);
      await sleep(5);
    }
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items.map((a: any) => a.id)).toEqual([...ids].reverse());
  });

  it("pages with limit and cursor, without gaps or duplicates", async () => {
    const org = await createOrg();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await createAccount(org.apiKey, { type: "user", name: `U${i}` })).id);

    const pages = await listAll(org.apiKey, "limit=3");
    expect(pages.map((p) => p.items.length)).toEqual([3, 3, 1]);
    expect(pages[0].nextCursor).toEqual(expect.any(String));
    expect(pages[1].nextCursor).toEqual(expect.any(String));
    expect(pages[2].nextCursor).toBeNull();
    const seen = pages.flatMap((p) => p.items.map((a: any) => a.id));
    expect(seen).toHaveLength(7);
    expect(new Set(seen).size).toBe(7);
    expect([...seen].sort()).toEqual([...ids].sort());

    // An exact multiple ends with a null cursor and no empty extra page.
    const exact = await listAll(org.apiKey, "limit=7");
    expect(exact.map((p) => p.items.length)).toEqual([7]);
    expect(exact[0].nextCursor).toBeNull();

    const one = await listAll(org.apiKey, "limit=1");
    expect(one).toHaveLength(7);
    expect(one.flatMap((p) => p.items.map((a: any) => a.id))).toEqual(seen);
  });

  it("pages a type-filtered list", async () => {
    const org = await createOrg();
    const agents: string[] = [];
    for (let i = 0; i < 5; i++) {
      await createAccount(org.apiKey, { type: "user", name: `U${i}` });
      agents.push((await createAccount(org.apiKey, { type: "agent", name: `A${i}` })).id);
    }
    const pages = await listAll(org.apiKey, "type=agent&limit=2");
    expect(pages.map((p) => p.items.length)).toEqual([2, 2, 1]);
    const seen = pages.flatMap((p) => p.items.map((a: any) => a.id));
    expect([...seen].sort()).toEqual([...agents].sort());
    expect(pages.flatMap((p) => p.items).every((a: any) => a.type === "agent")).toBe(true);
  });

  it("defaults to 20 items a page and allows up to 100", async () => {
    const org = await createOrg();
    for (let i = 0; i < 22; i++) await createAccount(org.apiKey, { type: "user", name: `U${i}` });
    const first = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(first.body.items).toHaveLength(20);
    expect(first.body.nextCursor).toEqual(expect.any(String));
    const rest = await call("GET", `/v1/accounts?cursor=${encodeURIComponent(first.body.nextCursor)}`, {
      token: org.apiKey,
    });
    expect(rest.body.items).toHaveLength(2);
    expect(rest.body.nextCursor).toBeNull();
    const max = await call("GET", "/v1/accounts?limit=100", { token: org.apiKey });
    expect(max.status).toBe(200);
    expect(max.body.items).toHaveLength(22);
    expect(max.body.nextCursor).toBeNull();
  });

  it("a limit outside 1..100 or not an integer is 400", async () => {
    const org = await createOrg();
    await createAccount(org.apiKey);
    for (const limit of ["0", "101", "-1", "1.5", "abc", "", "1e3"]) {
      const response = await call("GET", `/v1/accounts?limit=${encodeURIComponent(limit)}`, { token: org.apiKey });
      expectInvalid(response, "limit");
    }
    const one = await call("GET", "/v1/accounts?limit=1", { token: org.apiKey });
    expect(one.status).toBe(200);
    expect(one.body.items).toHaveLength(1);
  });

  it("a cursor that is not a nextCursor is 400", async () => {
    const org = await createOrg();
    await createAccount(org.apiKey);
    for (const cursor of ["garbage!!", "bm90LWpzb24", btoa(JSON.stringify({ a: 1 })), btoa("[1,2]"), "x".repeat(600)]) {
      const response = await call("GET", `/v1/accounts?cursor=${encodeURIComponent(cursor)}`, { token: org.apiKey });
      expectInvalid(response, "cursor");
    }
  });

  it("a nextCursor of another list is 400, not a page of this one", async () => {
    const org = await createOrg();
    for (const name of ["A", "B"]) await createAccount(org.apiKey, { type: "user", name });
    const accountsCursor = (await call("GET", "/v1/accounts?limit=1", { token: org.apiKey })).body.nextCursor;
    expect(typeof accountsCursor).toBe("string");
    for (const path of ["/v1/rooms", "/v1/conversations", "/v1/api-keys", "/v1/notification-rules", "/v1/flow-runs"]) {
      const response = await call("GET", `${path}?cursor=${accountsCursor}`, { token: org.apiKey });
      expectInvalid(response, "cursor");
    }
    for (const name of ["R1", "R2"])
      await call("POST", "/v1/rooms", { token: org.apiKey, body: { type: "standard", name } });
    const roomsCursor = (await call("GET", "/v1/rooms?limit=1", { token: org.apiKey })).body.nextCursor;
    expect(typeof roomsCursor).toBe("string");
    expectInvalid(await call("GET", `/v1/accounts?cursor=${roomsCursor}`, { token: org.apiKey }), "cursor");
    const next = await call("GET", `/v1/rooms?limit=1&cursor=${roomsCursor}`, { token: org.apiKey });
    expect(next.status).toBe(200);
    expect(next.body.items).toHaveLength(1);
  });

  it("never shows another org's accounts", async () => {
    const mine = await createOrg("Mine");
    const theirs = await createOrg("Theirs");
    const own = await createAccount(mine.apiKey, { type: "user", name: "Own" });
    const foreignUser = await createAccount(theirs.apiKey, { type: "user", name: "Foreign" });
    const foreignAgent = await createAccount(theirs.apiKey, { type: "agent", name: "Foreign bot" });
    for (const query of ["", "?type=user", "?type=agent", "?limit=100"]) {
      const list = await call("GET", `/v1/accounts${query}`, { token: mine.apiKey });
      const ids = list.body.items.map((a: any) => a.id);
      expect(ids).not.toContain(foreignUser.id);
      expect(ids).not.toContain(foreignAgent.id);
      expect(list.body.items.every((a: any) => a.orgId === mine.orgId)).toBe(true);
    }
    const mineList = await call("GET", "/v1/accounts", { token: mine.apiKey });
    expect(mineList.body.items.map((a: any) => a.id)).toEqual([own.id]);

    // A cursor pointing past the other org's ids does not reveal them either.
    await createAccount(mine.apiKey, { type: "user", name: "Own 2" });
    const pages = await listAll(mine.apiKey, "limit=1");
    expect(pages.flatMap((p) => p.items.map((a: any) => a.orgId))).toEqual([mine.orgId, mine.orgId]);
  });
});

describe("GET /v1/accounts/{id}", () => {
  it("is 404 for an unknown id", async () => {
    const org = await createOrg();
    const response = await call("GET", "/v1/accounts/acc_0123456789abcdefghjkmnpqrs", { token: org.apiKey });
    expectError(response, 404, "NOT_FOUND");
  });

  it("an account token may get only its own account", async () => {
    const org = await createOrg();
    const ada = await createAccount(org.apiKey, { type: "user", name: "Ada", email: "ada@example.com" });
    const bob = await createAccount(org.apiKey, { type: "user", name: "Bob" });
    const bot = await createAccount(org.apiKey, { type: "agent", name: "Bot" });
    const token = await accountToken(org.apiKey, ada.id);

    const own = await call("GET", `/v1/accounts/${ada.id}`, { token });
    expect(own.status).toBe(200);
    expect(own.body).toEqual(ada);

    for (const other of [bob.id, bot.id, "acc_0123456789abcdefghjkmnpqrs"]) {
      expectError(await call("GET", `/v1/accounts/${other}`, { token }), 404, "NOT_FOUND");
    }
    // An existing account and an unknown one answer alike.
    const existing = await call("GET", `/v1/accounts/${bob.id}`, { token });
    const unknown = await call("GET", "/v1/accounts/acc_0123456789abcdefghjkmnpqrs", { token });
    expect(existing.body.error.message).toBe(unknown.body.error.message);

    // The account token cannot list, change or delete.
    expectError(await call("GET", "/v1/accounts", { token }), 403, "FORBIDDEN");
    expectError(await call("PATCH", `/v1/accounts/${ada.id}`, { token, body: { name: "Me" } }), 403, "FORBIDDEN");
    expectError(await call("DELETE", `/v1/accounts/${bob.id}`, { token }), 403, "FORBIDDEN");
    expect((await call("GET", `/v1/accounts/${bob.id}`, { token: org.apiKey })).status).toBe(200);
  });

  it("an account token of another org gets 404 for this org's accounts", async () => {
    const mine = await createOrg("Mine");
    const theirs = await createOrg("Theirs");
    const target = await createAccount(mine.apiKey, { type: "user", name: "Target" });
    const outsider = await createAccount(theirs.apiKey, { type: "user", name: "Outsider" });
    const token = await accountToken(theirs.apiKey, outsider.id);
    expectError(await call("GET", `/v1/accounts/${target.id}`, { token }), 404, "NOT_FOUND");
  });
});

describe("PATCH /v1/accounts/{id}", () => {
  it("changes name, email and meta, leaving the rest", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey, {
      type: "user",
      name: "Ada",
      email: "ada@example.com",
      meta: { a: 1 },
    });

    const renamed = await call("PATCH", `/v1/accounts/${account.id}`, { token: org.apiKey, body: { name: "Ada L." } });
    expect(renamed.status, JSON.stringify(renamed.body)).toBe(200);
    expect(renamed.body).toMatchObject({
      id: account.id,
      orgId: org.orgId,
      type: "user",
      name: "Ada L.",
      email: "ada@example.com",
      meta: { a: 1 },
      agent: null,
      createdAt: account.createdAt,
    });

    const changed = await call("PATCH", `/v1/accounts/${account.id}`, {
      token: org.apiKey,
      body: { email: "lovelace@example.com", meta: { b: 2 } },
    });
    expect(changed.status).toBe(200);
    expect(changed.body.email).toBe("lovelace@example.com");
    expect(changed.body.meta).toEqual({ b: 2 });
    expect(changed.body.name).toBe("Ada L.");

    const cleared = await call("PATCH", `/v1/accounts/${account.id}`, { token: org.apiKey, body: { email: null } });
    expect(cleared.status).toBe(200);
    expect(cleared.body.email).toBeNull();

    const fetched = await call("GET", `/v1/accounts/${account.id}`, { token: org.apiKey });
    expect(fetched.body).toEqual(cleared.body);
  });

  it("changes an agent's settings, validated like on create", async () => {
    const org = await createOrg();
    const agent = await createAccount(org.apiKey, { type: "agent", name: "Bot", agent: { model: "local:echo" } });
    const settings = {
      model: "openai:gpt-4o-mini",
      flow: {
        onMessage: [
          { type: "reply", text: "Got it" },
          { type: "webhook", url: "https://example.com/h" },
        ],
      },
    };
    const updated = await call("PATCH", `/v1/accounts/${agent.id}`, { token: org.apiKey, body: { agent: settings } });
    expect(updated.status, JSON.stringify(updated.body)).toBe(200);
    expect(updated.body.agent).toEqual(settings);
    expect((await call("GET", `/v1/accounts/${agent.id}`, { token: org.apiKey })).body.agent).toEqual(settings);

    for (const bad of [
      { model: "gpt-4" },
      { flow: { onMessage: [{ type: "webhook", url: "ftp://example.com" }] } },
      { flow: { onMessage: [{ type: "reply" }] } },
      { flow: { onMessage: [{ type: "teleport" }] } },
    ]) {
      const response = await call("PATCH", `/v1/accounts/${agent.id}`, { token: org.apiKey, body: { agent: bad } });
      expectInvalid(response, "agent");
    }
    expect((await call("GET", `/v1/accounts/${agent.id}`, { token: org.apiKey })).body.agent).toEqual(settings);

    // The keys given replace those settings, the others stay; null removes one (back to its default).
    const instructed = await call("PATCH", `/v1/accounts/${agent.id}`, {
      token: org.apiKey,
      body: { agent: { instructions: "Be brief." } },
    });
    expect(instructed.body.agent).toEqual({ ...settings, instructions: "Be brief." });
    const reset = await call("PATCH", `/v1/accounts/${agent.id}`, {
      token: org.apiKey,
      body: { agent: { flow: null, instructions: null } },
    });
    expect(reset.body.agent).toEqual({ model: settings.model });
    expect((await call("GET", `/v1/accounts/${agent.id}`, { token: org.apiKey })).body.agent).toEqual({
      model: settings.model,
    });
  });

  it("validates the patch: agent on a user, bad email, big meta, empty name, unknown fields", async () => {
    const org = await createOrg();
    const user = await createAccount(org.apiKey, { type: "user", name: "Ada", email: "ada@example.com" });
    const cases: [unknown, string][] = [
      [{ agent: { model: "local:echo" } }, "agent"],
      [{ email: "nope" }, "email"],
      [{ meta: { blob: "x".repeat(16 * 1024) } }, "meta"],
      [{ meta: [1] }, "meta"],
      [{ name: "" }, "name"],
      [{ name: "x".repeat(201) }, "name"],
    ];
    for (const [body, path] of cases) {
      const response = await call("PATCH", `/v1/accounts/${user.id}`, { token: org.apiKey, body });
      expectInvalid(response, path);
    }
    const unknownField = await call("PATCH", `/v1/accounts/${user.id}`, {
      token: org.apiKey,
      body: { nickname: "A" },
    });
    expectError(unknownField, 400, "BAD_REQUEST");
    const after = await call("GET", `/v1/accounts/${user.id}`, { token: org.apiKey });
    expect(after.body).toEqual(user);
  });

  it("is 404 for an unknown id", async () => {
    const org = await createOrg();
    const response = await call("PATCH", "/v1/accounts/acc_0123456789abcdefghjkmnpqrs", {
      token: org.apiKey,
      body: { name: "X" },
    });
    expectError(response, 404, "NOT_FOUND");
  });
});

describe("DELETE /v1/accounts/{id}", () => {
  it("deletes the account: 204, then 404, and gone from lists", async () => {
    const org = await createOrg();
    const keep = await createAccount(org.apiKey, { type: "user", name: "Keep" });
    const gone = await createAccount(org.apiKey, { type: "agent", name: "Gone" });
    const response = await call("DELETE", `/v1/accounts/${gone.id}`, { token: org.apiKey });
    expect(response.status).toBe(204);
    expect(response.body).toBeNull();
    expectError(await call("GET", `/v1/accounts/${gone.id}`, { token: org.apiKey }), 404, "NOT_FOUND");
    expectError(
      await call("PATCH", `/v1/accounts/${gone.id}`, { token: org.apiKey, body: { name: "Back" } }),
      404,
      "NOT_FOUND",
    );
    expectError(await call("DELETE", `/v1/accounts/${gone.id}`, { token: org.apiKey }), 404, "NOT_FOUND");
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items.map((a: any) => a.id)).toEqual([keep.id]);
    const agents = await call("GET", "/v1/accounts?type=agent", { token: org.apiKey });
    expect(agents.body.items).toEqual([]);
  });

  it("takes the account out of its standard rooms and keeps it in its DMs as a deleted observer: nobody posts as it or opens a session for it", async () => {
    const org = await createOrg();
    const stay = await createAccount(org.apiKey, { type: "user", name: "Stay" });
    const other = await createAccount(org.apiKey, { type: "user", name: "Other" });
    const gone = await createAccount(org.apiKey, { type: "user", name: "Gone" });
    const room = await call("POST", "/v1/rooms", {
      token: org.apiKey,
      body: { type: "standard", participants: [{ accountId: stay.id }, { accountId: gone.id }] },
    });
    const dm = await call("POST", "/v1/rooms", {
      token: org.apiKey,
      body: { type: "dm", participants: [{ accountId: stay.id }, { accountId: gone.id }] },
    });
    const elsewhere = await call("POST", "/v1/rooms", {
      token: org.apiKey,
      body: { type: "standard", participants: [{ accountId: stay.id }, { accountId: other.id }] },
    });
    const conversations = [];
    for (const r of [room, dm]) {
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const created = await call("POST", `/v1/rooms/${r.body.id}/conversations`, { token: org.apiKey, body: {} });
      expect(created.status).toBe(201);
      conversations.push(created.body.id as string);
    }
    const posted = await call("POST", `/v1/conversations/${conversations[0]}/messages`, {
      token: org.apiKey,
      body: { text: "before", authorId: gone.id },
    });
    expect(posted.status).toBe(201);
    // Its sockets, on the org stream and in a room, close when it is deleted.
    const token = await accountToken(org.apiKey, gone.id);
    const [hub, roomSocket] = await Promise.all([openHub(token), openRoom(room.body.id, token)]);
    for (const socket of [hub, roomSocket]) await subscribe(socket, `events.${org.orgId}.>`);

    expect((await call("DELETE", `/v1/accounts/${gone.id}`, { token: org.apiKey })).status).toBe(204);
    expect(await closedWithin(hub)).toMatchObject({ code: 4001 });
    expect(await closedWithin(roomSocket)).toMatchObject({ code: 4003 });

    const standard = await call("GET", `/v1/rooms/${room.body.id}`, { token: org.apiKey });
    expect(standard.body.participants.map((p: any) => p.accountId)).toEqual([stay.id]);
    // A DM's membership never changes: the same set still names it, and the account stays, as an observer.
    const kept = await call("GET", `/v1/rooms/${dm.body.id}`, { token: org.apiKey });
    const roles = Object.fromEntries(kept.body.participants.map((p: any) => [p.accountId, [p.role, p.autoRespond]]));
    expect(roles).toEqual({ [stay.id]: ["member", false], [gone.id]: ["observer", false] });
    const untouched = await call("GET", `/v1/rooms/${elsewhere.body.id}`, { token: org.apiKey });
    expect(untouched.body.participants).toHaveLength(2);
    const rooms = await call("GET", `/v1/rooms?accountId=${gone.id}`, { token: org.apiKey });
    expect(rooms.body.items.map((r: any) => r.id)).toEqual([dm.body.id]);
    const dms = await call("GET", `/v1/rooms?accountId=${stay.id}&type=dm`, { token: org.apiKey });
    expect(dms.body.items.map((r: any) => r.id)).toEqual([dm.body.id]);
    // Its place in the DM no longer changes.
    const promote = await call("PATCH", `/v1/rooms/${dm.body.id}/participants/${gone.id}`, {
      token: org.apiKey,
      body: { role: "member" },
    });
    expectError(promote, 409, "CONFLICT");
    expectError(
      await call("DELETE", `/v1/rooms/${dm.body.id}/participants/${gone.id}`, { token: org.apiKey }),
      409,
      "ROOM_IMMUTABLE",
    );
    for (const conversationId of conversations) {
      const ghost = await call("POST", `/v1/conversations/${conversationId}/messages`, {
        token: org.apiKey,
        body: { text: "ghost", authorId: gone.id },
      });
      expectError(ghost, 403, "FORBIDDEN");
      const session = await call("POST", `/v1/conversations/${conversationId}/sessions`, {
        token: org.apiKey,
        body: { accountId: gone.id },
      });
      expect(session.status, JSON.stringify(session.body)).toBeGreaterThanOrEqual(400);
      expect(session.status).toBeLessThan(500);
    }
    // What it posted stays in the history.
    const history = await call("GET", `/v1/conversations/${conversations[0]}/messages`, { token: org.apiKey });
    expect(history.body.items.map((m: any) => [m.text, m.authorId])).toEqual([["before", gone.id]]);
  });
});

describe("across orgs", () => {
  it("another org's API key gets 404 for GET, PATCH and DELETE and changes nothing", async () => {
    const mine = await createOrg("Mine");
    const theirs = await createOrg("Theirs");
    const account = await createAccount(mine.apiKey, {
      type: "agent",
      name: "Private bot",
      email: "bot@example.com",
      agent: { model: "local:echo" },
    });

    const unknownId = "acc_0123456789abcdefghjkmnpqrs";
    const get = await call("GET", `/v1/accounts/${account.id}`, { token: theirs.apiKey });
    expectError(get, 404, "NOT_FOUND");
    const getUnknown = await call("GET", `/v1/accounts/${unknownId}`, { token: theirs.apiKey });
    expect(get.body.error.message).toBe(getUnknown.body.error.message);

    expectError(
      await call("PATCH", `/v1/accounts/${account.id}`, {
        token: theirs.apiKey,
        body: { name: "Hijacked", agent: { model: "openai:evil" } },
      }),
      404,
      "NOT_FOUND",
    );
    expectError(await call("DELETE", `/v1/accounts/${account.id}`, { token: theirs.apiKey }), 404, "NOT_FOUND");

    const after = await call("GET", `/v1/accounts/${account.id}`, { token: mine.apiKey });
    expect(after.status).toBe(200);
    expect(after.body).toEqual(account);

    const theirList = await call("GET", "/v1/accounts?limit=100", { token: theirs.apiKey });
    expect(theirList.body.items).toEqual([]);
  });

  it("accounts created with one org's key belong to that org only", async () => {
    const a = await createOrg("A");
    const b = await createOrg("B");
    const inA = await createAccount(a.apiKey, { type: "user", name: "In A" });
    const inB = await createAccount(b.apiKey, { type: "user", name: "In B" });
    expect(inA.orgId).toBe(a.orgId);
    expect(inB.orgId).toBe(b.orgId);
    // orgId is not settable by the client.
    const forged = await call("POST", "/v1/accounts", {
      token: a.apiKey,
      body: { type: "user", name: "Forged", orgId: b.orgId },
    });
    expectError(forged, 400, "BAD_REQUEST");
    const bList = await call("GET", "/v1/accounts", { token: b.apiKey });
    expect(bList.body.items.map((x: any) => x.id)).toEqual([inB.id]);
  });
});
