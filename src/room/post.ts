import { and, eq, inArray, sql } from "drizzle-orm";
import { visibleTo } from "../attachments/access";
import { chunks, createDb } from "../db/client";
import { attachmentRefs, attachments, participants } from "../db/schema";
import { ApiError, notFound } from "../errors";
import type { MessageAttachment, PostMessage } from "../protocol/messages";
import { roomIdOfConversation } from "./client";
import type { PostInput } from "./room";

/** Who posts: the credential's kind decides who the author may be. */
export interface Poster {
  orgId: string;
  kind: "apiKey" | "account" | "session";
  accountId?: string;
  conversationId?: string;
}

/**
 * The rules of a post shared by REST and the room socket: with an API key `authorId` names the author; with an
 * account or session token the author is the token's account. Attachments must be the org's own, and ones the poster
 * can see (section 9); the conversation is recorded as referencing them.
 */
export async function preparePost(
  db: D1Database,
  poster: Poster,
  input: PostMessage & { conversationId: string },
): Promise<PostInput> {
  let authorId: string;
  if (poster.kind === "apiKey") {
    if (!input.authorId) {
      throw new ApiError("BAD_REQUEST", "invalid request body", [
        { path: "authorId", message: "required when posting with an API key" },
      ]);
    }
    authorId = input.authorId;
  } else {
    if (input.authorId !== undefined && input.authorId !== poster.accountId) {
      throw new ApiError("FORBIDDEN", "a token posts only as its own account");
    }
    authorId = poster.accountId!;
  }
  return {
    authorId,
    text: input.text,
    data: input.data,
    attachments: await resolveAttachments(db, poster, input.conversationId, input.attachmentIds),
    clientMessageId: input.clientMessageId,
  };
}

/**
 * Resolves attachment ids to attachments the poster can see; another org's, an unknown or an invisible id is a 400
 * naming it. Then records that the conversation references them, which lets its room's participants (and its session
 * tokens) read them. The record is written before the room commits the message: only for a poster that takes part in
 * the room and could see the attachments, so a post the room still refuses shares nothing the poster could not.
 */
async function resolveAttachments(
  d1: D1Database,
  poster: Poster,
  conversationId: string,
  ids: string[] | undefined,
): Promise<MessageAttachment[]> {
  if (!ids || ids.length === 0) return [];
  const roomId = roomIdOfConversation(conversationId);
  if (!roomId || (poster.kind === "session" && poster.conversationId !== conversationId)) {
    throw notFound("conversation");
  }
  const db = createDb(d1);
  const unique = [...new Set(ids)];
  const select = db
    .select({
      id: attachments.id,
      name: attachments.name,
      contentType: attachments.contentType,
      size: attachments.size,
    })
    .from(attachments)
    .where(and(inArray(attachments.id, unique), visibleTo(db, poster)));
  let rows: MessageAttachment[];
  if (poster.kind === "account") {
    const [member, found] = await db.batch([
      db
        .select({ one: sql`1` })
        .from(participants)
        .where(and(eq(participants.roomId, roomId), eq(participants.accountId, poster.accountId!))),
      select,
    ]);
    if (member.length === 0) throw notFound("conversation");
    rows = found;
  } else {
    rows = await select;
  }
  const byId = new Map(rows.map((row) => [row.id, row]));
  const missing =
    poster.kind === "apiKey"
      ? "no attachment with this id in the org"
      : "no attachment with this id that this token can see";
  const details = ids.flatMap((id, index) =>
    byId.has(id) ? [] : [{ path: `attachmentIds.${index}`, message: missing }],
  );
  if (details.length > 0) throw new ApiError("BAD_REQUEST", "unknown attachments", details);
  const now = new Date().toISOString();
  const refs = unique.map((attachmentId) => ({
    attachmentId,
    conversationId,
    roomId,
    orgId: poster.orgId,
    createdAt: now,
  }));
  const [first, ...rest] = chunks(refs, 15).map((group) =>
    db.insert(attachmentRefs).values(group).onConflictDoNothing(),
  );
  await db.batch([first, ...rest]);
  return unique.map((id) => byId.get(id)!);
}
