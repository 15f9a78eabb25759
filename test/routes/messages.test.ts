import { describe, expect, it } from "vitest";
import {
  accountToken,
  call,
  createAccount,
  createFixture,
  createOrg,
  env,
  expectBadRequest,
  expectError,
  post,
} from "../helpers/api";

// Contract sections 1 and 6: posting messages and reading a conversation's ordered history.

type Fixture = Awaited<ReturnType<typeof createFixture>>;

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

function messagesPath(conversationId: string, query = "") {
  return `/v1/conversations/${conversationId}/messages${query ? `?${query}` : ""}`;
}

/** A page of history, asserting the read itself succeeded. */
async function history(token: string, conversationId: string, query = "") {
  const response = await call("GET", messagesPath(conversationId, query), { token });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  expect(Array.isArray(response.body.items)).toBe(true);
  expect(typeof response.body.hasMore).toBe("boolean");
  return response.body as { items: any[]; hasMore: boolean };
}

const seqs = (items: any[]) => items.map((m) => m.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A random id with a contract prefix, never issued by the service. */
function unknownId(prefix: string) {
  return `${prefix}_${crypto.randomUUID().replace(/-/g, "")}`;
}

/** Stores an attachment's metadata the way the attachments API records it (the bytes are not needed to reference it). */
async function seedAttachment(orgId: string, name = "photo.png", contentType = "image/png", size = 1234) {
  const id = unknownId("att");
  await env.DB.prepare(
    `INSERT INTO attachments (id, org_id, name, content_type, size, sha256, object_key, created_by, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)`,
  )
    .bind(id, orgId, name, contentType, size, "0".repeat(64), `${orgId}/${id}`, new Date().toISOString())
    .run();
  return { id, name, contentType, size };
}

/** Adds an account to the fixture's room with a role. */
async function addParticipant(f: Fixture, accountId: string, extra: Record<string, unknown> = {}) {
  const response = await call("POST", `/v1/rooms/${f.room.id}/participants`, {
    token: f.apiKey,
    body: { accountId, ...extra },
  });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
}

async function messageCount(f: Fixture, conversationId = f.conversation.id) {
  return (await history(f.apiKey, conversationId, "limit=100")).items.length;
}

describe("POST /v1/conversations/{id}/messages", () => {
  it("answers 201 with the contract's Message for a text post", async () => {
    const f = await createFixture();
    const r = await post(f.apiKey, f.conversation.id, { text: "hello", authorId: f.alice.id });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.headers.get("x-request-id")).toBeTruthy();
    expect(r.body).toEqual({
      id: expect.stringMatching(/^msg_[0-9a-z]+$/),
      orgId: f.orgId,
      roomId: f.room.id,
      conversationId: f.conversation.id,
      seq: 1,
      authorId: f.alice.id,
      type: "user",
      text: "hello",
      data: null,
      attachments: [],
      clientMessageId: null,
      createdAt: expect.stringMatching(ISO),
    });
    expect(Math.abs(Date.parse(r.body.createdAt) - Date.now())).toBeLessThan(60_000);

    const second = await post(f.apiKey, f.conversation.id, { text: "again", authorId: f.bob.id });
    expect(second.status).toBe(201);
    expect(second.body.seq).toBe(2);
    expect(second.body.id).not.toBe(r.body.id);
    expect(second.body.authorId).toBe(f.bob.id);
  });

  it("carries data and attachments, alone or together", async () => {
    const f = await createFixture();
    const dataOnly = await post(f.apiKey, f.conversation.id, {
      data: { kind: "card", nested: { n: 1, list: [1, "two", null, true] } },
      authorId: f.alice.id,
    });
    expect(dataOnly.status, JSON.stringify(dataOnly.body)).toBe(201);
    expect(dataOnly.body.text).toBeNull();
    expect(dataOnly.body.data).toEqual({ kind: "card", nested: { n: 1, list: [1, "two", null, true] } });
    expect(dataOnly.body.attachments).toEqual([]);

    const photo = await seedAttachment(f.orgId, "photo.png", "image/png", 1234);
    const doc = await seedAttachment(f.orgId, "notes.txt", "text/plain", 42);
    const withFiles = await post(f.apiKey, f.conversation.id, {
      attachmentIds: [photo.id, doc.id],
      authorId: f.alice.id,
    });
    expect(withFiles.status, JSON.stringify(withFiles.body)).toBe(201);
    expect(withFiles.body.text).toBeNull();
    expect(withFiles.body.data).toBeNull();
    expect(withFiles.body.attachments).toEqual([photo, doc]);

    const all = await post(f.apiKey, f.conversation.id, {
      text: "see attached",
      data: { ok: true },
      attachmentIds: [doc.id],
      clientMessageId: "client-1",
      authorId: f.bob.id,
    });
    expect(all.status, JSON.stringify(all.body)).toBe(201);
    expect(all.body).toMatchObject({
      seq: 3,
      text: "see attached",
      data: { ok: true },
      attachments: [doc],
      clientMessageId: "client-1",
      authorId: f.bob.id,
    });

    // History answers the same messages, field for field.
    const page = await history(f.apiKey, f.conversation.id);
    expect(page.items).toEqual([dataOnly.body, withFiles.body, all.body]);
  });

  it("types a message bot when its author is an agent account", async () => {
    const f = await createFixture();
    const agent = await createAccount(f.apiKey, { type: "agent", name: "Helper", agent: { flow: { onMessage: [] } } });
    await addParticipant(f, agent.id, { autoRespond: false });
    const r = await post(f.apiKey, f.conversation.id, { text: "beep", authorId: agent.id });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.type).toBe("bot");
    expect(r.body.authorId).toBe(agent.id);

    const token = await accountToken(f.apiKey, agent.id);
    const viaToken = await call("POST", messagesPath(f.conversation.id), { token, body: { text: "boop" } });
    expect(viaToken.status, JSON.stringify(viaToken.body)).toBe(201);
    expect(viaToken.body.type).toBe("bot");

    const user = await post(f.apiKey, f.conversation.id, { text: "human", authorId: f.alice.id });
    expect(user.body.type).toBe("user");
    expect((await history(f.apiKey, f.conversation.id)).items.map((m) => m.type)).toEqual(["bot", "bot", "user"]);
  });

  it("posts as the token's account with an account or session token", async () => {
    const f = await createFixture();
    const token = await accountToken(f.apiKey, f.bob.id);
    const implicit = await call("POST", messagesPath(f.conversation.id), { token, body: { text: "from bob" } });
    expect(implicit.status, JSON.stringify(implicit.body)).toBe(201);
    expect(implicit.body.authorId).toBe(f.bob.id);

    const explicit = await call("POST", messagesPath(f.conversation.id), {
      token,
      body: { text: "still bob", authorId: f.bob.id },
    });
    expect(explicit.status, JSON.stringify(explicit.body)).toBe(201);
    expect(explicit.body.authorId).toBe(f.bob.id);

    const session = await call("POST", `/v1/conversations/${f.conversation.id}/sessions`, {
      token: f.apiKey,
      body: { accountId: f.alice.id },
    });
    expect(session.status, JSON.stringify(session.body)).toBe(201);
    const viaSession = await call("POST", messagesPath(f.conversation.id), {
      token: session.body.token,
      body: { text: "from alice's browser" },
    });
    expect(viaSession.status, JSON.stringify(viaSession.body)).toBe(201);
    expect(viaSession.body.authorId).toBe(f.alice.id);
    expect(viaSession.body.seq).toBe(3);
  });

  describe("validation", () => {
    it("requires at least one of text, data and attachmentIds", async () => {
      const f = await createFixture();
      expectBadRequest(await post(f.apiKey, f.conversation.id, { authorId: f.alice.id }));
      expectBadRequest(await post(f.apiKey, f.conversation.id, { clientMessageId: "x", authorId: f.alice.id }));
      const token = await accountToken(f.apiKey, f.alice.id);
      expectBadRequest(await call("POST", messagesPath(f.conversation.id), { token, body: {} }));
      expect(await messageCount(f)).toBe(0);
    });

    it("accepts text of 1..32768 characters and refuses longer or empty text", async () => {
      const f = await createFixture();
      const max = await post(f.apiKey, f.conversation.id, { text: "a".repeat(32768), authorId: f.alice.id });
      expect(max.status, JSON.stringify(max.body).slice(0, 500)).toBe(201);
      expect(max.body.text).toHaveLength(32768);

      // Characters, not bytes: 32768 characters outside ASCII are still within the limit.
      const wide = await post(f.apiKey, f.conversation.id, { text: "é".repeat(32768), authorId: f.alice.id });
      expect(wide.status, JSON.stringify(wide.body).slice(0, 500)).toBe(201);

      expectBadRequest(
        await post(f.apiKey, f.conversation.id, { text: "a".repeat(32769), authorId: f.alice.id }),
        "text",
      );
      expectBadRequest(await post(f.apiKey, f.conversation.id, { text: "", authorId: f.alice.id }), "text");
      expect(await messageCount(f)).toBe(2);
      const stored = (await history(f.apiKey, f.conversation.id)).items[0];
      expect(stored.text).toBe("a".repeat(32768));
    });

    it("accepts data up to 16 KiB serialised and refuses more", async () => {
      const f = await createFixture();
      // {"s":"..."} is 8 bytes of JSON around the string.
      const atLimit = { s: "x".repeat(16 * 1024 - 8) };
      expect(new TextEncoder().encode(JSON.stringify(atLimit)).byteLength).toBe(16 * 1024);
      const ok = await post(f.apiKey, f.conversation.id, { data: atLimit, authorId: f.alice.id });
      expect(ok.status, JSON.stringify(ok.body).slice(0, 500)).toBe(201);
      expect(ok.body.data).toEqual(atLimit);

      const overByOne = { s: "x".repeat(16 * 1024 - 7) };
      expectBadRequest(await post(f.apiKey, f.conversation.id, { data: overByOne, authorId: f.alice.id }), "data");
      // Bytes, not characters: 6000 three-byte characters are 18 KB of JSON.
      const wide = { s: "€".repeat(6000) };
      expectBadRequest(await post(f.apiKey, f.conversation.id, { data: wide, authorId: f.alice.id }), "data");
      expect(await messageCount(f)).toBe(1);
    });

    it("refuses data that is not a JSON object", async () => {
      const f = await createFixture();
      for (const data of [[1, 2, 3], "text", 42, true, null]) {
        const r = await post(f.apiKey, f.conversation.id, { data, text: "with bad data", authorId: f.alice.id });
        expectBadRequest(r, "data");
      }
      expect(await messageCount(f)).toBe(0);
    });

    it("refuses data nested deeper than 64 levels with 400, and keeps a key named __proto__", async () => {
      const f = await createFixture();
      const nested = (levels: number) => `${"[".repeat(levels - 1)}${"]".repeat(levels - 1)}`;
      // {"a": ...} is the first level; 63 arrays inside it make 64.
      const atLimit = await call("POST", messagesPath(f.conversation.id), {
        token: f.apiKey,
        body: `{"authorId":"${f.alice.id}","data":{"a":${nested(64)}}}`,
      });
      expect(atLimit.status, JSON.stringify(atLimit.body)).toBe(201);
      // Small enough for the size limit, deep enough to break a structured clone: before, a 500.
      for (const levels of [65, 3000]) {
        const deep = await call("POST", messagesPath(f.conversation.id), {
          token: f.apiKey,
          body: `{"authorId":"${f.alice.id}","data":{"a":${nested(levels)}}}`,
        });
        expectBadRequest(deep, "data");
        expect(deep.body.error.details[0].message).toMatch(/64 levels/);
      }
      const proto = await call("POST", messagesPath(f.conversation.id), {
        token: f.apiKey,
        body: `{"authorId":"${f.alice.id}","data":{"__proto__":{"polluted":1},"b":2}}`,
      });
      expect(proto.status, JSON.stringify(proto.body)).toBe(201);
      expect(Object.getPrototypeOf(proto.body.data)).toBe(Object.prototype);
      expect(Object.keys(proto.body.data)).toEqual(["__proto__", "b"]);
      const stored = (await history(f.apiKey, f.conversation.id)).items.at(-1);
      expect(Object.keys(stored.data)).toEqual(["__proto__", "b"]);
      expect(Object.hasOwn(stored.data, "__proto__")).toBe(true);
      expect(await messageCount(f)).toBe(2);
    });

    it("stores text with a lone surrogate as it answers it (U+FFFD), and takes the longest text however escaped", async () => {
      const f = await createFixture();
      const lone = await call("POST", messagesPath(f.conversation.id), {
        token: f.apiKey,
        body: `{"authorId":"${f.alice.id}","text":"a\\ud800b \\ud83d\\ude00","data":{"k\\udc00":"v"}}`,
      });
      expect(lone.status, JSON.stringify(lone.body)).toBe(201);
      expect(lone.body.text).toBe("a\ufffdb 😀");
      expect(lone.body.data).toEqual({ "k\ufffd": "v" });
      const stored = (await history(f.apiKey, f.conversation.id)).items[0];
      expect(stored.text).toBe(lone.body.text);
      expect(stored.data).toEqual(lone.body.data);

      // 32,768 astral characters, each escaped as a surrogate pair (12 bytes), as some JSON encoders send them.
      const escaped = `{"authorId":"${f.alice.id}","text":"${"\\ud83d\\ude00".repeat(32768)}"}`;
      expect(escaped.length).toBeGreaterThan(256 * 1024);
      const longest = await call("POST", messagesPath(f.conversation.id), { token: f.apiKey, body: escaped });
      expect(longest.status, JSON.stringify(longest.body).slice(0, 300)).toBe(201);
      expect([...longest.body.text]).toHaveLength(32768);
    });

    it("accepts a clientMessageId of 1..128 characters and refuses longer or empty ones", async () => {
      const f = await createFixture();
      const ok = await post(f.apiKey, f.conversation.id, {
        text: "hi",
        clientMessageId: "c".repeat(128),
        authorId: f.alice.id,
      });
      expect(ok.status, JSON.stringify(ok.body)).toBe(201);
      expect(ok.body.clientMessageId).toBe("c".repeat(128));
      expectBadRequest(
        await post(f.apiKey, f.conversation.id, { text: "hi", clientMessageId: "c".repeat(129), authorId: f.alice.id }),
        "clientMessageId",
      );
      expectBadRequest(
        await post(f.apiKey, f.conversation.id, { text: "hi", clientMessageId: "", authorId: f.alice.id }),
        "clientMessageId",
      );
      // The form of flow steps' own ids is reserved: a post taking one would stand in for an agent's reply.
      expectBadRequest(
        await post(f.apiKey, f.conversation.id, {
          text: "hi",
          clientMessageId: "run_01jd0000000000000000000000.1",
          authorId: f.alice.id,
        }),
        "clientMessageId",
      );
      expect(await messageCount(f)).toBe(1);
    });

    it("refuses attachment ids that are unknown or belong to another org, naming each one", async () => {
      const f = await createFixture();
      const mine = await seedAttachment(f.orgId);
      const other = await createOrg("Other");
      const theirs = await seedAttachment(other.orgId);

      const unknown = await post(f.apiKey, f.conversation.id, {
        text: "see file",
        attachmentIds: [mine.id, unknownId("att")],
        authorId: f.alice.id,
      });
      expectBadRequest(unknown, "attachmentIds.1");
      expect(unknown.body.error.details.map((d: any) => d.path)).not.toContain("attachmentIds.0");

      const foreign = await post(f.apiKey, f.conversation.id, {
        attachmentIds: [theirs.id],
        authorId: f.alice.id,
      });
      expectBadRequest(foreign, "attachmentIds.0");

      expectBadRequest(
        await post(f.apiKey, f.conversation.id, { attachmentIds: ["not-an-id"], authorId: f.alice.id }),
        "attachmentIds.0",
      );
      expect(await messageCount(f)).toBe(0);
    });

    it("requires authorId with an API key, and the author must be a participant", async () => {
      const f = await createFixture();
      expectBadRequest(await post(f.apiKey, f.conversation.id, { text: "who am I" }), "authorId");

      const outsider = await createAccount(f.apiKey, { type: "user", name: "Dave" });
      expectError(
        await post(f.apiKey, f.conversation.id, { text: "let me in", authorId: outsider.id }),
        403,
        "FORBIDDEN",
      );
      expectError(
        await post(f.apiKey, f.conversation.id, { text: "ghost", authorId: unknownId("acc") }),
        403,
        "FORBIDDEN",
      );
      expect(await messageCount(f)).toBe(0);
    });

    it("refuses observers as authors", async () => {
      const f = await createFixture();
      const carol = await createAccount(f.apiKey, { type: "user", name: "Carol" });
      await addParticipant(f, carol.id, { role: "observer" });

      expectError(await post(f.apiKey, f.conversation.id, { text: "hi", authorId: carol.id }), 403, "FORBIDDEN");
      const token = await accountToken(f.apiKey, carol.id);
      expectError(
        await call("POST", messagesPath(f.conversation.id), { token, body: { text: "hi" } }),
        403,
        "FORBIDDEN",
      );
      // An observer still reads.
      const page = await call("GET", messagesPath(f.conversation.id), { token });
      expect(page.status).toBe(200);
      expect(page.body.items).toEqual([]);
    });

    it("refuses an account token posting as another account", async () => {
      const f = await createFixture();
      const token = await accountToken(f.apiKey, f.bob.id);
      expectError(
        await call("POST", messagesPath(f.conversation.id), {
          token,
          body: { text: "I am alice", authorId: f.alice.id },
        }),
        403,
        "FORBIDDEN",
      );
      expect(await messageCount(f)).toBe(0);
    });
  });

  describe("ordering", () => {
    it("numbers 20 concurrent posts 1..20 without gaps, and history answers them in that order", async () => {
      const f = await createFixture();
      const token = await accountToken(f.apiKey, f.bob.id);
      const responses = await Promise.all(
        range(1, 20).map((i) =>
          i % 2 === 0
            ? post(f.apiKey, f.conversation.id, { text: `m${i}`, authorId: f.alice.id })
            : call("POST", messagesPath(f.conversation.id), { token, body: { text: `m${i}` } }),
        ),
      );
      for (const r of responses) expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(responses.map((r) => r.body.seq).sort((a, b) => a - b)).toEqual(range(1, 20));
      expect(new Set(responses.map((r) => r.body.id)).size).toBe(20);

      const page = await history(f.apiKey, f.conversation.id, "limit=100");
      expect(seqs(page.items)).toEqual(range(1, 20));
      expect(page.hasMore).toBe(false);
      const bySeq = new Map(responses.map((r) => [r.body.seq, r.body]));
      for (const item of page.items) expect(item).toEqual(bySeq.get(item.seq));
    });
  });

  describe("idempotency (clientMessageId)", () => {
    it("answers a retry 200 with the original message and posts nothing new", async () => {
      const f = await createFixture();
      const first = await post(f.apiKey, f.conversation.id, {
        text: "once",
        clientMessageId: "retry-me",
        authorId: f.alice.id,
      });
      expect(first.status, JSON.stringify(first.body)).toBe(201);
      expect(first.body.clientMessageId).toBe("retry-me");

      const retry = await post(f.apiKey, f.conversation.id, {
        text: "once",
        clientMessageId: "retry-me",
        authorId: f.alice.id,
      });
      expect(retry.status, JSON.stringify(retry.body)).toBe(200);
      expect(retry.body).toEqual(first.body);

      // A retry whose body changed in flight still answers the original.
      const changed = await post(f.apiKey, f.conversation.id, {
        text: "twice?",
        clientMessageId: "retry-me",
        authorId: f.alice.id,
      });
      expect(changed.status).toBe(200);
      expect(changed.body).toEqual(first.body);

      const page = await history(f.apiKey, f.conversation.id);
      expect(page.items).toEqual([first.body]);

      // The next new message takes the next seq: the retries consumed none.
      const next = await post(f.apiKey, f.conversation.id, { text: "next", authorId: f.alice.id });
      expect(next.status).toBe(201);
      expect(next.body.seq).toBe(2);
    });

    it("answers a retry through an account token with the original message", async () => {
      const f = await createFixture();
      const token = await accountToken(f.apiKey, f.bob.id);
      const body = { text: "from my phone", clientMessageId: "phone-1" };
      const first = await call("POST", messagesPath(f.conversation.id), { token, body });
      expect(first.status).toBe(201);
      const retry = await call("POST", messagesPath(f.conversation.id), { token, body });
      expect(retry.status).toBe(200);
      expect(retry.body).toEqual(first.body);
      expect(await messageCount(f)).toBe(1);
    });

    it("creates exactly one message when 10 posts with the same clientMessageId race", async () => {
      const f = await createFixture();
      const responses = await Promise.all(
        range(1, 10).map(() =>
          post(f.apiKey, f.conversation.id, { text: "racing", clientMessageId: "race-1", authorId: f.alice.id }),
        ),
      );
      const statuses = responses.map((r) => r.status).sort();
      expect(statuses, JSON.stringify(responses.map((r) => r.body))).toEqual([
        200, 200, 200, 200, 200, 200, 200, 200, 200, 201,
      ]);
      const original = responses.find((r) => r.status === 201)!.body;
      for (const r of responses) expect(r.body).toEqual(original);
      expect(original.seq).toBe(1);

      const page = await history(f.apiKey, f.conversation.id);
      expect(page.items).toEqual([original]);
    });

    it("treats the same clientMessageId in another conversation as a new message", async () => {
      const f = await createFixture();
      const other = await call("POST", `/v1/rooms/${f.room.id}/conversations`, {
        token: f.apiKey,
        body: { name: "Other" },
      });
      expect(other.status).toBe(201);

      const a = await post(f.apiKey, f.conversation.id, { text: "a", clientMessageId: "shared", authorId: f.alice.id });
      const b = await post(f.apiKey, other.body.id, { text: "b", clientMessageId: "shared", authorId: f.alice.id });
      expect(a.status).toBe(201);
      expect(b.status, JSON.stringify(b.body)).toBe(201);
      expect(b.body.id).not.toBe(a.body.id);
      expect(b.body.conversationId).toBe(other.body.id);
      expect(b.body.seq).toBe(1);
      expect(b.body.text).toBe("b");

      expect((await history(f.apiKey, f.conversation.id)).items).toEqual([a.body]);
      expect((await history(f.apiKey, other.body.id)).items).toEqual([b.body]);
    });
  });
});

