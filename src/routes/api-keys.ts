import { and, desc, eq, isNull, lt } from "drizzle-orm";
import { Hono } from "hono";
import { createApiKey, forgetApiKey } from "../auth/api-keys";
import { auth, orgPrincipal } from "../auth/middleware";
import { createDb } from "../db/client";
import { apiKeyRooms, apiKeys } from "../db/schema";
import type { AppEnv, Bindings } from "../env";
import { hubStub } from "../hub/client";
import { roomStub } from "../room/client";
import { notFound } from "../errors";
import { decodeCursor, pageOf } from "../http/cursor";
import { describe } from "../http/openapi";
import { idParam, jsonBody, query } from "../http/validate";
import { listOf, pageQuerySchema } from "../protocol/common";
import { ApiKeySchema, CreateApiKeyResponseSchema, CreateApiKeySchema } from "../protocol/orgs";

/** `/v1/api-keys`: create, list and revoke the org's API keys (API keys only). */
export const apiKeyRoutes = new Hono<AppEnv>()
  .post(
    "/",
    describe({
      summary: "Create an API key; the secret is shown once",
      tags: ["credentials"],
      responses: { 201: CreateApiKeyResponseSchema },
    }),
    auth("apiKey"),
    jsonBody(CreateApiKeySchema),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const db = createDb(c.env.DB);
      const key = await createApiKey(db, orgId, c.req.valid("json").name ?? null);
      await key.statement;
      return c.json({ id: key.row.id, name: key.row.name, apiKey: key.apiKey, createdAt: key.row.createdAt }, 201);
    },
  )
  .get(
    "/",
    describe({
      summary: "List the org's live API keys (never their secrets)",
      tags: ["credentials"],
      responses: { 200: listOf(ApiKeySchema) },
    }),
    auth("apiKey"),
    query(pageQuerySchema),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const { limit, cursor } = c.req.valid("query");
      const rows = await createDb(c.env.DB)
        .select({ id: apiKeys.id, name: apiKeys.name, createdAt: apiKeys.createdAt })
        .from(apiKeys)
        .where(
          and(
            eq(apiKeys.orgId, orgId),
            isNull(apiKeys.revokedAt),
            cursor ? lt(apiKeys.id, decodeCursor(cursor, "key")[1]) : undefined,
          ),
        )
        .orderBy(desc(apiKeys.id))
        .limit(limit + 1);
      return c.json(
        pageOf(
          rows,
          limit,
          (row) => row,
          (row) => ["", row.id],
        ),
      );
    },
  )
  .delete(
    "/:id",
    describe({ summary: "Revoke an API key", tags: ["credentials"], responses: { 204: null } }),
    auth("apiKey"),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const id = idParam(c, "id", "key");
      const revoked = await createDb(c.env.DB)
        .update(apiKeys)
        .set({ revokedAt: new Date().toISOString() })
        .where(and(eq(apiKeys.id, id), eq(apiKeys.orgId, orgId), isNull(apiKeys.revokedAt)))
        .returning({ id: apiKeys.id });
      if (revoked.length === 0) throw notFound("api key");
      forgetApiKey(id);
      await closeKeySockets(c.env, orgId, id);
      return c.body(null, 204);
    },
  );

/**
 * Closes a revoked key's sockets now: the org stream's, and those of every room that accepted one (`api_key_rooms`).
 * What fails here is closed by that object's next sweep (within 30 s).
 */
async function closeKeySockets(env: Bindings, orgId: string, keyId: string): Promise<void> {
  const db = createDb(env.DB);
  const rooms = await db.select({ id: apiKeyRooms.roomId }).from(apiKeyRooms).where(eq(apiKeyRooms.keyId, keyId));
  const closed = await Promise.allSettled([
    hubStub(env, orgId).keyRevoked(keyId),
    ...rooms.map((room) => roomStub(env, room.id).keyRevoked(keyId)),
  ]);
  const failed = closed.filter((result) => result.status === "rejected");
  if (failed.length > 0) {
    console.error("closing a revoked key's sockets failed", { keyId, failed: failed.length, of: closed.length });
  }
  await db.delete(apiKeyRooms).where(eq(apiKeyRooms.keyId, keyId));
}
