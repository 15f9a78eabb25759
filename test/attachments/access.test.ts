import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import {
  accountToken,
  call,
  createAccount,
  createFixture,
  createOrg,
  expectBadRequest,
  expectError,
  post,
} from "../helpers/api";
import { conversationTopic, createConversation, openRoom, request, sessionToken, subscribe } from "../helpers/realtime";
import { download, expectUploaded, pngBytes, randomBytes, uploadRaw } from "./helpers";

const visible = async (token: string, id: string) => (await call("GET", `/v1/attachments/${id}`, { token })).status;
const summary = (a: any) => ({ id: a.id, name: a.name, contentType: a.contentType, size: a.size });

async function history(token: string, conversationId: string) {
  const response = await call("GET", `/v1/conversations/${conversationId}/messages?limit=100`, { token });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body.items as any[];
}

/** A fixture with a second conversation in its room, and an attachment posted in each: `x` in the first, `y`. */
async function twoConversations() {
  const f = await createFixture();
  const second = await createConversation(f.apiKey, f.room.id);
  const x = expectUploaded(await uploadRaw(f.apiKey, randomBytes(64), { name: "x.bin" }));
  const y = expectUploaded(await uploadRaw(f.apiKey, randomBytes(64), { name: "y.bin" }));
  expect((await post(f.apiKey, f.conversation.id, { attachmentIds: [x.id], authorId: f.alice.id })).status).toBe(201);
  expect((await post(f.apiKey, second.id, { attachmentIds: [y.id], authorId: f.alice.id })).status).toBe(201);
  return { f, second, x, y };
}

describe("messages reference attachments", () => {
  it("of their own org only: another org's attachment is refused and invisible", async () => {
    const f = await createFixture();
    const other = await createOrg("Other");
    const theirs = expectUploaded(await uploadRaw(other.apiKey, randomBytes(100), { name: "secret.bin" }));
    const response = await post(f.apiKey, f.conversation.id, {
      text: "look",
      attachmentIds: [theirs.id],
      authorId: f.alice.id,
    });
    expectBadRequest(response, "attachmentIds.0");
    expect(await history(f.apiKey, f.conversation.id)).toEqual([]);
    expect(await visible(f.apiKey, theirs.id)).toBe(404);
    expectError(await call("DELETE", `/v1/attachments/${theirs.id}`, { token: f.apiKey }), 404, "NOT_FOUND");
    const aliceToken = await accountToken(f.apiKey, f.alice.id);
    expect(await visible(aliceToken, theirs.id)).toBe(404);
    // Still there for its own org.
    expect(await visible(other.apiKey, theirs.id)).toBe(200);
  });

  it("show in the post, its event and the history", async () => {
    const f = await createFixture();
    const photo = expectUploaded(await uploadRaw(f.apiKey, pngBytes(1000), { type: "image/png", name: "p.png" }));
    const doc = expectUploaded(await uploadRaw(f.apiKey, randomBytes(50), { type: "text/plain", name: "d.txt" }));
    const aliceToken = await accountToken(f.apiKey, f.alice.id);
    const socket = await openRoom(f.room.id, aliceToken);
    await subscribe(socket, conversationTopic(f.orgId, f.conversation.id));

    const posted = await post(f.apiKey, f.conversation.id, {
      text: "files",
      attachmentIds: [photo.id, doc.id, photo.id],
      authorId: f.alice.id,
    });
    expect(posted.status, JSON.stringify(posted.body)).toBe(201);
    expect(posted.body.attachments).toEqual([summary(photo), summary(doc)]);
    const event = await socket.waitLog((frame) => frame.type === "event");
    expect(event.event.data.attachments).toEqual([summary(photo), summary(doc)]);
    expect((await history(f.apiKey, f.conversation.id))[0].attachments).toEqual([summary(photo), summary(doc)]);

    // Over the room socket too, with the rules of REST.
    const ack = await request(socket, {
      type: "message.post",
      conversationId: f.conversation.id,
      attachmentIds: [photo.id],
    });
    expect(ack, JSON.stringify(ack)).toMatchObject({ type: "ack", message: { attachments: [summary(photo)] } });
    socket.close();
  });
});

