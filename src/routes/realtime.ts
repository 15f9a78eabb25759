import { and, eq, isNull } from "drizzle-orm";
import type { Context } from "hono";
import { Hono } from "hono";
import { z } from "zod";
import { auth, orgPrincipal } from "../auth/middleware";
import type { OrgPrincipal } from "../auth/principal";
import { requireSessionScope } from "../auth/session-scope";
import { createDb } from "../db/client";
import { apiKeyRooms, apiKeys, participants, rooms } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError, notFound } from "../errors";
import { describe } from "../http/openapi";
import { idParam } from "../http/validate";
import { ACTOR_HEADER, type SocketActor } from "../realtime/sockets";
import { roomIdOfConversation } from "../room/client";

/** The credential of an upgrade may come as `?token=` (browsers cannot set headers on a WebSocket). */
const UpgradeQuerySchema = z.object({
  token: z.string().optional().meta({ description: "The credential, instead of `Authorization: Bearer`" }),
});
const UPGRADE_RESPONSES = { 101: { description: "Switching protocols: the socket is open" } };

/** Refuses anything but a WebSocket upgrade. */
function requireUpgrade(c: Context<AppEnv>): void {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new ApiError("BAD_REQUEST", "this endpoint only accepts WebSocket upgrades (Upgrade: websocket)", [
      { path: "(headers).upgrade", message: "must be 'websocket'" },
    ]);
  }
}

/** The upgrade request as an object receives it: the checked principal travels in a header only the Worker sets. */
function forward(c: Context<AppEnv>, principal: OrgPrincipal): Request {
  const actor: SocketActor = {
    orgId: principal.orgId,
    kind: principal.kind,
    ...(principal.kind !== "apiKey"
      ? {
          accountId: principal.accountId,
          expiresAt: principal.expiresAt,
          ...(principal.keyId ? { issuerKeyId: principal.keyId } : {}),
        }
      : { keyId: principal.keyId }),
    ...(principal.kind === "session" ? { conversationId: principal.conversationId } : {}),
  };
  const headers = new Headers(c.req.raw.headers);
  headers.set(ACTOR_HEADER, JSON.stringify(actor));
  headers.set("x-request-id", c.get("requestId"));
  headers.delete("authorization");
  return new Request(c.req.url, { method: "GET", headers });
}

/**
 * Refuses an account that is not (or no longer) a participant of the room, and a session that lost its scope (its
 * participant left the room, or its conversation was deleted): either has nothing left to follow.
 */
async function requireParticipant(c: Context<AppEnv>, principal: OrgPrincipal, roomId: string): Promise<void> {
  if (principal.kind === "session") return requireSessionScope(c.env.DB, principal);
  if (principal.kind === "apiKey") return;
  const member = await createDb(c.env.DB)
    .select({ id: participants.accountId })
    .from(participants)
    .where(
      and(
        eq(participants.orgId, principal.orgId),
        eq(participants.roomId, roomId),
        eq(participants.accountId, principal.accountId),
      ),
    )
    .get();
  if (!member) throw new ApiError("FORBIDDEN", "not a participant of this room");
}

/**
 * Records that a key (the socket's, or its token's issuer) has a socket in a room, so that revoking the key closes it
 * at once (`closeKeySockets`), and checks the key again after: a revoke that began after the first check either sees
 * the record and tells the room (which then refuses this upgrade too), or came first and is seen here (401).
 */
async function recordKeyRoom(c: Context<AppEnv>, keyId: string, roomId: string): Promise<void> {
  const db = createDb(c.env.DB);
  const [, live] = await db.batch([
    db.insert(apiKeyRooms).values({ keyId, roomId }).onConflictDoNothing(),
    db
      .select({ id: apiKeys.id })
      .from(apiKeys)
      .where(and(eq(apiKeys.id, keyId), isNull(apiKeys.revokedAt))),
  ]);
  if (live.length === 0) throw new ApiError("UNAUTHORIZED", "API key revoked");
}

/** The realtime upgrades: `/v1/realtime` (the org hub) and `/v1/rooms/{roomId}/realtime` (one room). */
export const realtimeRoutes = new Hono<AppEnv>()
  .get(
    "/realtime",
    describe({
      summary: "Org-wide event stream (WebSocket upgrade; `?token=` allowed)",
      tags: ["realtime"],
      description: "Frames are described in API.md section 8.",
      query: UpgradeQuerySchema,
      otherResponses: UPGRADE_RESPONSES,
    }),
    auth("apiKey", "account", "session"),
    async (c) => {
      const principal = orgPrincipal(c);
      // A session acts as one participant in one conversation: it needs both. (An account may follow its
      // notifications with no room.)
      await requireSessionScope(c.env.DB, principal);
      // After the credential's checks: a plain GET tells a client (a browser sees a refused upgrade only as 1006)
      // whether its credential is refused (401/403/404) or only the upgrade is missing (400).
      requireUpgrade(c);
      return c.env.HUBS.get(c.env.HUBS.idFromName(principal.orgId)).fetch(forward(c, principal));
    },
  )
  .get(
    "/rooms/:roomId/realtime",
    describe({
      summary: "One room's event stream and posting (WebSocket upgrade; `?token=` allowed)",
      tags: ["realtime"],
      description: "Frames are described in API.md section 8.",
      query: UpgradeQuerySchema,
      otherResponses: UPGRADE_RESPONSES,
    }),
    auth("apiKey", "account", "session"),
    async (c) => {
      const principal = orgPrincipal(c);
      const roomId = idParam(c, "roomId", "room");
      // Authorisation happens here, before the room's object is touched.
      const room = await createDb(c.env.DB)
        .select({ id: rooms.id })
        .from(rooms)
        .where(and(eq(rooms.id, roomId), eq(rooms.orgId, principal.orgId)))
        .get();
      if (!room) throw notFound("room");
      if (principal.kind === "session" && roomIdOfConversation(principal.conversationId) !== roomId) {
        throw new ApiError("FORBIDDEN", "a session token only connects to its conversation's room");
      }
      await requireParticipant(c, principal, roomId);
      // After the credential's checks, as for `/v1/realtime`.
      requireUpgrade(c);
      if (principal.keyId) await recordKeyRoom(c, principal.keyId, roomId);
      return c.env.ROOMS.get(c.env.ROOMS.idFromName(roomId)).fetch(forward(c, principal));
    },
  );
