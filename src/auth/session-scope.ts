import { and, eq, exists, isNull, sql, type SQL } from "drizzle-orm";
import { createDb, type Db } from "../db/client";
import { conversations, participants } from "../db/schema";
import { ApiError } from "../errors";
import { roomIdOfConversation } from "../room/client";
import type { OrgPrincipal } from "./principal";

/**
 * Whether a session still has its scope: its conversation is not deleted, and its account is (still) a participant
 * of the conversation's room. A session of a participant removed, or of a deleted conversation, sees nothing.
 */
export function sessionInScope(db: Db, orgId: string, accountId: string, conversationId: string): SQL {
  const conversationLives = db
    .select({ one: sql`1` })
    .from(conversations)
    .where(and(eq(conversations.id, conversationId), eq(conversations.orgId, orgId), isNull(conversations.deletedAt)));
  const participates = db
    .select({ one: sql`1` })
    .from(participants)
    .where(
      and(
        eq(participants.roomId, roomIdOfConversation(conversationId) ?? ""),
        eq(participants.accountId, accountId),
        eq(participants.orgId, orgId),
      ),
    );
  return and(exists(conversationLives), exists(participates))!;
}

/**
 * Refuses (403) a session token that lost its scope (`sessionInScope`): what it would open (an upload, a socket)
 * could never be used. Other credentials pass.
 */
export async function requireSessionScope(d1: D1Database, principal: OrgPrincipal): Promise<void> {
  if (principal.kind !== "session") return;
  const db = createDb(d1);
  const scope = sessionInScope(db, principal.orgId, principal.accountId, principal.conversationId);
  const row = await db.get<{ ok: number }>(sql`SELECT CASE WHEN ${scope} THEN 1 ELSE 0 END AS ok`);
  if (row?.ok !== 1) {
    throw new ApiError("FORBIDDEN", "the session's conversation was deleted, or its participant left the room");
  }
}