describe("what a token sees", () => {
  it("an account token: its own uploads, and those referenced in rooms it takes part in", async () => {
    const f = await createFixture();
    const carol = await createAccount(f.apiKey, { type: "user", name: "Carol" });
    const [alice, bob, carolToken] = await Promise.all([
      accountToken(f.apiKey, f.alice.id),
      accountToken(f.apiKey, f.bob.id),
      accountToken(f.apiKey, carol.id),
    ]);
    const x = expectUploaded(await uploadRaw(alice, pngBytes(800), { type: "image/png", name: "x.png" }));
    expect(await visible(alice, x.id)).toBe(200);
    expect(await visible(f.apiKey, x.id)).toBe(200);
    expect(await visible(bob, x.id)).toBe(404);
    expect(await visible(carolToken, x.id)).toBe(404);

    // Bob cannot reference what he cannot see, and that refusal shares nothing.
    const refused = await post(bob, f.conversation.id, { text: "mine now", attachmentIds: [x.id] });
    expectBadRequest(refused, "attachmentIds.0");
    expect(await visible(bob, x.id)).toBe(404);
    // Carol is not in the room: her post is refused before anything is recorded.
    const carolUpload = expectUploaded(await uploadRaw(carolToken, randomBytes(10), { name: "c.bin" }));
    expectError(await post(carolToken, f.conversation.id, { attachmentIds: [carolUpload.id] }), 404, "NOT_FOUND");
    expect(await visible(bob, carolUpload.id)).toBe(404);

    const shared = await post(alice, f.conversation.id, { text: "see", attachmentIds: [x.id] });
    expect(shared.status, JSON.stringify(shared.body)).toBe(201);
    expect(await visible(bob, x.id)).toBe(200);
    expect(await visible(carolToken, x.id)).toBe(404);
    const got = await call("GET", `/v1/attachments/${x.id}`, { token: bob });
    expect((await download(got.body.url)).status).toBe(200);
    // Bob may now pass it on in the room; only its uploader (or an API key) deletes it.
    expect((await post(bob, f.conversation.id, { attachmentIds: [x.id] })).status).toBe(201);
    expectError(await call("DELETE", `/v1/attachments/${x.id}`, { token: bob }), 403, "FORBIDDEN");
    expectError(await call("DELETE", `/v1/attachments/${x.id}`, { token: carolToken }), 404, "NOT_FOUND");

    // Leaving the room ends the access.
    const removed = await call("DELETE", `/v1/rooms/${f.room.id}/participants/${f.bob.id}`, { token: f.apiKey });
    expect(removed.status).toBe(204);
    expect(await visible(bob, x.id)).toBe(404);
  });

  it("a session token: its own uploads in its conversation, and those referenced there", async () => {
    const { f, second, x, y } = await twoConversations();

    const here = await sessionToken(f.apiKey, f.conversation.id, f.bob.id);
    const there = await sessionToken(f.apiKey, second.id, f.bob.id);
    expect(await visible(here, x.id)).toBe(200);
    expect(await visible(here, y.id)).toBe(404);
    expect(await visible(there, y.id)).toBe(200);
    expect(await visible(there, x.id)).toBe(404);

    const mine = expectUploaded(await uploadRaw(here, randomBytes(64), { name: "mine.bin" }));
    expect(await visible(here, mine.id)).toBe(200);
    expect(await visible(there, mine.id)).toBe(404);
    expect(await visible(await accountToken(f.apiKey, f.bob.id), mine.id)).toBe(200);
    expectBadRequest(await post(there, second.id, { attachmentIds: [mine.id] }), "attachmentIds.0");
    expectBadRequest(await post(here, f.conversation.id, { attachmentIds: [y.id] }), "attachmentIds.0");
    expect((await post(here, f.conversation.id, { attachmentIds: [mine.id] })).status).toBe(201);
    expect(await visible(await sessionToken(f.apiKey, f.conversation.id, f.alice.id), mine.id)).toBe(200);
    expectError(await call("DELETE", `/v1/attachments/${mine.id}`, { token: there }), 404, "NOT_FOUND");
    expectError(await call("DELETE", `/v1/attachments/${x.id}`, { token: here }), 403, "FORBIDDEN");
    expect((await call("DELETE", `/v1/attachments/${mine.id}`, { token: here })).status).toBe(204);
  });
});

