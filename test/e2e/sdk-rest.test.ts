import { describe, expect, it } from "vitest";
import { ParleyClient, ParleyError, isParleyError, paginate, type Message } from "../../src/sdk";
import { adminClient, baseUrl, collect, createFixture, createOrg, expectParleyError, range } from "./helpers";

// The REST client of src/sdk against `npm run dev`, in Node: contract sections 1-6 as an application uses them.

describe("ParleyClient: credentials", () => {
  it("creates an org with the admin token, then works inside it with the API key", async () => {
    const { org, apiKey, client } = await createOrg("Initech");
    expect(org.id).toMatch(/^org_/);
    expect(org.name).toBe("Initech");
    expect(apiKey).toMatch(/^sk_/);
    const account = await client.accounts.create({ type: "user", name: "Peter" });
    expect(account.orgId).toBe(org.id);
  });

  it("creates, lists and revokes API keys; a revoked key is 401", async () => {
    const { client } = await createOrg();
    const created = await client.apiKeys.create({ name: "ci" });
    expect(created.apiKey).toMatch(/^sk_/);
    const listed = await collect(client.paginate(client.apiKeys.list, { limit: 1 }));
    expect(listed.map((key) => key.id)).toContain(created.id);
    expect(listed.length).toBe(2);
    expect(JSON.stringify(listed)).not.toContain("sk_");

    const other = client.withToken(created.apiKey);
    await other.accounts.list();
    await client.apiKeys.revoke(created.id);
    await expectParleyError(other.accounts.list(), 401, "UNAUTHORIZED");
  });

  it("issues account and session tokens that act as their account", async () => {
    const { client, alice, bob, room, conversation } = await createFixture();
    const { token, expiresAt } = await client.tokens.create({ accountId: alice.id, ttlSeconds: 600 });
    expect(Date.parse(expiresAt)).toBeGreaterThan(Date.now());
    const asAlice = client.withToken(token);
    expect((await asAlice.accounts.get(alice.id)).name).toBe("Alice");
    expect((await asAlice.rooms.list()).items.map((r) => r.id)).toEqual([room.id]);
    const posted = await asAlice.messages.post(conversation.id, { text: "as alice" });
    expect(posted.authorId).toBe(alice.id);

    const session = await client.sessions.create(conversation.id, { accountId: bob.id });
    const asBob = client.withToken(session.token);
    const reply = await asBob.messages.post(conversation.id, { text: "as bob" });
    expect(reply.authorId).toBe(bob.id);
    expect((await asBob.messages.list(conversation.id)).items.map((m) => m.text)).toEqual(["as alice", "as bob"]);
    await expectParleyError(asBob.rooms.list(), 403, "FORBIDDEN");
  });
});

describe("ParleyClient: accounts", () => {
  it("creates, reads, updates, lists with the paging iterator, and deletes accounts", async () => {
    const { client } = await createOrg();
    const names = ["A1", "A2", "A3", "A4", "A5"];
    for (const name of names) await client.accounts.create({ type: "user", name, meta: { n: name } });
    const agent = await client.accounts.create({ type: "agent", name: "Echo", agent: { model: "local:echo" } });
    expect(agent.agent).toMatchObject({ model: "local:echo" });

    const users = await collect(client.paginate(client.accounts.list, { type: "user", limit: 2 }));
    expect(users.map((a) => a.name).sort()).toEqual(names);
    const all = await collect(paginate(client.accounts.list, { limit: 4 }));
    expect(all).toHaveLength(6);

    const updated = await client.accounts.update(users[0].id, { name: "Renamed", email: "r@example.com" });
    expect(updated).toMatchObject({ name: "Renamed", email: "r@example.com" });
    expect(await client.accounts.get(users[0].id)).toEqual(updated);

    await client.accounts.delete(users[0].id);
    await expectParleyError(client.accounts.get(users[0].id), 404, "NOT_FOUND");
  });
});

