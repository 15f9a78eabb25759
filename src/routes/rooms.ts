import { and, desc, eq, inArray, lt, or } from "drizzle-orm";
import type { Context } from "hono";
import { Hono } from "hono";
import { actorOf } from "../auth/principal";
import { auth, orgPrincipal } from "../auth/middleware";
import { createDb, roomIdsOfAccount, type Db } from "../db/client";
import { mirrorConversationStatement, mirrorRoomStatements, writeThrough } from "../db/mirror";
import { accounts, participants, rooms } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError, unwrap } from "../errors";
import { decodeCursor, pageOf } from "../http/cursor";
import { describe, errorResponse } from "../http/openapi";
import { idParam, jsonBody, query } from "../http/validate";
import { chunks, D1_MAX_IDS } from "../db/client";
import { newId } from "../lib/ids";
import { listOf, pageQuerySchema } from "../protocol/common";
import { ConversationSchema, CreateConversationSchema } from "../protocol/conversations";
import {
  CreateRoomSchema,
  ListRoomsQuerySchema,
  ParticipantInputSchema,
  ParticipantSchema,
  RoomSchema,
  UpdateParticipantSchema,
  UpdateRoomSchema,
  type ParticipantInput,
  type Room,
} from "../protocol/rooms";
import { dmRoomOf, newConversationId, roomStub } from "../room/client";
import type { ParticipantSpec } from "../room/room";

/** Resolves participant inputs to accounts of the org; unknown accounts are a 400 naming each one. */
async function resolveParticipants(
  db: Db,
  orgId: string,
  inputs: ParticipantInput[],
  path: string,
): Promise<ParticipantSpec[]> {
  if (inputs.length === 0) return [];
  const ids = [...new Set(inputs.map((p) => p.accountId))];
  const found = new Map<string, "user" | "agent">();
  for (const chunk of chunks(ids, D1_MAX_IDS)) {
    const rows = await db
      .select({ id: accounts.id, type: accounts.type })
      .from(accounts)
      .where(and(eq(accounts.orgId, orgId), inArray(accounts.id, chunk)));
    for (const row of rows) found.set(row.id, row.type);
  }
  const details = inputs.flatMap((p, index) =>
    found.has(p.accountId)
      ? []
      : [{ path: path.replace("#", String(index)), message: "no account with this id in the org" }],
  );
  if (details.length > 0) throw new ApiError("BAD_REQUEST", "unknown accounts", details);
  return inputs.map((p) => ({ ...p, accountType: found.get(p.accountId)! }));
}

function roomIdParam(c: Context<AppEnv>) {
  return idParam(c, "id", "room");
}