describe("GET /v1/conversations/{id}/messages", () => {
  async function withMessages(count: number) {
    const f = await createFixture();
    const posted: any[] = [];
    for (let i = 1; i <= count; i++) {
      const r = await post(f.apiKey, f.conversation.id, { text: `message ${i}`, authorId: f.alice.id });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(r.body.seq).toBe(i);
      posted.push(r.body);
    }
    return { f, posted };
  }

  it("pages 25 messages by afterSeq, beforeSeq and limit, always ascending", async () => {
    const { f, posted } = await withMessages(25);
    const read = (query: string) => history(f.apiKey, f.conversation.id, query);

    const latest = await read("");
    expect(seqs(latest.items)).toEqual(range(6, 25));
    expect(latest.hasMore).toBe(true);
    expect(latest.items).toEqual(posted.slice(5));
    expect(latest.items.map((m) => m.text)).toEqual(range(6, 25).map((i) => `message ${i}`));

    const lastFive = await read("limit=5");
    expect(seqs(lastFive.items)).toEqual(range(21, 25));
    expect(lastFive.hasMore).toBe(true);

    const forward = await read("afterSeq=10&limit=5");
    expect(seqs(forward.items)).toEqual(range(11, 15));
    expect(forward.hasMore).toBe(true);

    const forwardToEnd = await read("afterSeq=20");
    expect(seqs(forwardToEnd.items)).toEqual(range(21, 25));
    expect(forwardToEnd.hasMore).toBe(false);

    const fromStart = await read("afterSeq=0");
    expect(seqs(fromStart.items)).toEqual(range(1, 20));
    expect(fromStart.hasMore).toBe(true);

    const pastEnd = await read("afterSeq=25");
    expect(pastEnd.items).toEqual([]);
    expect(pastEnd.hasMore).toBe(false);

    const backwardToStart = await read("beforeSeq=6");
    expect(seqs(backwardToStart.items)).toEqual(range(1, 5));
    expect(backwardToStart.hasMore).toBe(false);

    const backward = await read("beforeSeq=11&limit=5");
    expect(seqs(backward.items)).toEqual(range(6, 10));
    expect(backward.hasMore).toBe(true);

    const between = await read("afterSeq=5&beforeSeq=9");
    expect(seqs(between.items)).toEqual([6, 7, 8]);

    const betweenLimited = await read("afterSeq=5&beforeSeq=20&limit=3");
    expect(seqs(betweenLimited.items)).toEqual([6, 7, 8]);
    expect(betweenLimited.hasMore).toBe(true);

    const everything = await read("limit=100");
    expect(seqs(everything.items)).toEqual(range(1, 25));
    expect(everything.hasMore).toBe(false);
    expect(everything.items).toEqual(posted);

    const exact = await read("limit=25");
    expect(seqs(exact.items)).toEqual(range(1, 25));
    expect(exact.hasMore).toBe(false);
  });

  it("walks the whole history forward and backward with hasMore", async () => {
    const { f, posted } = await withMessages(25);

    const forward: any[] = [];
    let after = 0;
    for (let pages = 0; pages < 10; pages++) {
      const page = await history(f.apiKey, f.conversation.id, `afterSeq=${after}&limit=7`);
      forward.push(...page.items);
      if (!page.hasMore) break;
      after = page.items[page.items.length - 1].seq;
    }
    expect(forward).toEqual(posted);

    const backward: any[] = [];
    let page = await history(f.apiKey, f.conversation.id, "limit=7");
    backward.unshift(...page.items);
    for (let pages = 0; pages < 10 && page.hasMore; pages++) {
      page = await history(f.apiKey, f.conversation.id, `beforeSeq=${page.items[0].seq}&limit=7`);
      backward.unshift(...page.items);
    }
    expect(backward).toEqual(posted);
  });

  it("answers an empty page for a conversation without messages", async () => {
    const f = await createFixture();
    expect(await history(f.apiKey, f.conversation.id)).toEqual({ items: [], hasMore: false });
    expect(await history(f.apiKey, f.conversation.id, "beforeSeq=5")).toEqual({ items: [], hasMore: false });
    expect(await history(f.apiKey, f.conversation.id, "afterSeq=5")).toEqual({ items: [], hasMore: false });
  });

  it("refuses a bad query with 400 and details", async () => {
    const f = await createFixture();
    await post(f.apiKey, f.conversation.id, { text: "one", authorId: f.alice.id });
    const cases: [string, string][] = [
      ["limit=0", "limit"],
      ["limit=101", "limit"],
      ["limit=abc", "limit"],
      ["limit=2.5", "limit"],
      ["afterSeq=-1", "afterSeq"],
      ["afterSeq=x", "afterSeq"],
      ["beforeSeq=abc", "beforeSeq"],
      ["beforeSeq=-3", "beforeSeq"],
    ];
    for (const [query, path] of cases) {
      const r = await call("GET", messagesPath(f.conversation.id, query), { token: f.apiKey });
      expectBadRequest(r, path);
    }
  });

  it("shows every acknowledged message in the very next read (read-your-writes)", async () => {
    const f = await createFixture();
    const bobToken = await accountToken(f.apiKey, f.bob.id);
    for (let i = 1; i <= 15; i++) {
      const r =
        i % 2 === 0
          ? await post(f.apiKey, f.conversation.id, { text: `w${i}`, authorId: f.alice.id })
          : await call("POST", messagesPath(f.conversation.id), { token: bobToken, body: { text: `w${i}` } });
      expect(r.status, JSON.stringify(r.body)).toBe(201);

      const latest = await history(bobToken, f.conversation.id);
      expect(latest.items[latest.items.length - 1]).toEqual(r.body);
      expect(latest.items).toHaveLength(i);

      const after = await history(f.apiKey, f.conversation.id, `afterSeq=${r.body.seq - 1}`);
      expect(after.items).toEqual([r.body]);
      expect(after.hasMore).toBe(false);
    }

    // The same holds across concurrent writers.
    const burst = await Promise.all(
      range(1, 8).map((i) => post(f.apiKey, f.conversation.id, { text: `b${i}`, authorId: f.alice.id })),
    );
    const page = await history(f.apiKey, f.conversation.id, "limit=100");
    const ids = new Set(page.items.map((m) => m.id));
    for (const r of burst) expect(ids.has(r.body.id)).toBe(true);
    expect(seqs(page.items)).toEqual(range(1, 23));
  });

  it("is 404 for a conversation of another org", async () => {
    const f = await createFixture();
    await post(f.apiKey, f.conversation.id, { text: "secret", authorId: f.alice.id });
    const other = await createOrg("Other");
    expectError(await call("GET", messagesPath(f.conversation.id), { token: other.apiKey }), 404, "NOT_FOUND");
    expectError(
      await post(other.apiKey, f.conversation.id, { text: "intrude", authorId: f.alice.id }),
      404,
      "NOT_FOUND",
    );
    expect(await messageCount(f)).toBe(1);
  });
});