describe("ParleyClient: rooms and participants", () => {
  it("creates a standard room and changes its name and participants", async () => {
    const { client, alice, bob, room } = await createFixture();
    expect(room.participants.map((p) => p.accountId).sort()).toEqual([alice.id, bob.id].sort());
    const carol = await client.accounts.create({ type: "user", name: "Carol" });

    const added = await client.participants.add(room.id, { accountId: carol.id, role: "observer" });
    expect(added).toMatchObject({ accountId: carol.id, role: "observer", autoRespond: false });
    const changed = await client.participants.update(room.id, carol.id, { role: "admin" });
    expect(changed.role).toBe("admin");
    await client.participants.remove(room.id, bob.id);
    const renamed = await client.rooms.update(room.id, { name: "Renamed", meta: { a: 1 } });
    expect(renamed.name).toBe("Renamed");

    const fetched = await client.rooms.get(room.id);
    expect(fetched.participants.map((p) => p.accountId).sort()).toEqual([alice.id, carol.id].sort());
    const byCarol = await collect(client.paginate(client.rooms.list, { accountId: carol.id }));
    expect(byCarol.map((r) => r.id)).toEqual([room.id]);
  });

  it("dedupes dms: the same participant set answers the same room, created once", async () => {
    const { client, alice, bob } = await createFixture();
    const first = await client.rooms.upsert({
      type: "dm",
      participants: [{ accountId: alice.id }, { accountId: bob.id }],
    });
    expect(first.created).toBe(true);
    const again = await client.rooms.upsert({
      type: "dm",
      participants: [{ accountId: bob.id }, { accountId: alice.id }, { accountId: bob.id }],
    });
    expect(again.created).toBe(false);
    expect(again.value.id).toBe(first.value.id);
    const concurrent = await Promise.all(
      range(1, 4).map(() =>
        client.rooms.create({ type: "dm", participants: [{ accountId: alice.id }, { accountId: bob.id }] }),
      ),
    );
    expect(new Set(concurrent.map((room) => room.id))).toEqual(new Set([first.value.id]));
    expect((await client.rooms.list({ type: "dm" })).items.map((r) => r.id)).toEqual([first.value.id]);

    const carol = await client.accounts.create({ type: "user", name: "Carol" });
    const immutable = await expectParleyError(
      client.participants.add(first.value.id, { accountId: carol.id }),
      409,
      "ROOM_IMMUTABLE",
    );
    expect(isParleyError(immutable, "ROOM_IMMUTABLE")).toBe(true);
  });
});

