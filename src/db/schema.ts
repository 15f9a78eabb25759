import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/** Organisations: the tenant boundary of every other row. */
export const orgs = sqliteTable("orgs", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  createdAt: text("created_at").notNull(),
});

/** API keys, stored as SHA-256 hashes of the secret. */
export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    name: text("name"),
    keyHash: text("key_hash").notNull(),
    createdAt: text("created_at").notNull(),
    revokedAt: text("revoked_at"),
  },
  (t) => [uniqueIndex("api_keys_hash_idx").on(t.keyHash), index("api_keys_org_idx").on(t.orgId, t.id)],
);

/**
 * The rooms that accepted a socket opened with an API key: revoking the key closes its sockets there at once (the
 * rooms' sweeps are the backstop). A row outlives the sockets; the revoke deletes the key's rows.
 */
export const apiKeyRooms = sqliteTable(
  "api_key_rooms",
  {
    keyId: text("key_id").notNull(),
    roomId: text("room_id").notNull(),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.roomId] })],
);

/** Users and agents. */
export const accounts = sqliteTable(
  "accounts",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    type: text("type", { enum: ["user", "agent"] }).notNull(),
    name: text("name").notNull(),
    email: text("email"),
    meta: text("meta", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    agent: text("agent", { mode: "json" }).$type<Record<string, unknown>>(),
    createdAt: text("created_at").notNull(),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [index("accounts_org_idx").on(t.orgId, t.id), index("accounts_org_type_idx").on(t.orgId, t.type, t.id)],
);

/** Mirror of each room object's metadata, for queries across rooms. `version` orders mirror writes. */
export const rooms = sqliteTable(
  "rooms",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    type: text("type", { enum: ["standard", "dm"] }).notNull(),
    name: text("name"),
    meta: text("meta", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    dmKey: text("dm_key"),
    version: integer("version").notNull(),
    createdAt: text("created_at").notNull(),
  },
  (t) => [index("rooms_org_idx").on(t.orgId, t.createdAt, t.id), uniqueIndex("rooms_dm_key_idx").on(t.orgId, t.dmKey)],
);

/** Mirror of each room's participants. */
export const participants = sqliteTable(
  "participants",
  {
    roomId: text("room_id").notNull(),
    accountId: text("account_id").notNull(),
    orgId: text("org_id").notNull(),
    role: text("role", { enum: ["owner", "admin", "member", "observer"] }).notNull(),
    autoRespond: integer("auto_respond", { mode: "boolean" }).notNull(),
    joinedAt: text("joined_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.roomId, t.accountId] }), index("participants_account_idx").on(t.orgId, t.accountId)],
);

/**
 * Participants who left a room (removed, or their account deleted), with when they took part: notification rules
 * reach "the participants of the event's room when it happened" even when one left before the consumer ran. Rows
 * older than a day go (a queued event is consumed well within it).
 */
export const participantDepartures = sqliteTable(
  "participant_departures",
  {
    roomId: text("room_id").notNull(),
    accountId: text("account_id").notNull(),
    orgId: text("org_id").notNull(),
    joinedAt: text("joined_at").notNull(),
    leftAt: text("left_at").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.roomId, t.accountId, t.joinedAt] }),
    index("participant_departures_left_idx").on(t.leftAt),
  ],
);

/** Mirror of conversations; `activityAt` is `lastMessageAt`, else `createdAt`, the order of lists. */
export const conversations = sqliteTable(
  "conversations",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    roomId: text("room_id").notNull(),
    name: text("name"),
    description: text("description"),
    meta: text("meta", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    contactId: text("contact_id"),
    messageCount: integer("message_count").notNull(),
    lastMessageAt: text("last_message_at"),
    activityAt: text("activity_at").notNull(),
    version: integer("version").notNull(),
    createdAt: text("created_at").notNull(),
    updatedAt: text("updated_at").notNull(),
    deletedAt: text("deleted_at"),
  },
  (t) => [
    index("conversations_org_activity_idx").on(t.orgId, t.activityAt, t.id),
    index("conversations_room_activity_idx").on(t.roomId, t.activityAt, t.id),
    index("conversations_contact_idx").on(t.orgId, t.contactId, t.activityAt),
  ],
);

/** The message archive, fed from the rooms' outboxes through the events queue. */
export const messages = sqliteTable(
  "messages",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    roomId: text("room_id").notNull(),
    conversationId: text("conversation_id").notNull(),
    seq: integer("seq").notNull(),
    authorId: text("author_id"),
    type: text("type", { enum: ["user", "bot", "system"] }).notNull(),
    text: text("text"),
    data: text("data", { mode: "json" }).$type<Record<string, unknown>>(),
    attachments: text("attachments", { mode: "json" })
      .$type<{ id: string; name: string; contentType: string; size: number }[]>()
      .notNull()
      .default(sql`'[]'`),
    clientMessageId: text("client_message_id"),
    createdAt: text("created_at").notNull(),
  },
  // One index: the archive is written with every message and read only by conversation (its room serves history).
  (t) => [uniqueIndex("messages_conversation_seq_idx").on(t.conversationId, t.seq)],
);

/** Attachment metadata; the bytes live in R2. */
export const attachments = sqliteTable(
  "attachments",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    name: text("name").notNull(),
    contentType: text("content_type").notNull(),
    size: integer("size").notNull(),
    sha256: text("sha256").notNull(),
    objectKey: text("object_key").notNull(),
    createdBy: text("created_by"),
    createdAt: text("created_at").notNull(),
    /** The conversation of the session token that uploaded it (null for API keys and account tokens). */
    conversationId: text("conversation_id"),
  },
  (t) => [index("attachments_org_idx").on(t.orgId, t.id)],
);
export * from "./schema-flows";
export * from "./schema-notifications";
export * from "./schema-attachments";