describe("a session that lost its scope", () => {
  it("sees and uploads nothing once its participant left the room or its conversation was deleted", async () => {
    const { f, second, x, y } = await twoConversations();
    const removed = await sessionToken(f.apiKey, f.conversation.id, f.bob.id);
    const ofDeleted = await sessionToken(f.apiKey, second.id, f.alice.id);
    const own = expectUploaded(await uploadRaw(removed, randomBytes(64), { name: "own.bin" }));
    expect(await visible(removed, x.id)).toBe(200);
    expect(await visible(removed, own.id)).toBe(200);
    expect(await visible(ofDeleted, y.id)).toBe(200);

    expect((await call("DELETE", `/v1/rooms/${f.room.id}/participants/${f.bob.id}`, { token: f.apiKey })).status).toBe(
      204,
    );
    expect((await call("DELETE", `/v1/conversations/${second.id}`, { token: f.apiKey })).status).toBe(204);
    // Attachments posted after the removal, too.
    const later = expectUploaded(await uploadRaw(f.apiKey, randomBytes(64), { name: "later.bin" }));
    expect((await post(f.apiKey, f.conversation.id, { attachmentIds: [later.id], authorId: f.alice.id })).status).toBe(
      201,
    );
    for (const id of [x.id, own.id, later.id]) expect(await visible(removed, id)).toBe(404);
    expect(await visible(ofDeleted, y.id)).toBe(404);
    for (const token of [removed, ofDeleted]) {
      expectError(await uploadRaw(token, randomBytes(64), { name: "no.bin" }), 403, "FORBIDDEN");
    }
    // The API key still sees them all.
    for (const id of [x.id, y.id, own.id, later.id]) expect(await visible(f.apiKey, id)).toBe(200);
  });
});

describe("DELETE /v1/attachments/{id}", () => {
  it("removes the bytes and the row; messages show it as deleted; its URLs stop working", async () => {
    const f = await createFixture();
    const alice = await accountToken(f.apiKey, f.alice.id);
    const gone = expectUploaded(await uploadRaw(alice, pngBytes(500), { type: "image/png", name: "gone.png" }));
    const kept = expectUploaded(await uploadRaw(alice, randomBytes(50), { name: "kept.bin" }));
    const first = await post(alice, f.conversation.id, { text: "both", attachmentIds: [gone.id, kept.id] });
    const plain = await post(alice, f.conversation.id, { text: "none" });
    expect(first.status).toBe(201);
    expect(plain.status).toBe(201);

    const deleted = await call("DELETE", `/v1/attachments/${gone.id}`, { token: alice });
    expect(deleted.status).toBe(204);
    expect(await env.ATTACHMENTS.head(`attachments/${gone.id}`)).toBeNull();
    expect(await env.DB.prepare("SELECT id FROM attachments WHERE id = ?").bind(gone.id).first()).toBeNull();
    expect(
      await env.DB.prepare("SELECT * FROM attachment_refs WHERE attachment_id = ?").bind(gone.id).all(),
    ).toMatchObject({ results: [] });
    expect((await download(gone.url)).status).toBe(404);
    expect(await visible(f.apiKey, gone.id)).toBe(404);
    expectError(await call("DELETE", `/v1/attachments/${gone.id}`, { token: alice }), 404, "NOT_FOUND");

    const items = await history(f.apiKey, f.conversation.id);
    expect(items[0].attachments).toEqual([{ ...summary(gone), deleted: true }, summary(kept)]);
    expect(items[1]).toEqual(plain.body);
    expect((await download(kept.url)).status).toBe(200);
    expectBadRequest(await post(alice, f.conversation.id, { attachmentIds: [gone.id] }), "attachmentIds.0");
  });
});
