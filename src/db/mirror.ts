import type { ConversationRecord, RoomRecord } from "../events/queue";
import type { Message } from "../protocol/messages";

/**
 * D1 statements that mirror a room at one version: the room row and its participant set. Each applies only when
 * D1 holds an older version, so replays and out-of-order deliveries change nothing.
 */
export function mirrorRoomStatements(db: D1Database, { room, dmKey, version }: RoomRecord): D1PreparedStatement[] {
  const newer = "NOT EXISTS (SELECT 1 FROM rooms WHERE id = ?1 AND version >= ?2)";
  return [
    db.prepare(`DELETE FROM participants WHERE room_id = ?1 AND ${newer}`).bind(room.id, version),
    db
      .prepare(
        `INSERT INTO participants (room_id, account_id, org_id, role, auto_respond, joined_at)
         SELECT ?1, p.value ->> 'accountId', ?3, p.value ->> 'role', p.value ->> 'autoRespond', p.value ->> 'joinedAt'
         FROM json_each(?4) AS p WHERE ${newer}`,
      )
      .bind(room.id, version, room.orgId, JSON.stringify(room.participants)),
    db
      .prepare(
        `INSERT INTO rooms (id, org_id, type, name, meta, dm_key, version, created_at) VALUES (?1, ?3, ?4, ?5, ?6, ?7, ?2, ?8)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, meta = excluded.meta, version = excluded.version
         WHERE excluded.version > rooms.version`,
      )
      .bind(room.id, version, room.orgId, room.type, room.name, JSON.stringify(room.meta), dmKey, room.createdAt),
  ];
}

/** The D1 statement that mirrors a conversation at one version (counters and activity included). */
export function mirrorConversationStatement(db: D1Database, { conversation: c, version, deleted }: ConversationRecord) {
  return db
    .prepare(
      `INSERT INTO conversations (id, org_id, room_id, name, description, meta, contact_id, message_count, last_message_at,
         activity_at, version, created_at, updated_at, deleted_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
       ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description, meta = excluded.meta,
         contact_id = excluded.contact_id, message_count = excluded.message_count, last_message_at = excluded.last_message_at,
         activity_at = excluded.activity_at, version = excluded.version, updated_at = excluded.updated_at,
         deleted_at = excluded.deleted_at
       WHERE excluded.version > conversations.version`,
    )
    .bind(
      c.id,
      c.orgId,
      c.roomId,
      c.name,
      c.description,
      JSON.stringify(c.meta),
      c.contactId,
      c.messageCount,
      c.lastMessageAt,
      c.lastMessageAt ?? c.createdAt,
      version,
      c.createdAt,
      c.updatedAt,
      deleted ? c.updatedAt : null,
    );
}

/** The D1 statement that removes a deleted conversation's archived history. */
export function purgeConversationStatement(db: D1Database, conversationId: string) {
  return db.prepare("DELETE FROM messages WHERE conversation_id = ?1").bind(conversationId);
}

/** The D1 statement that archives one message: idempotent on its id, and never for a deleted conversation. */
export function archiveMessageStatement(db: D1Database, m: Message) {
  return db
    .prepare(
      `INSERT INTO messages (id, org_id, room_id, conversation_id, seq, author_id, type, text, data, attachments,
         client_message_id, created_at)
       SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12
       WHERE NOT EXISTS (SELECT 1 FROM conversations WHERE id = ?4 AND deleted_at IS NOT NULL)
       ON CONFLICT DO NOTHING`,
    )
    .bind(
      m.id,
      m.orgId,
      m.roomId,
      m.conversationId,
      m.seq,
      m.authorId,
      m.type,
      m.text,
      m.data === null ? null : JSON.stringify(m.data),
      JSON.stringify(m.attachments),
      m.clientMessageId,
      m.createdAt,
    );
}

/** Runs mirror statements as the write-through of a request; a failure is logged, the events consumer repairs it. */
export async function writeThrough(db: D1Database, statements: D1PreparedStatement[]): Promise<void> {
  try {
    await db.batch(statements);
  } catch (error) {
    console.error("D1 write-through failed; the events consumer will mirror this change", String(error));
  }
}
