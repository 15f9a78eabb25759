import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { accountToken, call, createAccount, createOrg, expectError } from "../helpers/api";

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

type Participant = { accountId: string; role?: string; autoRespond?: boolean };

/** Creates a room with the given credential and asserts the status. */
async function createRoom(
  token: string,
  body: { type: "standard" | "dm"; name?: string | null; meta?: Record<string, unknown>; participants?: Participant[] },
  status = 201,
) {
  const response = await call("POST", "/v1/rooms", { token, body });
  expect(response.status, JSON.stringify(response.body)).toBe(status);
  return response.body;
}

/** An org with three users and an agent. */
async function setup() {
  const org = await createOrg("Rooms Inc");
  const alice = await createAccount(org.apiKey, { type: "user", name: "Alice" });
  const bob = await createAccount(org.apiKey, { type: "user", name: "Bob" });
  const carol = await createAccount(org.apiKey, { type: "user", name: "Carol" });
  const agent = await createAccount(org.apiKey, { type: "agent", name: "Helper" });
  return { ...org, alice, bob, carol, agent };
}

/** Every item of a list, following `nextCursor` from the first page. */
async function listAll(token: string, path: string, limit: number) {
  const items: any[] = [];
  const pages: number[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 50; i++) {
    const separator = path.includes("?") ? "&" : "?";
    const url = `${path}${separator}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const response = await call("GET", url, { token });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    items.push(...response.body.items);
    pages.push(response.body.items.length);
    cursor = response.body.nextCursor;
    if (cursor === null) return { items, pages };
  }
  throw new Error("paging did not end");
}

function shuffled<T>(values: T[]): T[] {
  const copy = [...values];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

function ids(items: { id: string }[]) {
  return items.map((item) => item.id);
}

describe("standard rooms", () => {
  it("creates a room with participants and their defaults", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, {
      type: "standard",
      name: "General",
      meta: { topic: "all things" },
      participants: [{ accountId: s.alice.id, role: "owner" }, { accountId: s.bob.id }, { accountId: s.agent.id }],
    });
    expect(room.id).toMatch(/^room_[0-9a-z]+$/);
    expect(room.orgId).toBe(s.orgId);
    expect(room.type).toBe("standard");
    expect(room.name).toBe("General");
    expect(room.meta).toEqual({ topic: "all things" });
    expect(room.createdAt).toMatch(ISO);
    expect(room.participants).toHaveLength(3);
    const byId = new Map(room.participants.map((p: any) => [p.accountId, p]));
    expect(byId.get(s.alice.id)).toMatchObject({ role: "owner", autoRespond: false });
    expect(byId.get(s.bob.id)).toMatchObject({ role: "member", autoRespond: false });
    expect(byId.get(s.agent.id)).toMatchObject({ role: "member", autoRespond: true });
    for (const p of room.participants) {
      expect(Object.keys(p).sort()).toEqual(["accountId", "autoRespond", "joinedAt", "role"]);
      expect(p.joinedAt).toMatch(ISO);
    }
  });

  it("honours explicit role and autoRespond, and defaults name and meta", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, {
      type: "standard",
      participants: [
        { accountId: s.agent.id, role: "observer", autoRespond: false },
        { accountId: s.bob.id, role: "admin", autoRespond: true },
      ],
    });
    expect(room.name).toBeNull();
    expect(room.meta).toEqual({});
    const byId = new Map(room.participants.map((p: any) => [p.accountId, p]));
    expect(byId.get(s.agent.id)).toMatchObject({ role: "observer", autoRespond: false });
    expect(byId.get(s.bob.id)).toMatchObject({ role: "admin", autoRespond: true });
  });

  it("rejects unknown and other-org participant accounts with details naming each", async () => {
    const s = await setup();
    const other = await createOrg("Other");
    const stranger = await createAccount(other.apiKey, { type: "user", name: "Stranger" });
    const response = await call("POST", "/v1/rooms", {
      token: s.apiKey,
      body: {
        type: "standard",
        participants: [
          { accountId: s.alice.id },
          { accountId: "acc_0000000000000000000000unknown" },
          { accountId: stranger.id },
        ],
      },
    });
    expectError(response, 400, "BAD_REQUEST");
    const paths = response.body.error.details.map((d: any) => d.path);
    expect(paths).toContain("participants.1.accountId");
    expect(paths).toContain("participants.2.accountId");
    expect(paths).not.toContain("participants.0.accountId");
    // Nothing was created.
    const list = await call("GET", "/v1/rooms", { token: s.apiKey });
    expect(list.body.items).toEqual([]);
  });

  it("rejects malformed bodies", async () => {
    const s = await setup();
    expectError(await call("POST", "/v1/rooms", { token: s.apiKey, body: { type: "group" } }), 400, "BAD_REQUEST");
    expectError(
      await call("POST", "/v1/rooms", {
        token: s.apiKey,
        body: { type: "standard", participants: [{ accountId: s.alice.id, role: "king" }] },
      }),
      400,
      "BAD_REQUEST",
    );
    expectError(
      await call("POST", "/v1/rooms", {
        token: s.apiKey,
        body: { type: "standard", participants: [{ accountId: "x" }] },
      }),
      400,
      "BAD_REQUEST",
    );
  });

  it("gets a room, and 404s for unknown ids, well-formed or not", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, { type: "standard", name: "G", participants: [{ accountId: s.alice.id }] });
    const got = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    expect(got.status).toBe(200);
    expect(got.body).toEqual(room);
    expectError(await call("GET", "/v1/rooms/room_01aaaaaaaaaaaaaaaaaaaaaaaa", { token: s.apiKey }), 404, "NOT_FOUND");
    expectError(await call("GET", "/v1/rooms/not-a-room", { token: s.apiKey }), 404, "NOT_FOUND");
    expectError(await call("GET", "/v1/rooms/room_nope", { token: s.apiKey }), 404, "NOT_FOUND");
  });

  it("patches name and meta", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, {
      type: "standard",
      name: "Before",
      meta: { a: 1 },
      participants: [{ accountId: s.alice.id }],
    });
    const renamed = await call("PATCH", `/v1/rooms/${room.id}`, { token: s.apiKey, body: { name: "After" } });
    expect(renamed.status, JSON.stringify(renamed.body)).toBe(200);
    expect(renamed.body).toMatchObject({ id: room.id, name: "After", meta: { a: 1 } });
    expect(renamed.body.participants).toEqual(room.participants);

    const remeta = await call("PATCH", `/v1/rooms/${room.id}`, { token: s.apiKey, body: { meta: { b: [2] } } });
    expect(remeta.status).toBe(200);
    expect(remeta.body).toMatchObject({ name: "After", meta: { b: [2] } });

    const got = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    expect(got.body).toMatchObject({ name: "After", meta: { b: [2] }, createdAt: room.createdAt });

    // The D1 mirror behind the list follows the change.
    const list = await call("GET", "/v1/rooms", { token: s.apiKey });
    expect(list.body.items.find((r: any) => r.id === room.id)).toMatchObject({ name: "After", meta: { b: [2] } });

    expectError(
      await call("PATCH", `/v1/rooms/${room.id}`, { token: s.apiKey, body: { type: "dm" } }),
      400,
      "BAD_REQUEST",
    );

    // Meta nested past 64 levels is a 400 wherever it is given (before: a 500 from the room object's RPC); nothing
    // is created or changed.
    const deep = `{"meta":{"a":${"[".repeat(7000)}${"]".repeat(7000)}}}`;
    const refused = [
      await call("POST", "/v1/rooms", { token: s.apiKey, body: deep.replace("{", '{"type":"standard",') }),
      await call("PATCH", `/v1/rooms/${room.id}`, { token: s.apiKey, body: deep }),
      await call("POST", `/v1/rooms/${room.id}/conversations`, { token: s.apiKey, body: deep }),
      await call("POST", "/v1/accounts", { token: s.apiKey, body: deep.replace("{", '{"type":"user","name":"X",') }),
    ];
    for (const response of refused) {
      expectError(response, 400, "BAD_REQUEST");
      expect(response.body.error.details.map((d: any) => d.path)).toEqual(["meta"]);
    }
    const after = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    expect(after.body.meta).toEqual({ b: [2] });
    const conversations = await call("GET", `/v1/conversations?roomId=${room.id}`, { token: s.apiKey });
    expect(conversations.body.items).toEqual([]);
  });

  it("lists rooms filtered by accountId and type", async () => {
    const s = await setup();
    const both = await createRoom(s.apiKey, {
      type: "standard",
      participants: [{ accountId: s.alice.id }, { accountId: s.bob.id }],
    });
    const aliceOnly = await createRoom(s.apiKey, { type: "standard", participants: [{ accountId: s.alice.id }] });
    const bobOnly = await createRoom(s.apiKey, { type: "standard", participants: [{ accountId: s.bob.id }] });
    const dm = await createRoom(s.apiKey, {
      type: "dm",
      participants: [{ accountId: s.alice.id }, { accountId: s.bob.id }],
    });

    const all = await call("GET", "/v1/rooms", { token: s.apiKey });
    expect(all.status).toBe(200);
    expect(all.body.nextCursor).toBeNull();
    expect(new Set(ids(all.body.items))).toEqual(new Set([both.id, aliceOnly.id, bobOnly.id, dm.id]));

    const alices = await call("GET", `/v1/rooms?accountId=${s.alice.id}`, { token: s.apiKey });
    expect(new Set(ids(alices.body.items))).toEqual(new Set([both.id, aliceOnly.id, dm.id]));

    const dms = await call("GET", "/v1/rooms?type=dm", { token: s.apiKey });
    expect(ids(dms.body.items)).toEqual([dm.id]);

    const standard = await call("GET", "/v1/rooms?type=standard", { token: s.apiKey });
    expect(new Set(ids(standard.body.items))).toEqual(new Set([both.id, aliceOnly.id, bobOnly.id]));

    const bobsStandard = await call("GET", `/v1/rooms?accountId=${s.bob.id}&type=standard`, { token: s.apiKey });
    expect(new Set(ids(bobsStandard.body.items))).toEqual(new Set([both.id, bobOnly.id]));

    const carols = await call("GET", `/v1/rooms?accountId=${s.carol.id}`, { token: s.apiKey });
    expect(carols.body.items).toEqual([]);

    // Listed rooms carry their participants, as GET shows them.
    const listed = all.body.items.find((r: any) => r.id === both.id);
    expect(listed).toEqual(both);

    expectError(await call("GET", "/v1/rooms?type=group", { token: s.apiKey }), 400, "BAD_REQUEST");
    expectError(await call("GET", "/v1/rooms?accountId=bob", { token: s.apiKey }), 400, "BAD_REQUEST");
  });

  it("pages through rooms newest first with cursors, visiting each once", async () => {
    const s = await setup();
    const created: string[] = [];
    for (let i = 0; i < 7; i++) {
      const room = await createRoom(s.apiKey, { type: "standard", name: `r${i}` });
      created.push(room.id);
    }
    const { items, pages } = await listAll(s.apiKey, "/v1/rooms", 3);
    expect(pages).toEqual([3, 3, 1]);
    expect(ids(items)).toHaveLength(7);
    expect(new Set(ids(items))).toEqual(new Set(created));
    for (let i = 1; i < items.length; i++) {
      expect(items[i - 1].createdAt >= items[i].createdAt).toBe(true);
    }
    // Newest first: the last room created is not listed after the first one.
    expect(ids(items).indexOf(created[6])).toBeLessThan(ids(items).indexOf(created[0]));

    expectError(await call("GET", "/v1/rooms?cursor=garbage!", { token: s.apiKey }), 400, "BAD_REQUEST");
    expectError(await call("GET", "/v1/rooms?limit=0", { token: s.apiKey }), 400, "BAD_REQUEST");
    expectError(await call("GET", "/v1/rooms?limit=101", { token: s.apiKey }), 400, "BAD_REQUEST");
  });
  it("lists a full page of 100 rooms with their participants", async () => {
    const s = await setup();
    const created = await Promise.all(
      Array.from({ length: 101 }, (_, i) =>
        createRoom(s.apiKey, { type: "standard", name: `r${i}`, participants: [{ accountId: s.alice.id }] }),
      ),
    );
    const page = await call("GET", "/v1/rooms?limit=100", { token: s.apiKey });
    expect(page.status, JSON.stringify(page.body)).toBe(200);
    expect(page.body.items).toHaveLength(100);
    expect(typeof page.body.nextCursor).toBe("string");
    for (const room of page.body.items) expect(room.participants.map((p: any) => p.accountId)).toEqual([s.alice.id]);
    const rest = await call("GET", `/v1/rooms?limit=100&cursor=${encodeURIComponent(page.body.nextCursor)}`, {
      token: s.apiKey,
    });
    expect(rest.status).toBe(200);
    expect(rest.body.items).toHaveLength(1);
    expect(rest.body.nextCursor).toBeNull();
    expect(new Set([...ids(page.body.items), ...ids(rest.body.items)])).toEqual(new Set(ids(created)));
  });
});

describe("participants", () => {
  it("adds a participant, and a duplicate add is 409 CONFLICT", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, { type: "standard", participants: [{ accountId: s.alice.id }] });

    const added = await call("POST", `/v1/rooms/${room.id}/participants`, {
      token: s.apiKey,
      body: { accountId: s.bob.id, role: "admin" },
    });
    expect(added.status, JSON.stringify(added.body)).toBe(201);
    expect(added.body).toEqual({
      accountId: s.bob.id,
      role: "admin",
      autoRespond: false,
      joinedAt: expect.any(String),
    });
    expect(added.body.joinedAt).toMatch(ISO);

    const agent = await call("POST", `/v1/rooms/${room.id}/participants`, {
      token: s.apiKey,
      body: { accountId: s.agent.id },
    });
    expect(agent.status).toBe(201);
    expect(agent.body).toMatchObject({ accountId: s.agent.id, role: "member", autoRespond: true });

    const got = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    expect(got.body.participants).toContainEqual(added.body);
    expect(got.body.participants).toContainEqual(agent.body);
    expect(got.body.participants).toHaveLength(3);

    const duplicate = await call("POST", `/v1/rooms/${room.id}/participants`, {
      token: s.apiKey,
      body: { accountId: s.bob.id, role: "member" },
    });
    expectError(duplicate, 409, "CONFLICT");
    // The duplicate changed nothing.
    const after = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    expect(after.body.participants.find((p: any) => p.accountId === s.bob.id).role).toBe("admin");

    // The new member's rooms list (D1 mirror) includes the room.
    const bobs = await call("GET", `/v1/rooms?accountId=${s.bob.id}`, { token: s.apiKey });
    expect(ids(bobs.body.items)).toEqual([room.id]);
  });

  it("adds a participant exactly once under 10 concurrent identical calls", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, { type: "standard", participants: [{ accountId: s.alice.id }] });
    const responses = await Promise.all(
      Array.from({ length: 10 }, () =>
        call("POST", `/v1/rooms/${room.id}/participants`, { token: s.apiKey, body: { accountId: s.bob.id } }),
      ),
    );
    expect(responses.map((r) => r.status).sort()).toEqual([201, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
    for (const r of responses.filter((r) => r.status === 409)) expectError(r, 409, "CONFLICT");
    const got = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    expect(got.body.participants.map((p: any) => p.accountId).sort()).toEqual([s.alice.id, s.bob.id].sort());
    const rows = await env.DB.prepare("SELECT count(*) AS n FROM participants WHERE room_id = ?")
      .bind(room.id)
      .first<{ n: number }>();
    expect(rows?.n).toBe(2);
  });

  it("refuses to add unknown or other-org accounts", async () => {
    const s = await setup();
    const other = await createOrg("Other");
    const stranger = await createAccount(other.apiKey, { type: "user", name: "Stranger" });
    const room = await createRoom(s.apiKey, { type: "standard", participants: [{ accountId: s.alice.id }] });
    for (const accountId of [stranger.id, "acc_0000000000000000000000unknown"]) {
      const response = await call("POST", `/v1/rooms/${room.id}/participants`, {
        token: s.apiKey,
        body: { accountId },
      });
      expectError(response, 400, "BAD_REQUEST");
      expect(response.body.error.details.map((d: any) => d.path)).toEqual(["accountId"]);
    }
    const got = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    expect(got.body.participants.map((p: any) => p.accountId)).toEqual([s.alice.id]);
  });

  it("patches a participant's role and autoRespond", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, {
      type: "standard",
      participants: [{ accountId: s.alice.id }, { accountId: s.agent.id }],
    });
    const role = await call("PATCH", `/v1/rooms/${room.id}/participants/${s.alice.id}`, {
      token: s.apiKey,
      body: { role: "observer" },
    });
    expect(role.status, JSON.stringify(role.body)).toBe(200);
    expect(role.body).toMatchObject({ accountId: s.alice.id, role: "observer", autoRespond: false });

    const auto = await call("PATCH", `/v1/rooms/${room.id}/participants/${s.agent.id}`, {
      token: s.apiKey,
      body: { autoRespond: false },
    });
    expect(auto.status).toBe(200);
    expect(auto.body).toMatchObject({ accountId: s.agent.id, role: "member", autoRespond: false });

    const both = await call("PATCH", `/v1/rooms/${room.id}/participants/${s.alice.id}`, {
      token: s.apiKey,
      body: { role: "admin", autoRespond: true },
    });
    expect(both.body).toMatchObject({ role: "admin", autoRespond: true });

    const got = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    const byId = new Map(got.body.participants.map((p: any) => [p.accountId, p]));
    expect(byId.get(s.alice.id)).toMatchObject({ role: "admin", autoRespond: true });
    expect(byId.get(s.agent.id)).toMatchObject({ role: "member", autoRespond: false });

    // The list (D1 mirror) shows the same participants.
    const listed = await call("GET", "/v1/rooms", { token: s.apiKey });
    expect(listed.body.items.find((r: any) => r.id === room.id).participants).toEqual(got.body.participants);

    expectError(
      await call("PATCH", `/v1/rooms/${room.id}/participants/${s.bob.id}`, {
        token: s.apiKey,
        body: { role: "admin" },
      }),
      404,
      "NOT_FOUND",
    );
    expectError(
      await call("PATCH", `/v1/rooms/${room.id}/participants/${s.alice.id}`, {
        token: s.apiKey,
        body: { role: "king" },
      }),
      400,
      "BAD_REQUEST",
    );
  });

  it("removes a participant with 204, after which it is gone", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, {
      type: "standard",
      participants: [{ accountId: s.alice.id }, { accountId: s.bob.id }],
    });
    const bobToken = await accountToken(s.apiKey, s.bob.id);
    expect((await call("GET", `/v1/rooms/${room.id}`, { token: bobToken })).status).toBe(200);

    const removed = await call("DELETE", `/v1/rooms/${room.id}/participants/${s.bob.id}`, { token: s.apiKey });
    expect(removed.status, JSON.stringify(removed.body)).toBe(204);
    expect(removed.body).toBeNull();

    // Bob's token no longer reaches the room.
    expectError(await call("GET", `/v1/rooms/${room.id}`, { token: bobToken }), 404, "NOT_FOUND");
    expect((await call("GET", "/v1/rooms", { token: bobToken })).body.items).toEqual([]);

    const got = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    expect(got.body.participants.map((p: any) => p.accountId)).toEqual([s.alice.id]);

    const bobs = await call("GET", `/v1/rooms?accountId=${s.bob.id}`, { token: s.apiKey });
    expect(bobs.body.items).toEqual([]);

    expectError(
      await call("DELETE", `/v1/rooms/${room.id}/participants/${s.bob.id}`, { token: s.apiKey }),
      404,
      "NOT_FOUND",
    );

    // Bob can be added again.
    const again = await call("POST", `/v1/rooms/${room.id}/participants`, {
      token: s.apiKey,
      body: { accountId: s.bob.id },
    });
    expect(again.status).toBe(201);
  });
});

describe("account tokens", () => {
  it("see only rooms they participate in", async () => {
    const s = await setup();
    const shared = await createRoom(s.apiKey, {
      type: "standard",
      participants: [{ accountId: s.alice.id }, { accountId: s.bob.id }],
    });
    const private_ = await createRoom(s.apiKey, { type: "standard", participants: [{ accountId: s.alice.id }] });
    const bob = await accountToken(s.apiKey, s.bob.id);

    const visible = await call("GET", `/v1/rooms/${shared.id}`, { token: bob });
    expect(visible.status).toBe(200);
    expect(visible.body.id).toBe(shared.id);

    expectError(await call("GET", `/v1/rooms/${private_.id}`, { token: bob }), 404, "NOT_FOUND");
    expectError(
      await call("PATCH", `/v1/rooms/${private_.id}`, { token: bob, body: { name: "mine" } }),
      404,
      "NOT_FOUND",
    );

    const list = await call("GET", "/v1/rooms", { token: bob });
    expect(list.status).toBe(200);
    expect(ids(list.body.items)).toEqual([shared.id]);

    const own = await call("GET", `/v1/rooms?accountId=${s.bob.id}`, { token: bob });
    expect(ids(own.body.items)).toEqual([shared.id]);

    expectError(await call("GET", `/v1/rooms?accountId=${s.alice.id}`, { token: bob }), 403, "FORBIDDEN");
  });

  it("members cannot manage participants or the room; owners and admins can", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, {
      type: "standard",
      name: "Team",
      participants: [
        { accountId: s.alice.id, role: "owner" },
        { accountId: s.bob.id },
        { accountId: s.agent.id, role: "admin" },
      ],
    });
    const alice = await accountToken(s.apiKey, s.alice.id);
    const bob = await accountToken(s.apiKey, s.bob.id);
    const admin = await accountToken(s.apiKey, s.agent.id);

    // A member is refused every management operation, and nothing changes.
    expectError(
      await call("POST", `/v1/rooms/${room.id}/participants`, { token: bob, body: { accountId: s.carol.id } }),
      403,
      "FORBIDDEN",
    );
    expectError(
      await call("PATCH", `/v1/rooms/${room.id}/participants/${s.bob.id}`, { token: bob, body: { role: "owner" } }),
      403,
      "FORBIDDEN",
    );
    expectError(
      await call("DELETE", `/v1/rooms/${room.id}/participants/${s.alice.id}`, { token: bob }),
      403,
      "FORBIDDEN",
    );
    expectError(await call("PATCH", `/v1/rooms/${room.id}`, { token: bob, body: { name: "Mine" } }), 403, "FORBIDDEN");
    const unchanged = await call("GET", `/v1/rooms/${room.id}`, { token: bob });
    expect(unchanged.body).toEqual(room);

    // The owner adds, the admin changes and removes.
    const added = await call("POST", `/v1/rooms/${room.id}/participants`, {
      token: alice,
      body: { accountId: s.carol.id },
    });
    expect(added.status, JSON.stringify(added.body)).toBe(201);
    expect(added.body).toMatchObject({ accountId: s.carol.id, role: "member" });

    const promoted = await call("PATCH", `/v1/rooms/${room.id}/participants/${s.carol.id}`, {
      token: admin,
      body: { role: "observer" },
    });
    expect(promoted.status).toBe(200);
    expect(promoted.body.role).toBe("observer");

    const renamed = await call("PATCH", `/v1/rooms/${room.id}`, { token: alice, body: { name: "Renamed" } });
    expect(renamed.status).toBe(200);
    expect(renamed.body.name).toBe("Renamed");

    const removed = await call("DELETE", `/v1/rooms/${room.id}/participants/${s.carol.id}`, { token: admin });
    expect(removed.status).toBe(204);

    const final = await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey });
    expect(final.body.participants.map((p: any) => p.accountId).sort()).toEqual(
      [s.alice.id, s.bob.id, s.agent.id].sort(),
    );
    expect(final.body.name).toBe("Renamed");
  });

  it("creating a standard room with an account token makes the caller its owner", async () => {
    const s = await setup();
    const bob = await accountToken(s.apiKey, s.bob.id);
    const room = await createRoom(bob, { type: "standard", participants: [{ accountId: s.carol.id }] });
    const byId = new Map(room.participants.map((p: any) => [p.accountId, p]));
    expect(byId.get(s.bob.id)).toMatchObject({ role: "owner" });
    expect(byId.get(s.carol.id)).toMatchObject({ role: "member" });
    const got = await call("GET", `/v1/rooms/${room.id}`, { token: bob });
    expect(got.status).toBe(200);
  });
});

describe("dm rooms", () => {
  it("needs at least 2 distinct participants", async () => {
    const s = await setup();
    for (const participants of [
      undefined,
      [],
      [{ accountId: s.alice.id }],
      [{ accountId: s.alice.id }, { accountId: s.alice.id }],
    ]) {
      const response = await call("POST", "/v1/rooms", { token: s.apiKey, body: { type: "dm", participants } });
      expectError(response, 400, "BAD_REQUEST");
      expect(response.body.error.details.map((d: any) => d.path)).toContain("participants");
    }
    const list = await call("GET", "/v1/rooms?type=dm", { token: s.apiKey });
    expect(list.body.items).toEqual([]);
  });

  it("maps the same participant set to the same room: 201 once, then 200", async () => {
    const s = await setup();
    const first = await call("POST", "/v1/rooms", {
      token: s.apiKey,
      body: { type: "dm", participants: [{ accountId: s.alice.id }, { accountId: s.bob.id }] },
    });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    expect(first.body).toMatchObject({ type: "dm", orgId: s.orgId });
    expect(first.body.participants.map((p: any) => p.accountId).sort()).toEqual([s.alice.id, s.bob.id].sort());

    const reversed = await call("POST", "/v1/rooms", {
      token: s.apiKey,
      body: { type: "dm", participants: [{ accountId: s.bob.id }, { accountId: s.alice.id }] },
    });
    expect(reversed.status, JSON.stringify(reversed.body)).toBe(200);
    expect(reversed.body).toEqual(first.body);

    const duplicated = await call("POST", "/v1/rooms", {
      token: s.apiKey,
      body: {
        type: "dm",
        participants: [{ accountId: s.bob.id }, { accountId: s.alice.id }, { accountId: s.bob.id }],
      },
    });
    expect(duplicated.status).toBe(200);
    expect(duplicated.body.id).toBe(first.body.id);
    expect(duplicated.body.participants).toHaveLength(2);

    // An account token of a member reaches the same room.
    const alice = await accountToken(s.apiKey, s.alice.id);
    const viaToken = await call("POST", "/v1/rooms", {
      token: alice,
      body: { type: "dm", participants: [{ accountId: s.alice.id }, { accountId: s.bob.id }] },
    });
    expect(viaToken.status).toBe(200);
    expect(viaToken.body.id).toBe(first.body.id);

    // A different set is a different room, and so is a superset.
    const other = await call("POST", "/v1/rooms", {
      token: s.apiKey,
      body: { type: "dm", participants: [{ accountId: s.alice.id }, { accountId: s.carol.id }] },
    });
    expect(other.status).toBe(201);
    expect(other.body.id).not.toBe(first.body.id);
    const trio = await call("POST", "/v1/rooms", {
      token: s.apiKey,
      body: {
        type: "dm",
        participants: [{ accountId: s.alice.id }, { accountId: s.bob.id }, { accountId: s.carol.id }],
      },
    });
    expect(trio.status).toBe(201);
    expect(new Set([first.body.id, other.body.id, trio.body.id]).size).toBe(3);

    const dms = await call("GET", "/v1/rooms?type=dm", { token: s.apiKey });
    expect(new Set(ids(dms.body.items))).toEqual(new Set([first.body.id, other.body.id, trio.body.id]));
  });

  it("never changes membership, but participants' role and autoRespond may change", async () => {
    const s = await setup();
    const dm = await createRoom(s.apiKey, {
      type: "dm",
      participants: [{ accountId: s.alice.id }, { accountId: s.agent.id }],
    });
    expect(dm.participants.find((p: any) => p.accountId === s.agent.id).autoRespond).toBe(true);

    expectError(
      await call("POST", `/v1/rooms/${dm.id}/participants`, { token: s.apiKey, body: { accountId: s.carol.id } }),
      409,
      "ROOM_IMMUTABLE",
    );
    expectError(
      await call("DELETE", `/v1/rooms/${dm.id}/participants/${s.agent.id}`, { token: s.apiKey }),
      409,
      "ROOM_IMMUTABLE",
    );
    // Not even a participant removing itself.
    const alice = await accountToken(s.apiKey, s.alice.id);
    expectError(
      await call("DELETE", `/v1/rooms/${dm.id}/participants/${s.alice.id}`, { token: alice }),
      409,
      "ROOM_IMMUTABLE",
    );

    const muted = await call("PATCH", `/v1/rooms/${dm.id}/participants/${s.agent.id}`, {
      token: s.apiKey,
      body: { autoRespond: false, role: "admin" },
    });
    expect(muted.status, JSON.stringify(muted.body)).toBe(200);
    expect(muted.body).toMatchObject({ accountId: s.agent.id, role: "admin", autoRespond: false });

    const got = await call("GET", `/v1/rooms/${dm.id}`, { token: s.apiKey });
    expect(got.body.participants.map((p: any) => p.accountId).sort()).toEqual([s.alice.id, s.agent.id].sort());
    expect(got.body.participants.find((p: any) => p.accountId === s.agent.id)).toMatchObject({
      role: "admin",
      autoRespond: false,
    });

    // Asking for the DM again answers the room as it is now.
    const again = await createRoom(
      s.apiKey,
      { type: "dm", participants: [{ accountId: s.agent.id }, { accountId: s.alice.id }] },
      200,
    );
    expect(again).toEqual(got.body);
  });

  it("creates exactly one room under 10 concurrent identical calls", async () => {
    const s = await setup();
    const members = [s.alice.id, s.bob.id, s.carol.id];
    const responses = await Promise.all(
      Array.from({ length: 10 }, () =>
        call("POST", "/v1/rooms", {
          token: s.apiKey,
          body: { type: "dm", participants: shuffled(members).map((accountId) => ({ accountId })) },
        }),
      ),
    );
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses, JSON.stringify(responses.map((r) => r.body))).toEqual([
      200, 200, 200, 200, 200, 200, 200, 200, 200, 201,
    ]);
    const roomIds = new Set(responses.map((r) => r.body.id));
    expect(roomIds.size).toBe(1);
    for (const r of responses) {
      expect(r.body.participants.map((p: any) => p.accountId).sort()).toEqual([...members].sort());
    }

    const row = await env.DB.prepare("SELECT count(*) AS n FROM rooms WHERE org_id = ? AND type = 'dm'")
      .bind(s.orgId)
      .first<{ n: number }>();
    expect(row?.n).toBe(1);
    const participantRows = await env.DB.prepare("SELECT count(*) AS n FROM participants WHERE room_id = ?")
      .bind([...roomIds][0])
      .first<{ n: number }>();
    expect(participantRows?.n).toBe(3);

    const dms = await call("GET", "/v1/rooms?type=dm", { token: s.apiKey });
    expect(ids(dms.body.items)).toEqual([...roomIds]);
  });
});

describe("cross-org isolation", () => {
  it("another org's API key gets 404 for the room and never lists it", async () => {
    const s = await setup();
    const room = await createRoom(s.apiKey, {
      type: "standard",
      name: "Secret",
      participants: [{ accountId: s.alice.id, role: "owner" }, { accountId: s.bob.id }],
    });
    const dm = await createRoom(s.apiKey, {
      type: "dm",
      participants: [{ accountId: s.alice.id }, { accountId: s.bob.id }],
    });
    const other = await createOrg("Eve Corp");
    const eve = await createAccount(other.apiKey, { type: "user", name: "Eve" });

    for (const target of [room, dm]) {
      expectError(await call("GET", `/v1/rooms/${target.id}`, { token: other.apiKey }), 404, "NOT_FOUND");
      expectError(
        await call("PATCH", `/v1/rooms/${target.id}`, { token: other.apiKey, body: { name: "Owned" } }),
        404,
        "NOT_FOUND",
      );
      expectError(
        await call("POST", `/v1/rooms/${target.id}/participants`, { token: other.apiKey, body: { accountId: eve.id } }),
        404,
        "NOT_FOUND",
      );
      expectError(
        await call("PATCH", `/v1/rooms/${target.id}/participants/${s.alice.id}`, {
          token: other.apiKey,
          body: { role: "observer" },
        }),
        404,
        "NOT_FOUND",
      );
      expectError(
        await call("DELETE", `/v1/rooms/${target.id}/participants/${s.bob.id}`, { token: other.apiKey }),
        404,
        "NOT_FOUND",
      );
    }

    // An account token of the other org is refused the same way.
    const eveToken = await accountToken(other.apiKey, eve.id);
    expectError(await call("GET", `/v1/rooms/${room.id}`, { token: eveToken }), 404, "NOT_FOUND");

    // Nothing changed.
    expect((await call("GET", `/v1/rooms/${room.id}`, { token: s.apiKey })).body).toEqual(room);
    expect((await call("GET", `/v1/rooms/${dm.id}`, { token: s.apiKey })).body).toEqual(dm);

    // The other org's lists never include them, whatever the filters.
    for (const path of [
      "/v1/rooms",
      "/v1/rooms?type=dm",
      "/v1/rooms?type=standard",
      `/v1/rooms?accountId=${s.alice.id}`,
      `/v1/rooms?accountId=${s.bob.id}&type=dm`,
    ]) {
      const list = await call("GET", path, { token: other.apiKey });
      expect(list.status, path).toBe(200);
      expect(list.body.items, path).toEqual([]);
    }
    const eveList = await call("GET", "/v1/rooms", { token: eveToken });
    expect(eveList.body.items).toEqual([]);

    // The same accounts are unknown in the other org, so it cannot reach the DM by naming them.
    expectError(
      await call("POST", "/v1/rooms", {
        token: other.apiKey,
        body: { type: "dm", participants: [{ accountId: s.alice.id }, { accountId: s.bob.id }] },
      }),
      400,
      "BAD_REQUEST",
    );
  });
});
