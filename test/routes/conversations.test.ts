import { describe, expect, it } from "vitest";
import { accountToken, call, createAccount, createOrg, expectError, post } from "../helpers/api";

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** An org with three users and a standard room holding Alice (owner) and Bob. */
async function setup() {
  const org = await createOrg("Conversations Inc");
  const alice = await createAccount(org.apiKey, { type: "user", name: "Alice" });
  const bob = await createAccount(org.apiKey, { type: "user", name: "Bob" });
  const carol = await createAccount(org.apiKey, { type: "user", name: "Carol" });
  const room = await createRoom(org.apiKey, [{ accountId: alice.id, role: "owner" }, { accountId: bob.id }]);
  return { ...org, alice, bob, carol, room };
}

async function createRoom(apiKey: string, participants: { accountId: string; role?: string }[]) {
  const response = await call("POST", "/v1/rooms", { token: apiKey, body: { type: "standard", participants } });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body;
}

async function createConversation(token: string, roomId: string, body: Record<string, unknown> = {}) {
  const response = await call("POST", `/v1/rooms/${roomId}/conversations`, { token, body });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body;
}

async function list(token: string, query = "") {
  const response = await call("GET", `/v1/conversations${query}`, { token });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body as { items: any[]; nextCursor: string | null };
}

async function sessionToken(apiKey: string, conversationId: string, accountId: string) {
  const response = await call("POST", `/v1/conversations/${conversationId}/sessions`, {
    token: apiKey,
    body: { accountId },
  });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body.token as string;
}

function ids(items: { id: string }[]) {
  return items.map((item) => item.id);
}

/** Waits a few milliseconds so that successive timestamps differ. */
function tick() {
  return new Promise((resolve) => setTimeout(resolve, 5));
}

