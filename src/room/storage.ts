/**
 * The Room object's SQLite schema, as ordered migrations. `migrateRoom` applies those an object has not applied
 * yet, so rooms created by older code are brought up to date when they start. Never edit a migration that shipped:
 * add the next one.
 */
const MIGRATIONS: string[] = [
  `
CREATE TABLE IF NOT EXISTS room (
  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
  id TEXT NOT NULL,
  org_id TEXT NOT NULL,
  type TEXT NOT NULL,
  name TEXT,
  meta TEXT NOT NULL,
  dm_key TEXT,
  version INTEGER NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
  account_id TEXT PRIMARY KEY,
  account_type TEXT NOT NULL,
  role TEXT NOT NULL,
  auto_respond INTEGER NOT NULL,
  joined_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
  id TEXT PRIMARY KEY,
  name TEXT,
  description TEXT,
  meta TEXT NOT NULL,
  contact_id TEXT,
  last_seq INTEGER NOT NULL DEFAULT 0,
  last_message_at TEXT,
  version INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  deleted_at TEXT
);
CREATE TABLE IF NOT EXISTS messages (
  conversation_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  id TEXT NOT NULL,
  author_id TEXT,
  type TEXT NOT NULL,
  text TEXT,
  data TEXT,
  attachments TEXT NOT NULL,
  client_message_id TEXT,
  created_at TEXT NOT NULL,
  PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id ON messages (conversation_id, client_message_id)
  WHERE client_message_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  body TEXT NOT NULL
);
`,
  // The outbox feeds two sinks, the events queue and the org hub, each marking what it has.
  `
ALTER TABLE outbox ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN published INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_unqueued ON outbox (id) WHERE queued = 0;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published = 0;
`,
  // Assistant replies in flight: their deltas survive an eviction, so a stream resumes where it was. A restarted
  // stream (a retried step) keeps counting its indexes from `base_index` and drops the text of the failed attempt.
  `
CREATE TABLE IF NOT EXISTS streams (
  stream_id TEXT PRIMARY KEY,
  conversation_id TEXT NOT NULL,
  author_id TEXT NOT NULL,
  base_index INTEGER NOT NULL DEFAULT 0,
  restarted INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_chunks (
  stream_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  delta TEXT NOT NULL,
  PRIMARY KEY (stream_id, idx)
) WITHOUT ROWID;
`,
  // The outbox is read by id range (the drain) and deleted by id (the prune): the indexes of its unsent rows served
  // no query, and cost every message two index writes and their deletes.
  `
DROP INDEX IF EXISTS outbox_unqueued;
DROP INDEX IF EXISTS outbox_unpublished;
`,
  // A deleted account stays in its DM rooms (their membership never changes), as an observer marked deleted.
  `
ALTER TABLE participants ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
`,
  // The last outbox id both sinks had, as of the last commit: rows up to it are kept a while, not sent to the hub again.
  `
CREATE TABLE IF NOT EXISTS outbox_delivered (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), id INTEGER NOT NULL);
INSERT OR IGNORE INTO outbox_delivered (singleton, id) VALUES (1, 0);
`,
];

/** Whether an object has a room's storage at all (any schema version). */
export function hasRoomStorage(sql: SqlStorage): boolean {
  return sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'room'").toArray().length > 0;
}

/** Brings a room's storage to the current schema, one migration at a time, each in its own transaction. */
export function migrateRoom(storage: DurableObjectStorage): void {
  const sql = storage.sql;
  sql.exec(
    "CREATE TABLE IF NOT EXISTS schema_version (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), version INTEGER NOT NULL)",
  );
  const applied = sql.exec<{ version: number }>("SELECT version FROM schema_version").toArray()[0]?.version ?? 0;
  for (let version = applied; version < MIGRATIONS.length; version++) {
    storage.transactionSync(() => {
      sql.exec(MIGRATIONS[version]);
      sql.exec("INSERT OR REPLACE INTO schema_version (singleton, version) VALUES (1, ?)", version + 1);
    });
  }
}

/** A row of the `room` table. */
export interface RoomRow extends Record<string, SqlStorageValue> {
  id: string;
  org_id: string;
  type: string;
  name: string | null;
  meta: string;
  dm_key: string | null;
  version: number;
  created_at: string;
}

/** A row of the `participants` table. */
export interface ParticipantRow extends Record<string, SqlStorageValue> {
  account_id: string;
  account_type: string;
  role: string;
  auto_respond: number;
  joined_at: string;
  /** 1 for a deleted account kept in a DM room. */
  deleted: number;
}

/** A row of the `conversations` table. */
export interface ConversationRow extends Record<string, SqlStorageValue> {
  id: string;
  name: string | null;
  description: string | null;
  meta: string;
  contact_id: string | null;
  last_seq: number;
  last_message_at: string | null;
  version: number;
  created_at: string;
  updated_at: string;
  deleted_at: string | null;
}

/** A row of the `messages` table. */
export interface MessageRow extends Record<string, SqlStorageValue> {
  conversation_id: string;
  seq: number;
  id: string;
  author_id: string | null;
  type: string;
  text: string | null;
  data: string | null;
  attachments: string;
  client_message_id: string | null;
  created_at: string;
}

/** A row of the `outbox` table: one queue body as JSON, and whether the queue and the org hub have it yet. */
export interface OutboxRow extends Record<string, SqlStorageValue> {
  id: number;
  body: string;
}

/** An assistant reply in flight. */
export interface StreamRow extends Record<string, SqlStorageValue> {
  stream_id: string;
  conversation_id: string;
  author_id: string;
  base_index: number;
  restarted: number;
  updated_at: string;
}
