import { and, eq, inArray } from "drizzle-orm";
import { createDb } from "../db/client";
import { attachments } from "../db/schema";
import { ApiError } from "../errors";
import type { MessageAttachment, PostMessage } from "../protocol/messages";
import type { PostInput } from "./room";

/** Who posts: the credential's kind decides who the author may be. */
export interface Poster {
  orgId: string;
  kind: "apiKey" | "account" | "session";
  accountId?: string;
}

/**
 * The rules of a post shared by REST and the room socket: with an API key `authorId` names the author; with an
 * account or session token the author is the token's account. Attachments must be the org's own.
 */
export async function preparePost(db: D1Database, poster: Poster, input: PostMessage): Promise<PostInput> {
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
    attachments: await resolveAttachments(db, poster.orgId, input.attachmentIds),
    clientMessageId: input.clientMessageId,
  };
}

/** Resolves attachment ids to attachments of the org; another org's or an unknown id is a 400 naming it. */
async function resolveAttachments(
  d1: D1Database,
  orgId: string,
  ids: string[] | undefined,
): Promise<MessageAttachment[]> {
  if (!ids || ids.length === 0) return [];
  const rows = await createDb(d1)
    .select({
      id: attachments.id,
      name: attachments.name,
      contentType: attachments.contentType,
      size: attachments.size,
    })
    .from(attachments)
    .where(and(eq(attachments.orgId, orgId), inArray(attachments.id, ids)));
  const byId = new Map(rows.map((row) => [row.id, row]));
  const details = ids.flatMap((id, index) =>
    byId.has(id) ? [] : [{ path: `attachmentIds.${index}`, message: "no attachment with this id in the org" }],
  );
  if (details.length > 0) throw new ApiError("BAD_REQUEST", "unknown attachments", details);
  return [...new Set(ids)].map((id) => byId.get(id)!);
}
