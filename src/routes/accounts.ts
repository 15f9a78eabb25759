import { and, desc, eq, lt } from "drizzle-orm";
import { Hono } from "hono";
import { auth, orgPrincipal } from "../auth/middleware";
import { chunks, createDb, roomIdsOfAccount } from "../db/client";
import { mirrorRoomStatements, writeThrough } from "../db/mirror";
import { accounts } from "../db/schema";
import type { AppEnv } from "../env";
import { hubStub } from "../hub/client";
import { ApiError, notFound } from "../errors";
import { decodeCursor, pageOf } from "../http/cursor";
import { describe } from "../http/openapi";
import { idParam, jsonBody, query } from "../http/validate";
import { newId } from "../lib/ids";
import {
  AccountSchema,
  CreateAccountSchema,
  ListAccountsQuerySchema,
  UpdateAccountSchema,
  type Account,
  type AgentSettings,
  type AgentSettingsPatch,
} from "../protocol/accounts";
import { listOf, pageQuerySchema } from "../protocol/common";
import { roomStub } from "../room/client";

/** How many rooms a deleted account leaves at once (their D1 mirrors are written in one batch). */
const ROOMS_AT_ONCE = 25;

type AccountRow = typeof accounts.$inferSelect;

/** An agent's settings after a PATCH: the keys given replace those settings; `null` removes one. */
function patchAgent(current: AgentSettings | null, patch: AgentSettingsPatch): AgentSettings {
  const merged: Record<string, unknown> = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete merged[key];
    else if (value !== undefined) merged[key] = value;
  }
  return merged as AgentSettings;
}

/** The contract's Account from its row. */
export function toAccount(row: AccountRow): Account {
  return {
    id: row.id,
    orgId: row.orgId,
    type: row.type,
    name: row.name,
    email: row.email,
    meta: row.meta,
    agent: (row.agent as AgentSettings | null) ?? null,
    createdAt: row.createdAt,
  };
}

/** `/v1/accounts`: users and agents of the org. */
export const accountRoutes = new Hono<AppEnv>()
  .post(
    "/",
    describe({ summary: "Create a user or agent", tags: ["accounts"], responses: { 201: AccountSchema } }),
    auth("apiKey"),
    jsonBody(CreateAccountSchema),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const input = c.req.valid("json");
      const now = new Date().toISOString();
      const row: AccountRow = {
        id: newId("acc"),
        orgId,
        type: input.type,
        name: input.name,
        email: input.email ?? null,
        meta: input.meta ?? {},
        agent: input.type === "agent" ? (input.agent ?? {}) : null,
        createdAt: now,
        updatedAt: now,
      };
      await createDb(c.env.DB).insert(accounts).values(row);
      return c.json(toAccount(row), 201);
    },
  )
  .get(
    "/",
    describe({ summary: "List accounts, newest first", tags: ["accounts"], responses: { 200: listOf(AccountSchema) } }),
    auth("apiKey"),
    query(ListAccountsQuerySchema.extend(pageQuerySchema.shape)),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const { type, limit, cursor } = c.req.valid("query");
      const rows = await createDb(c.env.DB)
        .select()
        .from(accounts)
        .where(
          and(
            eq(accounts.orgId, orgId),
            type ? eq(accounts.type, type) : undefined,
            cursor ? lt(accounts.id, decodeCursor(cursor, "acc")[1]) : undefined,
          ),
        )
        .orderBy(desc(accounts.id))
        .limit(limit + 1);
      return c.json(pageOf(rows, limit, toAccount, (row) => ["", row.id]));
    },
  )
  .get(
    "/:id",
    describe({
      summary: "Get an account (an account token: only its own)",
      tags: ["accounts"],
      responses: { 200: AccountSchema },
    }),
    auth("apiKey", "account", "session"),
    async (c) => {
      const principal = orgPrincipal(c);
      const id = idParam(c, "id", "acc");
      if (principal.kind !== "apiKey" && principal.accountId !== id) throw notFound("account");
      const row = await createDb(c.env.DB)
        .select()
        .from(accounts)
        .where(and(eq(accounts.id, id), eq(accounts.orgId, principal.orgId)))
        .get();
      if (!row) throw notFound("account");
      return c.json(toAccount(row));
    },
  )
  .patch(
    "/:id",
    describe({ summary: "Change an account", tags: ["accounts"], responses: { 200: AccountSchema } }),
    auth("apiKey"),
    jsonBody(UpdateAccountSchema),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const id = idParam(c, "id", "acc");
      const patch = c.req.valid("json");
      const db = createDb(c.env.DB);
      const current = await db
        .select()
        .from(accounts)
        .where(and(eq(accounts.id, id), eq(accounts.orgId, orgId)))
        .get();
      if (!current) throw notFound("account");
      if (patch.agent !== undefined && current.type !== "agent") {
        throw new ApiError("BAD_REQUEST", "invalid request body", [
          { path: "agent", message: "only agent accounts have agent settings" },
        ]);
      }
      const [row] = await db
        .update(accounts)
        .set({
          ...(patch.name !== undefined ? { name: patch.name } : {}),
          ...(patch.email !== undefined ? { email: patch.email } : {}),
          ...(patch.meta !== undefined ? { meta: patch.meta } : {}),
          ...(patch.agent !== undefined ? { agent: patchAgent(current.agent, patch.agent) } : {}),
          updatedAt: new Date().toISOString(),
        })
        .where(and(eq(accounts.id, id), eq(accounts.orgId, orgId)))
        .returning();
      if (!row) throw notFound("account");
      return c.json(toAccount(row));
    },
  )
  .delete(
    "/:id",
    describe({
      summary: "Delete an account: its tokens stop working and it leaves every room it takes part in",
      tags: ["accounts"],
      responses: { 204: null },
    }),
    auth("apiKey"),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const id = idParam(c, "id", "acc");
      const db = createDb(c.env.DB);
      const [found] = await db
        .select({ id: accounts.id })
        .from(accounts)
        .where(and(eq(accounts.id, id), eq(accounts.orgId, orgId)));
      if (!found) throw notFound("account");
      // Out of its rooms first: should a room fail, the account is still there and the DELETE can be retried.
      for (const batch of chunks(await roomIdsOfAccount(db, orgId, id), ROOMS_AT_ONCE)) {
        const records = await Promise.all(batch.map((room) => roomStub(c.env, room.id).removeDeletedAccount(id)));
        const mirrors = records.flatMap((record) => (record ? mirrorRoomStatements(c.env.DB, record) : []));
        if (mirrors.length > 0) await writeThrough(c.env.DB, mirrors);
      }
      const deleted = await db
        .delete(accounts)
        .where(and(eq(accounts.id, id), eq(accounts.orgId, orgId)))
        .returning({ id: accounts.id });
      if (deleted.length === 0) throw notFound("account");
      // Its tokens are refused from now on: the org stream's sockets opened with them close now.
      await hubStub(c.env, orgId)
        .accountDeleted(id)
        .catch((error) => console.error("closing the deleted account's hub sockets failed", String(error)));
      return c.body(null, 204);
    },
  );
