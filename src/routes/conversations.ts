import { and, desc, eq, gte, inArray, isNull, lt, or, type SQL } from "drizzle-orm";
import type { Context } from "hono";
import { Hono } from "hono";
import { actorOf } from "../auth/principal";
import { auth, orgPrincipal } from "../auth/middleware";
import { issueToken } from "../auth/tokens";
import { createDb, roomIdsOfAccount } from "../db/client";
import { mirrorConversationStatement, purgeConversationStatement, writeThrough } from "../db/mirror";
import { conversations } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError, notFound, unwrap } from "../errors";
import { decodeCursor, pageOf } from "../http/cursor";
import { describe } from "../http/openapi";
import { idParam, jsonBody, query } from "../http/validate";
import { listOf, pageQuerySchema } from "../protocol/common";
import {
  ConversationSchema,
  CreateSessionSchema,
  ListConversationsQuerySchema,
  UpdateConversationSchema,
  type Conversation,
} from "../protocol/conversations";
import { HistoryPageSchema, HistoryQuerySchema, MessageSchema, PostMessageSchema } from "../protocol/messages";
import { TokenResponseSchema } from "../protocol/orgs";
import { roomIdOfConversation, roomStub } from "../room/client";
import { preparePost } from "../room/post";
import { markDeletedAttachments } from "../attachments/access";

/** At most how many rooms a list of conversations asks to settle their activity first. */
const SETTLE_ROOMS = 20;
/**
 * How recent a conversation's activity in D1 must be for its room to be asked: a room writes its activity at most a
 * second late (its first write after a pause goes at once), so a room with activity still to write wrote some within
 * the last second or two.
 */
const SETTLE_WINDOW_MS = 10_000;

const recent = () => new Date(Date.now() - SETTLE_WINDOW_MS).toISOString();

/**
 * Read-your-writes for lists of conversations, which D1 serves: a room writes its conversations' activity (count,
 * last message) to D1 at most once a second while messages keep coming, so before the first page is read, the rooms
 * in the list's scope that had activity lately (`where`) write theirs at once.
 */
async function settleRecentRooms(c: Context<AppEnv>, db: ReturnType<typeof createDb>, where: SQL | undefined) {
  const rooms = await db
    .selectDistinct({ id: conversations.roomId })
    .from(conversations)
    .where(where)
    .limit(SETTLE_ROOMS);
  // A room that cannot answer leaves the list as D1 has it.
  await Promise.all(
    rooms.map(({ id }) =>
      roomStub(c.env, id)
        .settleActivity()
        .catch(() => {}),
    ),
  );
}

/** The conversation id of the path and the stub of its room; ids not made by this service are 404. */
function conversationTarget(c: Context<AppEnv>) {
  const id = idParam(c, "id", "conv");
  const roomId = roomIdOfConversation(id);
  if (!roomId) throw notFound("conversation");
  return { id, room: roomStub(c.env, roomId) };
}

