import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { PostResult, Room } from "../../src/room/room";
import type { Result } from "../../src/errors";
import { accountToken, createFixture } from "../helpers/api";
import { conversationTopic, openRoom, seqsOf } from "../helpers/realtime";
import { POSTS_PER_COMMIT } from "../../src/room/post-batch";

/** A room object, in its isolate, with a way to post as Alice and to read what its storage holds. */
async function inRoom(test: (ctx: RoomContext) => Promise<void>): Promise<void> {
  const f = await createFixture();
  const stub = env.ROOMS.get(env.ROOMS.idFromName(f.room.id));
  await runInDurableObject(stub, async (room: Room, state: DurableObjectState) => {
    const actor = { orgId: f.orgId };
    await test({
      room,
      state,
      actor,
      conversationId: f.conversation.id,
      post: (text, clientMessageId) =>
        room.postMessage(actor, f.conversation.id, { authorId: f.alice.id, text, attachments: [], clientMessageId }),
      stored: () =>
        state.storage.sql
          .exec<{ seq: number; text: string }>(
            "SELECT seq, text FROM messages WHERE conversation_id = ? ORDER BY seq",
            f.conversation.id,
          )
          .toArray()
          .map((row) => `${row.seq}:${row.text}`),
    });
  });
}

interface RoomContext {
  room: Room;
  state: DurableObjectState;
  actor: { orgId: string };
  conversationId: string;
  post(text: string, clientMessageId?: string): Promise<Result<PostResult>>;
  stored(): string[];
}

function posted(result: Result<PostResult>): PostResult {
  if (!result.ok) throw new Error(JSON.stringify(result.error));
  return result.value;
}

describe("the room's group commit of posts", () => {
  it("commits the posts of one moment together in the next turn, in order, each answered with its message", async () => {
    await inRoom(async ({ post, stored }) => {
      const posts = [post("a"), post("b"), post("c")];
      expect(stored()).toEqual([]); // the sends go first; the commit waits for the next turn
      const results = (await Promise.all(posts)).map(posted);
      expect(stored()).toEqual(["1:a", "2:b", "3:c"]);
      expect(results.map((r) => [r.message.seq, r.message.text, r.created])).toEqual([
        [1, "a", true],
        [2, "b", true],
        [3, "c", true],
      ]);
      expect(results.map((r) => r.conversation.conversation.messageCount)).toEqual([1, 2, 3]);

      // A later moment: a commit of its own, after the first.
      const later = post("d");
      expect(stored()).toEqual(["1:a", "2:b", "3:c"]);
      expect(posted(await later).message.seq).toBe(4);
    });
  });

  it("commits at once when a moment brings the most posts one commit takes", async () => {
    await inRoom(async ({ post, stored }) => {
      const posts = Array.from({ length: POSTS_PER_COMMIT + 1 }, (_, i) => post(`m${i + 1}`));
      expect(stored()).toHaveLength(POSTS_PER_COMMIT);
      const seqs = (await Promise.all(posts)).map((result) => posted(result).message.seq);
      expect(seqs).toEqual(Array.from({ length: POSTS_PER_COMMIT + 1 }, (_, i) => i + 1));
      expect(stored()).toHaveLength(POSTS_PER_COMMIT + 1);
    });
  });

  it("commits the waiting posts before a read of the history, and before any other write", async () => {
    await inRoom(async ({ room, actor, conversationId, post, stored }) => {
      await post("a");
      const waiting = post("b");
      const page = await room.listMessages(actor, conversationId, { limit: 10 });
      expect(page.ok && page.value.items.map((m) => `${m.seq}:${m.text}`)).toEqual(["1:a", "2:b"]);
      expect(posted(await waiting).message.seq).toBe(2);

      const next = post("c");
      expect(stored()).toEqual(["1:a", "2:b"]);
      const renamed = await room.updateConversation(actor, conversationId, { name: "Renamed" });
      expect(renamed.ok).toBe(true);
      expect(stored()).toEqual(["1:a", "2:b", "3:c"]); // before the rename's own commit
      expect(posted(await next).message.seq).toBe(3);
    });
  });

  it("answers a repeated clientMessageId with the waiting post's message, stored once", async () => {
    await inRoom(async ({ post, stored }) => {
      await post("a");
      const original = post("b", "k-1");
      const repeat = post("b again", "k-1");
      const [o, r] = (await Promise.all([original, repeat])).map(posted);
      expect(o.created).toBe(true);
      expect(r.created).toBe(false);
      expect(r.message.id).toBe(o.message.id);
      expect(stored()).toEqual(["1:a", "2:b"]);
    });
  });

  it("fails every post of a commit that fails, and the room goes on", async () => {
    await inRoom(async ({ state, conversationId, post, stored }) => {
      await post("a");
      const failing = [post("b"), post("c")];
      // Something else took seq 2 meanwhile: the waiting posts' commit breaks on it, and rolls back whole.
      state.storage.sql.exec(
        "INSERT INTO messages (conversation_id, seq, id, type, text, attachments, created_at) VALUES (?, 2, 'msg_x', 'system', 'x', '[]', ?)",
        conversationId,
        new Date().toISOString(),
      );
      state.storage.sql.exec("UPDATE conversations SET last_seq = 2 WHERE id = ?", conversationId);
      for (const result of await Promise.allSettled(failing)) expect(result.status).toBe("rejected");
      expect(stored()).toEqual(["1:a", "2:x"]);

      expect(posted(await post("d")).message.seq).toBe(3);
      expect(stored()).toEqual(["1:a", "2:x", "3:d"]);
    });
  });

  it("replays a waiting post to a socket that subscribes with sinceSeq before the post commits: no gap, no duplicate", async () => {
    const f = await createFixture();
    const socket = await openRoom(f.room.id, await accountToken(f.apiKey, f.bob.id));
    const topic = conversationTopic(f.orgId, f.conversation.id);
    const stub = env.ROOMS.get(env.ROOMS.idFromName(f.room.id));
    const result = await runInDurableObject(stub, async (room: Room, state: DurableObjectState) => {
      const actor = { orgId: f.orgId };
      // Sent to the room's subscribers before its write (none yet), then waiting for the next turn.
      const waiting = room.postMessage(actor, f.conversation.id, { authorId: f.alice.id, text: "a", attachments: [] });
      const [ws] = state.getWebSockets();
      await room.webSocketMessage(ws, JSON.stringify({ type: "subscribe", id: "s1", topic, sinceSeq: 0 }));
      return waiting;
    });
    expect(posted(result).message.seq).toBe(1);
    await socket.waitLog((frame) => frame.type === "ack" && frame.id === "s1");
    await socket.waitLog((frame) => frame.type === "event");
    await socket.flush();
    expect(socket.log.find((frame) => frame.id === "s1")).toMatchObject({ recovered: true, lastSeq: 1 });
    expect(seqsOf(socket.log)).toEqual([1]);
    socket.close();
  });
});
