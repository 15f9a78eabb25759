import { and, eq, exists, inArray, or, sql, type SQL } from "drizzle-orm";
import { chunks, createDb, D1_MAX_IDS, type Db } from "../db/client";
import { sessionInScope } from "../auth/session-scope";
import { attachmentRefs, attachments, participants } from "../db/schema";
import type { HistoryPage, MessageAttachment } from "../protocol/messages";

/** Who reads or references attachments: an API key sees its whole org, tokens only what they can see. */
export interface Viewer {
  orgId: string;
  kind: "apiKey" | "account" | "session";
  accountId?: string;
  conversationId?: string;
}

/**
 * The condition under which a viewer sees an attachment row. API key: every attachment of the org. Account token:
 * those it uploaded, and those referenced by a message in a room it takes part in. Session token: those it uploaded
 * in its conversation, and those referenced in that conversation, while its conversation lives and its account takes
 * part in the conversation's room (`sessionInScope`).
 */
export function visibleTo(db: Db, viewer: Viewer): SQL | undefined {
  const inOrg = eq(attachments.orgId, viewer.orgId);
  if (viewer.kind === "apiKey") return inOrg;
  const accountId = viewer.accountId!;
  if (viewer.kind === "account") {
    const referencedInMyRooms = db
      .select({ one: sql`1` })
      .from(attachmentRefs)
      .innerJoin(
        participants,
        and(eq(participants.roomId, attachmentRefs.roomId), eq(participants.accountId, accountId)),
      )
      .where(eq(attachmentRefs.attachmentId, attachments.id));
    return and(inOrg, or(eq(attachments.createdBy, accountId), exists(referencedInMyRooms)));
  }
  const conversationId = viewer.conversationId!;
  const referencedHere = db
    .select({ one: sql`1` })
    .from(attachmentRefs)
    .where(and(eq(attachmentRefs.attachmentId, attachments.id), eq(attachmentRefs.conversationId, conversationId)));
  return and(
    inOrg,
    sessionInScope(db, viewer.orgId, accountId, conversationId),
    or(
      and(eq(attachments.createdBy, accountId), eq(attachments.conversationId, conversationId)),
      exists(referencedHere),
    ),
  );
}

/** An attachment row the viewer may see, or null (unknown, another org's, or outside what the token sees). */
export async function findVisible(d1: D1Database, viewer: Viewer, id: string) {
  const db = createDb(d1);
  return (
    (await db
      .select()
      .from(attachments)
      .where(and(eq(attachments.id, id), visibleTo(db, viewer)))
      .get()) ?? null
  );
}

/**
 * Marks the attachments of a history page that were deleted since their message was posted (`deleted: true`).
 * A page without attachments costs no query.
 */
export async function markDeletedAttachments(d1: D1Database, page: HistoryPage): Promise<HistoryPage> {
  const ids = [...new Set(page.items.flatMap((message) => message.attachments.map((a) => a.id)))];
  if (ids.length === 0) return page;
  const db = createDb(d1);
  const present = new Set<string>();
  for (const group of chunks(ids, D1_MAX_IDS)) {
    const rows = await db.select({ id: attachments.id }).from(attachments).where(inArray(attachments.id, group));
    for (const row of rows) present.add(row.id);
  }
  if (present.size === ids.length) return page;
  const mark = (attachment: MessageAttachment): MessageAttachment =>
    present.has(attachment.id) ? attachment : { ...attachment, deleted: true };
  return {
    ...page,
    items: page.items.map((message) =>
      message.attachments.some((a) => !present.has(a.id))
        ? { ...message, attachments: message.attachments.map(mark) }
        : message,
    ),
  };
}
