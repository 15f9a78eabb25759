import { primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * Which conversations reference an attachment: written when a post referencing it is prepared (REST and room socket
 * alike), so that the room's participants, and the conversation's session tokens, may read it.
 */
export const attachmentRefs = sqliteTable(
  "attachment_refs",
  {
    attachmentId: text("attachment_id").notNull(),
    conversationId: text("conversation_id").notNull(),
    roomId: text("room_id").notNull(),
    orgId: text("org_id").notNull(),
    createdAt: text("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.attachmentId, t.conversationId] })],
);
