import type { ConversationRecord, RoomRecord } from "../events/queue";
import type { Message } from "../protocol/messages";

/** How long a departure is kept: a day, well beyond any queued event's consumption. */
const DEPARTURES_KEPT_MS = 24 * 60 * 60 * 1000;

/**
 * D1 statements that mirror a room at one version: the room row, its participant set, and the departures of those
 * who left it. Each applies only when D1 holds an older version, so replays and out-of-order deliveries change
 * nothing.
 */
export function mirrorRoomStatements(db: D1Database, { room, dmKey, version }: RoomRecord): D1PreparedStatement[] {
  const newer = "NOT EXISTS (SELECT 1 FROM rooms WHERE id = ?1 AND version >= ?2)";
  const now = new Date().toISOString();
  return [
    // Who is no longer in the set leaves with the time they took part (`participantDepartures`).
    db
      .prepare(
        `INSERT INTO participant_departures (room_id, account_id, org_id, joined_at, left_at)
         SELECT room_id, account_id, org_id, joined_at, ?4 FROM participants
         WHERE room_id = ?1 AND ${newer}
           AND account_id NOT IN (SELECT p.value ->> 'accountId' FROM json_each(?3) AS p)
         ON CONFLICT DO NOTHING`,
      )
      .bind(room.id, version, JSON.stringify(room.participants), now),
    db.prepare(`DELETE FROM participants WHERE room_id = ?1 AND ${newer}`).bind(room.id, version),
    db
      .prepare("DELETE FROM participant_departures WHERE left_at < ?")
      .bind(new Date(Date.parse(now) - DEPARTURES_KEPT_MS).toISOString()),
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

/**
 * Bound JSON of at most this many characters a statement (D1 takes strings of up to 2 MB; a character is at most
 * 3 bytes of UTF-8).
 */
const JSON_ROWS_CHARS = 600_000;

/**
 * Rows as JSON arrays, in as few strings of at most `JSON_ROWS_CHARS` as they fit (a row alone may be longer): a
 * statement over `json_each` of one string writes many rows, where one statement a row costs D1 its per-statement
 * work each time (measured: a batch of 150 one-row statements held the local runtime for about 250 ms).
 */
function jsonRows(rows: unknown[][]): string[] {
  const out: string[] = [];
  let current: string[] = [];
  let size = 0;
  for (const row of rows) {
    const json = JSON.stringify(row);
    if (current.length > 0 && size + json.length > JSON_ROWS_CHARS) {
      out.push(`[${current.join(",")}]`);
      current = [];
      size = 0;
    }
    current.push(json);
    size += json.length + 1;
  }
  if (current.length > 0) out.push(`[${current.join(",")}]`);
  return out;
}

/** `r.value ->> 0, r.value ->> 1, ...`: the columns of a `json_each` row that is an array of `n` values. */
const columnsOf = (n: number) => Array.from({ length: n }, (_, i) => `r.value ->> ${i}`).join(", ");

/** The D1 statement that mirrors a conversation at one version (counters and activity included). */
export function mirrorConversationStatement(db: D1Database, record: ConversationRecord) {
  return mirrorConversationsStatements(db, [record])[0];
}

/**
 * D1 statements that mirror conversations, each at its version (counters and activity included): one statement for
 * up to hundreds. A row changes only when D1 holds an older version; give each conversation once.
 */
export function mirrorConversationsStatements(db: D1Database, records: ConversationRecord[]): D1PreparedStatement[] {
  const rows = records.map(({ conversation: c, version, deleted }) => [
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
  ]);
  return jsonRows(rows).map((json) =>
    db
      .prepare(
        `INSERT INTO conversations (id, org_id, room_id, name, description, meta, contact_id, message_count,
           last_message_at, activity_at, version, created_at, updated_at, deleted_at)
         SELECT ${columnsOf(14)} FROM json_each(?1) AS r WHERE true
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description, meta = excluded.meta,
           contact_id = excluded.contact_id, message_count = excluded.message_count,
           last_message_at = excluded.last_message_at, activity_at = excluded.activity_at, version = excluded.version,
           updated_at = excluded.updated_at, deleted_at = excluded.deleted_at
         WHERE excluded.version > conversations.version`,
      )
      .bind(json),
  );
}

/** The D1 statement that removes a deleted conversation's archived history. */
export function purgeConversationStatement(db: D1Database, conversationId: string) {
  return db.prepare("DELETE FROM messages WHERE conversation_id = ?1").bind(conversationId);
}

/**
 * D1 statements that archive messages, one statement for up to hundreds: idempotent on message ids, and never for a
 * deleted conversation.
 */
export function archiveMessagesStatements(db: D1Database, messages: Message[]): D1PreparedStatement[] {
  const rows = messages.map((m) => [
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
  ]);
  return jsonRows(rows).map((json) =>
    db
      .prepare(
        `INSERT INTO messages (id, org_id, room_id, conversation_id, seq, author_id, type, text, data, attachments,
           client_message_id, created_at)
         SELECT ${columnsOf(12)} FROM json_each(?1) AS r
         WHERE NOT EXISTS (SELECT 1 FROM conversations WHERE id = r.value ->> 3 AND deleted_at IS NOT NULL)
         ON CONFLICT DO NOTHING`,
      )
      .bind(json),
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