/** `/v1/rooms`: rooms, their participants, and the conversations started in them. */
export const roomRoutes = new Hono<AppEnv>()
  .post(
    "/",
    describe({
      summary: "Create a room; a dm answers 201 once, then 200 with the same room for the same participant set",
      tags: ["rooms"],
      responses: { 201: RoomSchema, 200: RoomSchema },
    }),
    auth("apiKey", "account"),
    jsonBody(CreateRoomSchema),
    async (c) => {
      const principal = orgPrincipal(c);
      const input = c.req.valid("json");
      let inputs = input.participants ?? [];
      if (principal.kind === "account" && !inputs.some((p) => p.accountId === principal.accountId)) {
        if (input.type === "dm") {
          throw new ApiError("FORBIDDEN", "an account token only creates dms it takes part in");
        }
        inputs = [{ accountId: principal.accountId, role: "owner" }, ...inputs];
      }
      const db = createDb(c.env.DB);
      const specs = await resolveParticipants(db, principal.orgId, inputs, "participants.#.accountId");
      const dm =
        input.type === "dm"
          ? await dmRoomOf(
              principal.orgId,
              specs.map((p) => p.accountId),
            )
          : null;
      const roomId = dm?.roomId ?? newId("room");
      const { record, created } = unwrap(
        await roomStub(c.env, roomId).init({
          id: roomId,
          orgId: principal.orgId,
          type: input.type,
          name: input.name ?? null,
          meta: input.meta ?? {},
          dmKey: dm?.dmKey ?? null,
          participants: specs,
        }),
      );
      if (created) await writeThrough(c.env.DB, mirrorRoomStatements(c.env.DB, record));
      return c.json(record.room, created ? 201 : 200);
    },
  )
  .get(
    "/",
    describe({ summary: "List rooms, newest first", tags: ["rooms"], responses: { 200: listOf(RoomSchema) } }),
    auth("apiKey", "account"),
    query(ListRoomsQuerySchema.extend(pageQuerySchema.shape)),
    async (c) => {
      const principal = orgPrincipal(c);
      const { accountId: requested, type, limit, cursor } = c.req.valid("query");
      if (principal.kind === "account" && requested && requested !== principal.accountId) {
        throw new ApiError("FORBIDDEN", "an account token lists only its own rooms");
      }
      const accountId = principal.kind === "account" ? principal.accountId : requested;
      const db = createDb(c.env.DB);
      const after = cursor ? decodeCursor(cursor, "room") : null;
      const rows = await db
        .select()
        .from(rooms)
        .where(
          and(
            eq(rooms.orgId, principal.orgId),
            type ? eq(rooms.type, type) : undefined,
            accountId ? inArray(rooms.id, roomIdsOfAccount(db, principal.orgId, accountId)) : undefined,
            after
              ? or(lt(rooms.createdAt, after[0]), and(eq(rooms.createdAt, after[0]), lt(rooms.id, after[1])))
              : undefined,
          ),
        )
        .orderBy(desc(rooms.createdAt), desc(rooms.id))
        .limit(limit + 1);
      const pageIds = rows.slice(0, limit).map((r) => r.id);
      const members = (
        await Promise.all(
          chunks(pageIds, D1_MAX_IDS).map((ids) =>
            db
              .select()
              .from(participants)
              .where(and(eq(participants.orgId, principal.orgId), inArray(participants.roomId, ids)))
              .orderBy(participants.joinedAt, participants.accountId),
          ),
        )
      ).flat();
      const toRoom = (row: (typeof rows)[number]): Room => ({
        id: row.id,
        orgId: row.orgId,
        type: row.type,
        name: row.name,
        meta: row.meta,
        participants: members
          .filter((m) => m.roomId === row.id)
          .map((m) => ({ accountId: m.accountId, role: m.role, autoRespond: m.autoRespond, joinedAt: m.joinedAt })),
        createdAt: row.createdAt,
      });
      return c.json(pageOf(rows, limit, toRoom, (row) => [row.createdAt, row.id]));
    },
  )
  .get(
    "/:id",
    describe({ summary: "Get a room", tags: ["rooms"], responses: { 200: RoomSchema } }),
    auth("apiKey", "account"),
    async (c) => {
      const record = unwrap(await roomStub(c.env, roomIdParam(c)).getRoom(actorOf(orgPrincipal(c))));
      return c.json(record.room);
    },
  )
  .patch(
    "/:id",
    describe({ summary: "Change a room's name or meta", tags: ["rooms"], responses: { 200: RoomSchema } }),
    auth("apiKey", "account"),
    jsonBody(UpdateRoomSchema),
    async (c) => {
      const record = unwrap(
        await roomStub(c.env, roomIdParam(c)).updateRoom(actorOf(orgPrincipal(c)), c.req.valid("json")),
      );
      await writeThrough(c.env.DB, mirrorRoomStatements(c.env.DB, record));
      return c.json(record.room);
    },
  )
  .post(
    "/:id/participants",
    describe({
      summary: "Add a participant (standard rooms only)",
      tags: ["rooms"],
      responses: { 201: ParticipantSchema },
      otherResponses: {
        409: errorResponse("A dm room (`ROOM_IMMUTABLE`), or an account already taking part (`CONFLICT`)"),
      },
    }),
    auth("apiKey", "account"),
    jsonBody(ParticipantInputSchema),
    async (c) => {
      const principal = orgPrincipal(c);
      const roomId = roomIdParam(c);
      const [spec] = await resolveParticipants(createDb(c.env.DB), principal.orgId, [c.req.valid("json")], "accountId");
      const { participant, record } = unwrap(await roomStub(c.env, roomId).addParticipant(actorOf(principal), spec));
      await writeThrough(c.env.DB, mirrorRoomStatements(c.env.DB, record));
      return c.json(participant, 201);
    },
  )
  .patch(
    "/:id/participants/:accountId",
    describe({
      summary: "Change a participant's role or autoRespond",
      tags: ["rooms"],
      responses: { 200: ParticipantSchema },
      otherResponses: { 409: errorResponse("A deleted account's place in a dm room (`CONFLICT`)") },
    }),
    auth("apiKey", "account"),
    jsonBody(UpdateParticipantSchema),
    async (c) => {
      const roomId = roomIdParam(c);
      const accountId = idParam(c, "accountId", "acc");
      const { participant, record } = unwrap(
        await roomStub(c.env, roomId).updateParticipant(actorOf(orgPrincipal(c)), accountId, c.req.valid("json")),
      );
      await writeThrough(c.env.DB, mirrorRoomStatements(c.env.DB, record));
      return c.json(participant);
    },
  )
  .delete(
    "/:id/participants/:accountId",
    describe({
      summary: "Remove a participant (standard rooms only)",
      tags: ["rooms"],
      responses: { 204: null },
      otherResponses: { 409: errorResponse("A dm room (`ROOM_IMMUTABLE`)") },
    }),
    auth("apiKey", "account"),
    async (c) => {
      const roomId = roomIdParam(c);
      const accountId = idParam(c, "accountId", "acc");
      const { record } = unwrap(await roomStub(c.env, roomId).removeParticipant(actorOf(orgPrincipal(c)), accountId));
      await writeThrough(c.env.DB, mirrorRoomStatements(c.env.DB, record));
      return c.body(null, 204);
    },
  )
  .post(
    "/:roomId/conversations",
    describe({
      summary: "Start a conversation in a room",
      tags: ["conversations"],
      responses: { 201: ConversationSchema },
    }),
    auth("apiKey", "account"),
    jsonBody(CreateConversationSchema),
    async (c) => {
      const roomId = idParam(c, "roomId", "room");
      const record = unwrap(
        await roomStub(c.env, roomId).createConversation(
          actorOf(orgPrincipal(c)),
          newConversationId(roomId),
          c.req.valid("json"),
        ),
      );
      await writeThrough(c.env.DB, [mirrorConversationStatement(c.env.DB, record)]);
      return c.json(record.conversation, 201);
    },
  );