describe("conversations", () => {
  it("creates a conversation with the contract's shape", async () => {
    const s = await setup();
    const response = await call("POST", `/v1/rooms/${s.room.id}/conversations`, {
      token: s.apiKey,
      body: { name: "Hello" },
    });
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    const c = response.body;
    expect(Object.keys(c).sort()).toEqual(
      [
        "contactId",
        "createdAt",
        "description",
        "id",
        "lastMessageAt",
        "messageCount",
        "meta",
        "name",
        "orgId",
        "roomId",
        "updatedAt",
      ].sort(),
    );
    expect(c.id).toMatch(/^conv_[0-9a-z]+$/);
    expect(c).toMatchObject({
      orgId: s.orgId,
      roomId: s.room.id,
      name: "Hello",
      description: null,
      meta: {},
      contactId: null,
      messageCount: 0,
      lastMessageAt: null,
    });
    expect(c.createdAt).toMatch(ISO);
    expect(c.updatedAt).toMatch(ISO);

    const full = await createConversation(s.apiKey, s.room.id, {
      name: "Support",
      description: "A ticket",
      meta: { priority: "high" },
      contactId: "ctc_0123456789abcdef",
    });
    expect(full).toMatchObject({
      name: "Support",
      description: "A ticket",
      meta: { priority: "high" },
      contactId: "ctc_0123456789abcdef",
      messageCount: 0,
      lastMessageAt: null,
    });
    expect(full.id).not.toBe(c.id);
    // A contact id of the caller's own system works as well, and lists by it.
    const external = await createConversation(s.apiKey, s.room.id, { contactId: "crm:customer-42@acme" });
    expect(external.contactId).toBe("crm:customer-42@acme");
    const listed = await call("GET", `/v1/conversations?contactId=${encodeURIComponent("crm:customer-42@acme")}`, {
      token: s.apiKey,
    });
    expect(listed.body.items.map((x: any) => x.id)).toEqual([external.id]);

    // Created by a participant's account token too.
    const bob = await accountToken(s.apiKey, s.bob.id);
    const byBob = await createConversation(bob, s.room.id, {});
    expect(byBob).toMatchObject({ roomId: s.room.id, name: null, messageCount: 0 });
  });

  it("rejects invalid bodies and unknown rooms", async () => {
    const s = await setup();
    const badContacts = [
      { contactId: "" },
      { contactId: "a b" },
      { contactId: "a\u00a0b" },
      { contactId: "a\u200bb" },
      { contactId: "x".repeat(129) },
      { contactId: 7 },
    ];
    for (const body of [...badContacts, { name: "" }, { unknown: 1 }, { meta: "x" }]) {
      expectError(
        await call("POST", `/v1/rooms/${s.room.id}/conversations`, { token: s.apiKey, body }),
        400,
        "BAD_REQUEST",
      );
    }
    expectError(
      await call("POST", "/v1/rooms/room_01aaaaaaaaaaaaaaaaaaaaaaaa/conversations", { token: s.apiKey, body: {} }),
      404,
      "NOT_FOUND",
    );
    expect((await list(s.apiKey)).items).toEqual([]);
  });

  it("gets and patches a conversation", async () => {
    const s = await setup();
    const c = await createConversation(s.apiKey, s.room.id, { name: "Before", meta: { a: 1 } });
    const got = await call("GET", `/v1/conversations/${c.id}`, { token: s.apiKey });
    expect(got.status).toBe(200);
    expect(got.body).toEqual(c);

    await tick();
    const patched = await call("PATCH", `/v1/conversations/${c.id}`, {
      token: s.apiKey,
      body: { name: "After", description: "described", contactId: "ctc_0123456789abcdef" },
    });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body).toMatchObject({
      id: c.id,
      name: "After",
      description: "described",
      meta: { a: 1 },
      contactId: "ctc_0123456789abcdef",
      createdAt: c.createdAt,
      messageCount: 0,
    });
    expect(patched.body.updatedAt > c.updatedAt).toBe(true);

    const remeta = await call("PATCH", `/v1/conversations/${c.id}`, {
      token: s.apiKey,
      body: { meta: { b: 2 }, contactId: null },
    });
    expect(remeta.body).toMatchObject({ name: "After", meta: { b: 2 }, contactId: null });

    const again = await call("GET", `/v1/conversations/${c.id}`, { token: s.apiKey });
    expect(again.body).toEqual(remeta.body);

    // The list (D1) follows.
    const listed = await list(s.apiKey, `?roomId=${s.room.id}`);
    expect(listed.items).toEqual([remeta.body]);

    expectError(
      await call("PATCH", `/v1/conversations/${c.id}`, { token: s.apiKey, body: { roomId: s.room.id } }),
      400,
      "BAD_REQUEST",
    );
  });

  it("deletes a conversation: 404 afterwards, gone from lists, no posting", async () => {
    const s = await setup();
    const doomed = await createConversation(s.apiKey, s.room.id, { name: "Doomed" });
    const kept = await createConversation(s.apiKey, s.room.id, { name: "Kept" });
    expect((await post(s.apiKey, doomed.id, { text: "hi", authorId: s.alice.id })).status).toBe(201);

    const deleted = await call("DELETE", `/v1/conversations/${doomed.id}`, { token: s.apiKey });
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(204);

    expectError(await call("GET", `/v1/conversations/${doomed.id}`, { token: s.apiKey }), 404, "NOT_FOUND");
    expectError(
      await call("PATCH", `/v1/conversations/${doomed.id}`, { token: s.apiKey, body: { name: "Back" } }),
      404,
      "NOT_FOUND",
    );
    expectError(await call("DELETE", `/v1/conversations/${doomed.id}`, { token: s.apiKey }), 404, "NOT_FOUND");
    expectError(await post(s.apiKey, doomed.id, { text: "still there?", authorId: s.alice.id }), 404, "NOT_FOUND");
    expectError(await call("GET", `/v1/conversations/${doomed.id}/messages`, { token: s.apiKey }), 404, "NOT_FOUND");
    expectError(
      await call("POST", `/v1/conversations/${doomed.id}/sessions`, {
        token: s.apiKey,
        body: { accountId: s.alice.id },
      }),
      404,
      "NOT_FOUND",
    );

    expect(ids((await list(s.apiKey)).items)).toEqual([kept.id]);
    expect(ids((await list(s.apiKey, `?roomId=${s.room.id}`)).items)).toEqual([kept.id]);
    expect(ids((await list(s.apiKey, `?accountId=${s.alice.id}`)).items)).toEqual([kept.id]);

    // The other conversation is untouched.
    expect((await call("GET", `/v1/conversations/${kept.id}`, { token: s.apiKey })).status).toBe(200);
  });

  it("members cannot delete a conversation; owners can", async () => {
    const s = await setup();
    const c = await createConversation(s.apiKey, s.room.id);
    const bob = await accountToken(s.apiKey, s.bob.id);
    const alice = await accountToken(s.apiKey, s.alice.id);
    expectError(await call("DELETE", `/v1/conversations/${c.id}`, { token: bob }), 403, "FORBIDDEN");
    expect((await call("GET", `/v1/conversations/${c.id}`, { token: bob })).status).toBe(200);
    expect((await call("DELETE", `/v1/conversations/${c.id}`, { token: alice })).status).toBe(204);
    expectError(await call("GET", `/v1/conversations/${c.id}`, { token: bob }), 404, "NOT_FOUND");
  });

  it("lists newest activity first, with every acknowledged message counted (read-your-writes)", async () => {
    const s = await setup();
    const a = await createConversation(s.apiKey, s.room.id, { name: "A" });
    await tick();
    const b = await createConversation(s.apiKey, s.room.id, { name: "B" });
    expect(ids((await list(s.apiKey)).items)).toEqual([b.id, a.id]);

    await tick();
    const posted = await post(s.apiKey, a.id, { text: "bump", authorId: s.alice.id });
    expect(posted.status, JSON.stringify(posted.body)).toBe(201);
    const bumped = await list(s.apiKey);
    expect(ids(bumped.items)).toEqual([a.id, b.id]);
    expect(bumped.items[0]).toMatchObject({ messageCount: 1, lastMessageAt: posted.body.createdAt });
    expect(bumped.items[1]).toMatchObject({ messageCount: 0, lastMessageAt: null });
    const got = await call("GET", `/v1/conversations/${a.id}`, { token: s.apiKey });
    expect(got.body).toMatchObject({ messageCount: 1, lastMessageAt: posted.body.createdAt });

    // Posts in quick succession (the room writes its activity to D1 at most once a second while busy): each list
    // right after an acknowledged post already has it, whatever the filter.
    const alice = await accountToken(s.apiKey, s.alice.id);
    const expected = { [a.id]: 1, [b.id]: 0 };
    for (const [target, filter] of [
      [b, ""],
      [a, `?roomId=${s.room.id}`],
      [b, `?accountId=${s.alice.id}`],
      [a, ""],
      [b, "alice"],
    ] as const) {
      await tick();
      const sent = await post(s.apiKey, target.id, { text: "and back", authorId: s.bob.id });
      expect(sent.status).toBe(201);
      expected[target.id]++;
      const page = filter === "alice" ? await list(alice) : await list(s.apiKey, filter);
      expect(ids(page.items)).toEqual(target.id === a.id ? [a.id, b.id] : [b.id, a.id]);
      expect(page.items[0]).toMatchObject({ messageCount: expected[target.id], lastMessageAt: sent.body.createdAt });
      expect(page.items[1].messageCount).toBe(expected[target.id === a.id ? b.id : a.id]);
    }
  });

  it("creates many conversations of one room at once: each its own id, all listed", async () => {
    const s = await setup();
    const created = await Promise.all(
      Array.from({ length: 20 }, (_, i) => createConversation(s.apiKey, s.room.id, { name: `c${i}` })),
    );
    expect(new Set(ids(created)).size).toBe(20);
    const listed = await list(s.apiKey, `?roomId=${s.room.id}&limit=100`);
    expect(new Set(ids(listed.items))).toEqual(new Set(ids(created)));
  });

  it("filters by roomId", async () => {
    const s = await setup();
    const other = await createRoom(s.apiKey, [{ accountId: s.alice.id }]);
    const inRoom = [await createConversation(s.apiKey, s.room.id), await createConversation(s.apiKey, s.room.id)];
    const inOther = await createConversation(s.apiKey, other.id);

    expect(new Set(ids((await list(s.apiKey, `?roomId=${s.room.id}`)).items))).toEqual(new Set(ids(inRoom)));
    expect(ids((await list(s.apiKey, `?roomId=${other.id}`)).items)).toEqual([inOther.id]);
    expect(ids((await list(s.apiKey)).items)).toHaveLength(3);
    expect((await list(s.apiKey, "?roomId=room_01aaaaaaaaaaaaaaaaaaaaaaaa")).items).toEqual([]);
    expectError(await call("GET", "/v1/conversations?roomId=general", { token: s.apiKey }), 400, "BAD_REQUEST");
  });

  it("filters by contactId", async () => {
    const s = await setup();
    const x1 = await createConversation(s.apiKey, s.room.id, { contactId: "ctc_0123456789abcdef" });
    const x2 = await createConversation(s.apiKey, s.room.id, { contactId: "ctc_0123456789abcdef" });
    const y = await createConversation(s.apiKey, s.room.id, { contactId: "ctc_fedcba9876543210" });
    const none = await createConversation(s.apiKey, s.room.id);

    expect(new Set(ids((await list(s.apiKey, "?contactId=ctc_0123456789abcdef")).items))).toEqual(
      new Set([x1.id, x2.id]),
    );
    expect(ids((await list(s.apiKey, "?contactId=ctc_fedcba9876543210")).items)).toEqual([y.id]);
    expect((await list(s.apiKey, "?contactId=ctc_zzzzzzzzzzzzzzzz")).items).toEqual([]);

    // A contact set later by PATCH is found too.
    await call("PATCH", `/v1/conversations/${none.id}`, {
      token: s.apiKey,
      body: { contactId: "ctc_fedcba9876543210" },
    });
    expect(new Set(ids((await list(s.apiKey, "?contactId=ctc_fedcba9876543210")).items))).toEqual(
      new Set([y.id, none.id]),
    );
    expectError(await call("GET", "/v1/conversations?contactId=a%20b", { token: s.apiKey }), 400, "BAD_REQUEST");
  });

  it("filters by accountId: only conversations of rooms the account participates in", async () => {
    const s = await setup();
    const bobsRoom = await createRoom(s.apiKey, [{ accountId: s.bob.id }]);
    const shared = await createConversation(s.apiKey, s.room.id);
    const bobs = await createConversation(s.apiKey, bobsRoom.id);

    expect(ids((await list(s.apiKey, `?accountId=${s.alice.id}`)).items)).toEqual([shared.id]);
    expect(new Set(ids((await list(s.apiKey, `?accountId=${s.bob.id}`)).items))).toEqual(new Set([shared.id, bobs.id]));
    expect((await list(s.apiKey, `?accountId=${s.carol.id}`)).items).toEqual([]);

    // Combined with roomId.
    expect(ids((await list(s.apiKey, `?accountId=${s.bob.id}&roomId=${bobsRoom.id}`)).items)).toEqual([bobs.id]);
    expect((await list(s.apiKey, `?accountId=${s.alice.id}&roomId=${bobsRoom.id}`)).items).toEqual([]);

    // Joining a room brings its conversations into the account's list; leaving takes them out.
    const added = await call("POST", `/v1/rooms/${bobsRoom.id}/participants`, {
      token: s.apiKey,
      body: { accountId: s.carol.id },
    });
    expect(added.status).toBe(201);
    expect(ids((await list(s.apiKey, `?accountId=${s.carol.id}`)).items)).toEqual([bobs.id]);
    const removed = await call("DELETE", `/v1/rooms/${bobsRoom.id}/participants/${s.carol.id}`, { token: s.apiKey });
    expect(removed.status).toBe(204);
    expect((await list(s.apiKey, `?accountId=${s.carol.id}`)).items).toEqual([]);
  });

  it("an account token lists only conversations of its rooms", async () => {
    const s = await setup();
    const alicesRoom = await createRoom(s.apiKey, [{ accountId: s.alice.id }]);
    const shared = await createConversation(s.apiKey, s.room.id);
    const alices = await createConversation(s.apiKey, alicesRoom.id);
    const bob = await accountToken(s.apiKey, s.bob.id);

    expect(ids((await list(bob)).items)).toEqual([shared.id]);
    expect(ids((await list(bob, `?accountId=${s.bob.id}`)).items)).toEqual([shared.id]);
    expect((await list(bob, `?roomId=${alicesRoom.id}`)).items).toEqual([]);
    expectError(await call("GET", `/v1/conversations?accountId=${s.alice.id}`, { token: bob }), 403, "FORBIDDEN");

    const alice = await accountToken(s.apiKey, s.alice.id);
    expect(new Set(ids((await list(alice)).items))).toEqual(new Set([shared.id, alices.id]));
  });

  it("pages through 25 conversations with limit 10, visiting each exactly once", async () => {
    const s = await setup();
    const other = await createRoom(s.apiKey, [{ accountId: s.bob.id }]);
    const created: string[] = [];
    for (let i = 0; i < 25; i++) {
      const c = await createConversation(s.apiKey, i % 2 === 0 ? s.room.id : other.id, { name: `c${i}` });
      created.push(c.id);
    }
    const seen: any[] = [];
    const sizes: number[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 10; page++) {
      const body = await list(s.apiKey, `?limit=10${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      seen.push(...body.items);
      sizes.push(body.items.length);
      cursor = body.nextCursor;
      if (!cursor) break;
    }
    expect(cursor).toBeNull();
    expect(sizes).toEqual([10, 10, 5]);
    expect(seen).toHaveLength(25);
    expect(new Set(ids(seen))).toEqual(new Set(created));
    for (let i = 1; i < seen.length; i++) {
      const previous = seen[i - 1].lastMessageAt ?? seen[i - 1].createdAt;
      const current = seen[i].lastMessageAt ?? seen[i].createdAt;
      expect(previous >= current).toBe(true);
    }
    // The newest is first, the oldest last.
    expect(ids(seen).indexOf(created[24])).toBeLessThan(ids(seen).indexOf(created[0]));

    expectError(await call("GET", "/v1/conversations?cursor=%%%", { token: s.apiKey }), 400, "BAD_REQUEST");
    expectError(await call("GET", "/v1/conversations?limit=0", { token: s.apiKey }), 400, "BAD_REQUEST");
  });
});

describe("sessions", () => {
  it("a session token reads and posts as its participant in its conversation only", async () => {
    const s = await setup();
    const c = await createConversation(s.apiKey, s.room.id);
    const sibling = await createConversation(s.apiKey, s.room.id);
    const elsewhere = await createRoom(s.apiKey, [{ accountId: s.alice.id }]);
    const far = await createConversation(s.apiKey, elsewhere.id);
    expect((await post(s.apiKey, c.id, { text: "welcome", authorId: s.bob.id })).status).toBe(201);

    const issued = await call("POST", `/v1/conversations/${c.id}/sessions`, {
      token: s.apiKey,
      body: { accountId: s.alice.id, ttlSeconds: 600 },
    });
    expect(issued.status, JSON.stringify(issued.body)).toBe(201);
    expect(typeof issued.body.token).toBe("string");
    expect(issued.body.expiresAt).toMatch(ISO);
    const ttl = Date.parse(issued.body.expiresAt) - Date.now();
    expect(ttl).toBeGreaterThan(500_000);
    expect(ttl).toBeLessThanOrEqual(601_000);
    const session = issued.body.token as string;

    const got = await call("GET", `/v1/conversations/${c.id}`, { token: session });
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    expect(got.body.id).toBe(c.id);

    const history = await call("GET", `/v1/conversations/${c.id}/messages`, { token: session });
    expect(history.status).toBe(200);
    expect(history.body.items.map((m: any) => m.text)).toEqual(["welcome"]);

    const mine = await post(session, c.id, { text: "hello from the browser" });
    expect(mine.status, JSON.stringify(mine.body)).toBe(201);
    expect(mine.body).toMatchObject({ authorId: s.alice.id, conversationId: c.id, seq: 2, type: "user" });
    const explicit = await post(session, c.id, { text: "again", authorId: s.alice.id });
    expect(explicit.status).toBe(201);
    expect(explicit.body.authorId).toBe(s.alice.id);

    // Never as another author.
    expectError(await post(session, c.id, { text: "I am Bob", authorId: s.bob.id }), 403, "FORBIDDEN");

    // Not another conversation, in the same room or elsewhere.
    for (const otherId of [sibling.id, far.id]) {
      expectError(await call("GET", `/v1/conversations/${otherId}`, { token: session }), 404, "NOT_FOUND");
      expectError(await call("GET", `/v1/conversations/${otherId}/messages`, { token: session }), 404, "NOT_FOUND");
      expectError(await post(session, otherId, { text: "leak" }), 404, "NOT_FOUND");
    }

    // Not the room, nor the conversation's management.
    const room = await call("GET", `/v1/rooms/${s.room.id}`, { token: session });
    expect([403, 404]).toContain(room.status);
    const patch = await call("PATCH", `/v1/conversations/${c.id}`, { token: session, body: { name: "mine" } });
    expect([403, 404]).toContain(patch.status);
    const del = await call("DELETE", `/v1/conversations/${c.id}`, { token: session });
    expect([403, 404]).toContain(del.status);
    const conversations = await call("GET", "/v1/conversations", { token: session });
    expect([403, 404]).toContain(conversations.status);
    const nested = await call("POST", `/v1/conversations/${c.id}/sessions`, {
      token: session,
      body: { accountId: s.bob.id },
    });
    expect([403, 404]).toContain(nested.status);

    // Only the three posts the room accepted are in history, none of the refused ones.
    const after = await call("GET", `/v1/conversations/${c.id}/messages`, { token: s.apiKey });
    expect(after.body.items.map((m: any) => [m.seq, m.authorId])).toEqual([
      [1, s.bob.id],
      [2, s.alice.id],
      [3, s.alice.id],
    ]);
    for (const otherId of [sibling.id, far.id]) {
      const h = await call("GET", `/v1/conversations/${otherId}/messages`, { token: s.apiKey });
      expect(h.body.items).toEqual([]);
    }
  });

  it("a session stops working when its participant leaves or its conversation is deleted", async () => {
    const s = await setup();
    const c = await createConversation(s.apiKey, s.room.id);
    const d = await createConversation(s.apiKey, s.room.id);
    const bobs = await sessionToken(s.apiKey, c.id, s.bob.id);
    const alices = await sessionToken(s.apiKey, d.id, s.alice.id);
    expect((await post(bobs, c.id, { text: "before" })).status).toBe(201);
    expect((await post(alices, d.id, { text: "before" })).status).toBe(201);

    expect((await call("DELETE", `/v1/rooms/${s.room.id}/participants/${s.bob.id}`, { token: s.apiKey })).status).toBe(
      204,
    );
    expect([403, 404]).toContain((await call("GET", `/v1/conversations/${c.id}`, { token: bobs })).status);
    expect([403, 404]).toContain((await post(bobs, c.id, { text: "after leaving" })).status);

    expect((await call("DELETE", `/v1/conversations/${d.id}`, { token: s.apiKey })).status).toBe(204);
    expectError(await call("GET", `/v1/conversations/${d.id}`, { token: alices }), 404, "NOT_FOUND");
    expectError(await post(alices, d.id, { text: "after deletion" }), 404, "NOT_FOUND");

    const history = await call("GET", `/v1/conversations/${c.id}/messages`, { token: s.apiKey });
    expect(history.body.items.map((m: any) => m.text)).toEqual(["before"]);
  });

  it("a non-participant accountId is 400", async () => {
    const s = await setup();
    const c = await createConversation(s.apiKey, s.room.id);
    const other = await createOrg("Other");
    const stranger = await createAccount(other.apiKey, { type: "user", name: "Stranger" });
    for (const accountId of [s.carol.id, stranger.id, "acc_0000000000000000000000unknown"]) {
      const response = await call("POST", `/v1/conversations/${c.id}/sessions`, {
        token: s.apiKey,
        body: { accountId },
      });
      expectError(response, 400, "BAD_REQUEST");
      expect(response.body.error.details?.map((d: any) => d.path)).toContain("accountId");
    }
    expectError(
      await call("POST", `/v1/conversations/${c.id}/sessions`, { token: s.apiKey, body: {} }),
      400,
      "BAD_REQUEST",
    );
    expectError(
      await call("POST", `/v1/conversations/${c.id}/sessions`, {
        token: s.apiKey,
        body: { accountId: s.alice.id, ttlSeconds: 0 },
      }),
      400,
      "BAD_REQUEST",
    );
  });

  it("sessions are issued with an API key only", async () => {
    const s = await setup();
    const c = await createConversation(s.apiKey, s.room.id);
    const alice = await accountToken(s.apiKey, s.alice.id);
    const response = await call("POST", `/v1/conversations/${c.id}/sessions`, {
      token: alice,
      body: { accountId: s.alice.id },
    });
    expectError(response, 403, "FORBIDDEN");
  });

  it("an observer's session reads but cannot post", async () => {
    const s = await setup();
    await call("POST", `/v1/rooms/${s.room.id}/participants`, {
      token: s.apiKey,
      body: { accountId: s.carol.id, role: "observer" },
    });
    const c = await createConversation(s.apiKey, s.room.id);
    expect((await post(s.apiKey, c.id, { text: "hi", authorId: s.alice.id })).status).toBe(201);
    const session = await sessionToken(s.apiKey, c.id, s.carol.id);
    expect((await call("GET", `/v1/conversations/${c.id}`, { token: session })).status).toBe(200);
    const history = await call("GET", `/v1/conversations/${c.id}/messages`, { token: session });
    expect(history.status).toBe(200);
    expect(history.body.items).toHaveLength(1);
    expectError(await post(session, c.id, { text: "may I?" }), 403, "FORBIDDEN");
  });
});

describe("access", () => {
  it("an account token of a non-participant gets 404 on the conversation", async () => {
    const s = await setup();
    const c = await createConversation(s.apiKey, s.room.id, { name: "Private" });
    const carol = await accountToken(s.apiKey, s.carol.id);

    expectError(await call("GET", `/v1/conversations/${c.id}`, { token: carol }), 404, "NOT_FOUND");
    expectError(await call("GET", `/v1/conversations/${c.id}/messages`, { token: carol }), 404, "NOT_FOUND");
    expectError(await post(carol, c.id, { text: "let me in" }), 404, "NOT_FOUND");
    expectError(
      await call("PATCH", `/v1/conversations/${c.id}`, { token: carol, body: { name: "Mine" } }),
      404,
      "NOT_FOUND",
    );
    expectError(await call("DELETE", `/v1/conversations/${c.id}`, { token: carol }), 404, "NOT_FOUND");
    expectError(
      await call("POST", `/v1/rooms/${s.room.id}/conversations`, { token: carol, body: {} }),
      404,
      "NOT_FOUND",
    );
    expect((await list(carol)).items).toEqual([]);

    // A participant's token reads and posts as itself.
    const bob = await accountToken(s.apiKey, s.bob.id);
    expect((await call("GET", `/v1/conversations/${c.id}`, { token: bob })).status).toBe(200);
    const posted = await post(bob, c.id, { text: "hi" });
    expect(posted.status).toBe(201);
    expect(posted.body.authorId).toBe(s.bob.id);
    expectError(await post(bob, c.id, { text: "as alice", authorId: s.alice.id }), 403, "FORBIDDEN");

    const unchanged = await call("GET", `/v1/conversations/${c.id}`, { token: s.apiKey });
    expect(unchanged.body).toMatchObject({ name: "Private", messageCount: 1 });
  });

  it("observers can read but cannot post", async () => {
    const s = await setup();
    const added = await call("POST", `/v1/rooms/${s.room.id}/participants`, {
      token: s.apiKey,
      body: { accountId: s.carol.id, role: "observer" },
    });
    expect(added.status).toBe(201);
    const c = await createConversation(s.apiKey, s.room.id);
    expect((await post(s.apiKey, c.id, { text: "hi", authorId: s.alice.id })).status).toBe(201);
    const carol = await accountToken(s.apiKey, s.carol.id);

    expect((await call("GET", `/v1/conversations/${c.id}`, { token: carol })).status).toBe(200);
    const history = await call("GET", `/v1/conversations/${c.id}/messages`, { token: carol });
    expect(history.status).toBe(200);
    expect(history.body.items.map((m: any) => m.text)).toEqual(["hi"]);
    expect(ids((await list(carol)).items)).toEqual([c.id]);

    expectError(await post(carol, c.id, { text: "may I?" }), 403, "FORBIDDEN");
    expectError(await post(s.apiKey, c.id, { text: "on behalf", authorId: s.carol.id }), 403, "FORBIDDEN");

    const after = await call("GET", `/v1/conversations/${c.id}/messages`, { token: s.apiKey });
    expect(after.body.items).toHaveLength(1);

    // Promoted to member, Carol can post.
    await call("PATCH", `/v1/rooms/${s.room.id}/participants/${s.carol.id}`, {
      token: s.apiKey,
      body: { role: "member" },
    });
    expect((await post(carol, c.id, { text: "now I can" })).status).toBe(201);
  });

  it("conversation ids that cannot be ours are 404, like unknown ones", async () => {
    const s = await setup();
    const c = await createConversation(s.apiKey, s.room.id);
    for (const bad of ["nope", "conv_", "conv_ABC123DEF456", s.room.id, "conv_0123456789-abcdef"]) {
      const path = `/v1/conversations/${encodeURIComponent(bad)}`;
      expectError(await call("GET", path, { token: s.apiKey }), 404, "NOT_FOUND");
      expectError(await call("PATCH", path, { token: s.apiKey, body: { name: "x" } }), 404, "NOT_FOUND");
      expectError(await call("DELETE", path, { token: s.apiKey }), 404, "NOT_FOUND");
      expectError(await call("GET", `${path}/messages`, { token: s.apiKey }), 404, "NOT_FOUND");
      expectError(
        await call("POST", `${path}/messages`, { token: s.apiKey, body: { text: "x", authorId: s.alice.id } }),
        404,
        "NOT_FOUND",
      );
      expectError(
        await call("POST", `${path}/sessions`, { token: s.apiKey, body: { accountId: s.alice.id } }),
        404,
        "NOT_FOUND",
      );
    }
    // Well-formed ids that name nothing.
    const sameRoomUnknown = `${c.id.slice(0, -10)}zzzzzzzzzz`;
    for (const unknown of ["conv_0123456789", sameRoomUnknown, "conv_01aaaaaaaaaaaaaaaaaaaaaaaa0123456789"]) {
      expectError(await call("GET", `/v1/conversations/${unknown}`, { token: s.apiKey }), 404, "NOT_FOUND");
      expectError(await post(s.apiKey, unknown, { text: "x", authorId: s.alice.id }), 404, "NOT_FOUND");
    }
  });
});

describe("cross-org isolation", () => {
  it("another org's API key gets 404 everywhere and never lists the conversation", async () => {
    const s = await setup();
    const c = await createConversation(s.apiKey, s.room.id, { name: "Secret", contactId: "ctc_0123456789abcdef" });
    expect((await post(s.apiKey, c.id, { text: "classified", authorId: s.alice.id })).status).toBe(201);
    const other = await createOrg("Eve Corp");
    const eve = await createAccount(other.apiKey, { type: "user", name: "Eve" });
    const eveRoom = await createRoom(other.apiKey, [{ accountId: eve.id }]);
    const evesOwn = await createConversation(other.apiKey, eveRoom.id, { contactId: "ctc_0123456789abcdef" });

    const key = other.apiKey;
    expectError(await call("GET", `/v1/conversations/${c.id}`, { token: key }), 404, "NOT_FOUND");
    expectError(
      await call("PATCH", `/v1/conversations/${c.id}`, { token: key, body: { name: "Owned" } }),
      404,
      "NOT_FOUND",
    );
    expectError(await call("DELETE", `/v1/conversations/${c.id}`, { token: key }), 404, "NOT_FOUND");
    expectError(await call("GET", `/v1/conversations/${c.id}/messages`, { token: key }), 404, "NOT_FOUND");
    expectError(await post(key, c.id, { text: "injected", authorId: eve.id }), 404, "NOT_FOUND");
    expectError(
      await call("POST", `/v1/conversations/${c.id}/sessions`, { token: key, body: { accountId: eve.id } }),
      404,
      "NOT_FOUND",
    );
    expectError(
      await call("POST", `/v1/conversations/${c.id}/sessions`, { token: key, body: { accountId: s.alice.id } }),
      404,
      "NOT_FOUND",
    );
    expectError(
      await call("POST", `/v1/rooms/${s.room.id}/conversations`, { token: key, body: { name: "planted" } }),
      404,
      "NOT_FOUND",
    );

    // The other org's account tokens fare no better.
    const eveToken = await accountToken(key, eve.id);
    expectError(await call("GET", `/v1/conversations/${c.id}`, { token: eveToken }), 404, "NOT_FOUND");
    expectError(await post(eveToken, c.id, { text: "injected" }), 404, "NOT_FOUND");

    // Its lists never include it, whatever the filters.
    for (const query of [
      "",
      `?roomId=${s.room.id}`,
      "?contactId=ctc_0123456789abcdef",
      `?accountId=${s.alice.id}`,
      `?accountId=${eve.id}`,
    ]) {
      const page = await list(key, query);
      expect(ids(page.items), query).not.toContain(c.id);
    }
    expect(ids((await list(key)).items)).toEqual([evesOwn.id]);
    expect(ids((await list(eveToken)).items)).toEqual([evesOwn.id]);

    // And the owner's view is untouched.
    const got = await call("GET", `/v1/conversations/${c.id}`, { token: s.apiKey });
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ name: "Secret", messageCount: 1 });
    const history = await call("GET", `/v1/conversations/${c.id}/messages`, { token: s.apiKey });
    expect(history.body.items.map((m: any) => m.text)).toEqual(["classified"]);
    expect(ids((await list(s.apiKey)).items)).toEqual([c.id]);
  });
});