/** `/v1/conversations`: conversations across rooms, their sessions, and their ordered message history. */
export const conversationRoutes = new Hono<AppEnv>()
  .get(
    "/",
    describe({
      summary: "List conversations, newest activity first",
      tags: ["conversations"],
      responses: { 200: listOf(ConversationSchema) },
    }),
    auth("apiKey", "account"),
    query(ListConversationsQuerySchema.extend(pageQuerySchema.shape)),
    async (c) => {
      const principal = orgPrincipal(c);
      const { roomId, contactId, accountId: requested, limit, cursor } = c.req.valid("query");
      if (principal.kind === "account" && requested && requested !== principal.accountId) {
        throw new ApiError("FORBIDDEN", "an account token lists only its own conversations");
      }
      const accountId = principal.kind === "account" ? principal.accountId : requested;
      const db = createDb(c.env.DB);
      const after = cursor ? decodeCursor(cursor, "conv") : null;
      const scope = and(
        eq(conversations.orgId, principal.orgId),
        isNull(conversations.deletedAt),
        roomId ? eq(conversations.roomId, roomId) : undefined,
        contactId ? eq(conversations.contactId, contactId) : undefined,
        accountId ? inArray(conversations.roomId, roomIdsOfAccount(db, principal.orgId, accountId)) : undefined,
      );
      if (!after) await settleRecentRooms(c, db, roomId ? scope : and(scope, gte(conversations.activityAt, recent())));
      const rows = await db
        .select()
        .from(conversations)
        .where(
          and(
            scope,
            after
              ? or(
                  lt(conversations.activityAt, after[0]),
                  and(eq(conversations.activityAt, after[0]), lt(conversations.id, after[1])),
                )
              : undefined,
          ),
        )
        .orderBy(desc(conversations.activityAt), desc(conversations.id))
        .limit(limit + 1);
      const toConversation = (row: (typeof rows)[number]): Conversation => ({
        id: row.id,
        orgId: row.orgId,
        roomId: row.roomId,
        name: row.name,
        description: row.description,
        meta: row.meta,
        contactId: row.contactId,
        messageCount: row.messageCount,
        lastMessageAt: row.lastMessageAt,
        createdAt: row.createdAt,
        updatedAt: row.updatedAt,
      });
      return c.json(pageOf(rows, limit, toConversation, (row) => [row.activityAt, row.id]));
    },
  )
  .get(
    "/:id",
    describe({ summary: "Get a conversation", tags: ["conversations"], responses: { 200: ConversationSchema } }),
    auth("apiKey", "account", "session"),
    async (c) => {
      const { id, room } = conversationTarget(c);
      return c.json(unwrap(await room.getConversation(actorOf(orgPrincipal(c)), id)).conversation);
    },
  )
  .patch(
    "/:id",
    describe({ summary: "Change a conversation", tags: ["conversations"], responses: { 200: ConversationSchema } }),
    auth("apiKey", "account"),
    jsonBody(UpdateConversationSchema),
    async (c) => {
      const { id, room } = conversationTarget(c);
      const record = unwrap(await room.updateConversation(actorOf(orgPrincipal(c)), id, c.req.valid("json")));
      await writeThrough(c.env.DB, [mirrorConversationStatement(c.env.DB, record)]);
      return c.json(record.conversation);
    },
  )
  .delete(
    "/:id",
    describe({ summary: "Delete a conversation and its history", tags: ["conversations"], responses: { 204: null } }),
    auth("apiKey", "account"),
    async (c) => {
      const { id, room } = conversationTarget(c);
      const record = unwrap(await room.deleteConversation(actorOf(orgPrincipal(c)), id));
      await writeThrough(c.env.DB, [
        mirrorConversationStatement(c.env.DB, record),
        purgeConversationStatement(c.env.DB, id),
      ]);
      return c.body(null, 204);
    },
  )
  .post(
    "/:id/sessions",
    describe({
      summary: "Issue a session token for one participant in one conversation",
      tags: ["credentials"],
      responses: { 201: TokenResponseSchema },
    }),
    auth("apiKey"),
    jsonBody(CreateSessionSchema),
    async (c) => {
      const principal = orgPrincipal(c);
      const { id, room } = conversationTarget(c);
      const { accountId, ttlSeconds } = c.req.valid("json");
      unwrap(await room.checkSession(actorOf(principal), id, accountId));
      return c.json(
        await issueToken(
          c.env,
          {
            kind: "session",
            orgId: principal.orgId,
            accountId,
            conversationId: id,
            keyId: principal.keyId,
          },
          ttlSeconds,
        ),
        201,
      );
    },
  )
  .post(
    "/:id/messages",
    describe({
      summary: "Post a message; a repeated clientMessageId answers 200 with the original",
      tags: ["messages"],
      responses: { 201: MessageSchema, 200: MessageSchema },
    }),
    auth("apiKey", "account", "session"),
    jsonBody(PostMessageSchema),
    async (c) => {
      const principal = orgPrincipal(c);
      const { id, room } = conversationTarget(c);
      const input = await preparePost(c.env.DB, principal, { ...c.req.valid("json"), conversationId: id });
      const result = unwrap(await room.postMessage(actorOf(principal), id, input));
      return c.json(result.message, result.created ? 201 : 200);
    },
  )
  .get(
    "/:id/messages",
    describe({
      summary: "Read a page of history, always in ascending seq",
      tags: ["messages"],
      responses: { 200: HistoryPageSchema },
    }),
    auth("apiKey", "account", "session"),
    query(HistoryQuerySchema),
    async (c) => {
      const { id, room } = conversationTarget(c);
      const page = unwrap(await room.listMessages(actorOf(orgPrincipal(c)), id, c.req.valid("query")));
      return c.json(await markDeletedAttachments(c.env.DB, page));
    },
  );