describe("ParleyClient: conversations and messages", () => {
  it("creates, lists, updates and deletes conversations", async () => {
    const { client, room, conversation } = await createFixture();
    expect(conversation).toMatchObject({ roomId: room.id, name: "Hello", messageCount: 0, lastMessageAt: null });
    const second = await client.conversations.create(room.id, { name: "Second", meta: { topic: "x" } });
    const listed = await collect(client.paginate(client.conversations.list, { roomId: room.id, limit: 1 }));
    expect(listed.map((c) => c.id).sort()).toEqual([conversation.id, second.id].sort());

    const updated = await client.conversations.update(second.id, { description: "about x" });
    expect(updated.description).toBe("about x");
    expect((await client.conversations.get(second.id)).description).toBe("about x");
    await client.conversations.delete(second.id);
    await expectParleyError(client.conversations.get(second.id), 404, "NOT_FOUND");
  });

  it("posts idempotently with clientMessageId: a retry answers the original and posts nothing", async () => {
    const { client, alice, conversation } = await createFixture();
    const body = { text: "exactly once", authorId: alice.id, clientMessageId: "retry-1" };
    const first = await client.messages.upsert(conversation.id, body);
    expect(first.created).toBe(true);
    expect(first.value).toMatchObject({ seq: 1, text: "exactly once", type: "user", clientMessageId: "retry-1" });
    const retries = await Promise.all(range(1, 3).map(() => client.messages.upsert(conversation.id, body)));
    for (const retry of retries) {
      expect(retry.created).toBe(false);
      expect(retry.value).toEqual(first.value);
    }
    expect(await client.messages.post(conversation.id, body)).toEqual(first.value);
    const history = await client.messages.list(conversation.id);
    expect(history).toEqual({ items: [first.value], hasMore: false });
  });

  it("walks history forward and backward with the paging iterator", async () => {
    const { client, alice, bob, conversation } = await createFixture();
    const posted: Message[] = [];
    for (const i of range(1, 23)) {
      posted.push(
        await client.messages.post(conversation.id, {
          text: `m${i}`,
          authorId: i % 2 ? alice.id : bob.id,
          ...(i === 5 ? { data: { kind: "card", n: 5 } } : {}),
        }),
      );
    }
    expect(posted.map((m) => m.seq)).toEqual(range(1, 23));

    const forward = await collect(client.messages.iterate(conversation.id, { pageSize: 5 }));
    expect(forward).toEqual(posted);
    const after = await collect(client.messages.iterate(conversation.id, { afterSeq: 20, pageSize: 2 }));
    expect(after.map((m) => m.seq)).toEqual([21, 22, 23]);
    const backward = await collect(client.messages.iterate(conversation.id, { direction: "backward", pageSize: 4 }));
    expect(backward.map((m) => m.seq)).toEqual(range(1, 23).reverse());
    const before = await collect(
      client.messages.iterate(conversation.id, { direction: "backward", beforeSeq: 4, pageSize: 2 }),
    );
    expect(before.map((m) => m.seq)).toEqual([3, 2, 1]);

    const latest = await client.messages.list(conversation.id, { limit: 3 });
    expect(latest.items.map((m) => m.seq)).toEqual([21, 22, 23]);
    expect(latest.hasMore).toBe(true);
    expect((await client.conversations.get(conversation.id)).messageCount).toBe(23);
  });
});

describe("ParleyClient: errors", () => {
  it("throws BAD_REQUEST with details for an invalid body", async () => {
    const { client, conversation } = await createFixture();
    const error = await expectParleyError(
      client.accounts.create({ type: "robot" as "user", name: "" }),
      400,
      "BAD_REQUEST",
    );
    expect(error.details?.map((d) => d.path)).toEqual(expect.arrayContaining(["type", "name"]));
    const noAuthor = await expectParleyError(
      client.messages.post(conversation.id, { text: "who am i" }),
      400,
      "BAD_REQUEST",
    );
    expect(noAuthor.details?.map((d) => d.path)).toContain("authorId");
  });

  it("throws NOT_FOUND for unknown resources and routes, UNAUTHORIZED for a bad token", async () => {
    const { client } = await createOrg();
    const missing = await expectParleyError(client.rooms.get("room_00000000000000000000000000"), 404, "NOT_FOUND");
    expect(missing).toBeInstanceOf(Error);
    expect(missing.name).toBe("ParleyError");
    await expectParleyError(client.conversations.get("conv_doesnotexist0000"), 404, "NOT_FOUND");
    await expectParleyError(new ParleyClient({ baseUrl, token: "sk_not-a-key" }).accounts.list(), 401, "UNAUTHORIZED");
    await expectParleyError(adminClient().accounts.list(), 403, "FORBIDDEN");
  });

  it("sends a given request id, and reports a server that cannot be reached as NETWORK_ERROR", async () => {
    const { client } = await createOrg();
    const error = await expectParleyError(
      client.accounts.get("acc_00000000000000000000000000", { requestId: "e2e-request-42" }),
      404,
      "NOT_FOUND",
    );
    expect(error.requestId).toBe("e2e-request-42");
    const offline = new ParleyClient({ baseUrl: "http://127.0.0.1:9", token: "x" });
    const failure = await offline.accounts.list().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ParleyError);
    expect(failure).toMatchObject({ status: 0, code: "NETWORK_ERROR" });
  });
});
