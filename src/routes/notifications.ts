import { and, desc, eq, inArray, isNull, lt } from "drizzle-orm";
import { Hono, type Context } from "hono";
import { auth, orgPrincipal } from "../auth/middleware";
import { chunks, createDb, D1_MAX_IDS, type Db } from "../db/client";
import { accounts, participants, rooms } from "../db/schema";
import { notificationPreferences, notifications, pushSubscriptions } from "../db/schema-notifications";
import type { AppEnv } from "../env";
import { ApiError, notFound } from "../errors";
import { decodeCursor, pageOf } from "../http/cursor";
import { describe } from "../http/openapi";
import { idParam, jsonBody, query } from "../http/validate";
import { newId } from "../lib/ids";
import { toNotification } from "../notifications/records";
import { fromBase64Url } from "../notifications/push/base64url";
import { isP256Point } from "../notifications/push/encrypt";
import { listOf, pageQuerySchema } from "../protocol/common";
import {
  CreatePushSubscriptionSchema,
  ListNotificationsQuerySchema,
  NotificationSchema,
  PreferencesSchema,
  PushSubscriptionSchema,
  PutPreferencesSchema,
  VapidPublicKeySchema,
  type Preferences,
} from "../protocol/notifications";

type PreferencesRow = typeof notificationPreferences.$inferSelect;
type PushSubscriptionRow = typeof pushSubscriptions.$inferSelect;

/**
 * The account a request may act on: with an API key any account of the org, with an account token only its own.
 * Anything else is a 404, so other accounts' existence does not leak.
 */
async function accountInScope(c: Context<AppEnv>): Promise<{ orgId: string; accountId: string }> {
  const principal = orgPrincipal(c);
  const accountId = idParam(c, "id", "acc");
  if (principal.kind !== "apiKey") {
    if (principal.accountId !== accountId) throw notFound("account");
    return { orgId: principal.orgId, accountId };
  }
  const row = await createDb(c.env.DB)
    .select({ id: accounts.id })
    .from(accounts)
    .where(and(eq(accounts.id, accountId), eq(accounts.orgId, principal.orgId)))
    .get();
  if (!row) throw notFound("account");
  return { orgId: principal.orgId, accountId };
}

/**
 * A 400 naming each muted room that is not a room of the org, or, with an account token (`participant`), not a room
 * the account takes part in: the same answer as for a room that does not exist, so none leaks.
 */
async function requireRooms(db: Db, orgId: string, roomIds: string[], participant?: string): Promise<void> {
  const found = new Set<string>();
  for (const group of chunks([...new Set(roomIds)], D1_MAX_IDS)) {
    const rows = participant
      ? await db
          .select({ id: participants.roomId })
          .from(participants)
          .where(
            and(
              eq(participants.orgId, orgId),
              eq(participants.accountId, participant),
              inArray(participants.roomId, group),
            ),
          )
      : await db
          .select({ id: rooms.id })
          .from(rooms)
          .where(and(eq(rooms.orgId, orgId), inArray(rooms.id, group)));
    for (const row of rows) found.add(row.id);
  }
  const message = participant
    ? "no room with this id that the account takes part in"
    : "no room with this id in the org";
  const details = roomIds.flatMap((id, index) => (found.has(id) ? [] : [{ path: `mutedRoomIds.${index}`, message }]));
  if (details.length > 0) throw new ApiError("BAD_REQUEST", "unknown rooms", details);
}

function toPreferences(accountId: string, row: PreferencesRow | undefined): Preferences {
  return {
    accountId,
    channels: { push: row?.push ?? true, email: row?.email ?? true, websocket: row?.websocket ?? true },
    mutedRoomIds: row?.mutedRoomIds ?? [],
    updatedAt: row?.updatedAt ?? null,
  };
}

function toPushSubscription(row: PushSubscriptionRow) {
  return { id: row.id, accountId: row.accountId, endpoint: row.endpoint, createdAt: row.createdAt };
}

/** `/v1/notifications`: a recipient's in-app notifications, and marking them read. */
export const notificationRoutes = new Hono<AppEnv>()
  .get(
    "/",
    describe({
      summary: "List notifications, newest first (an account token: its own; an API key: any account, or all)",
      tags: ["notifications"],
      responses: { 200: listOf(NotificationSchema) },
    }),
    auth("apiKey", "account"),
    query(ListNotificationsQuerySchema),
    async (c) => {
      const principal = orgPrincipal(c);
      const { accountId, unread, limit, cursor } = c.req.valid("query");
      if (principal.kind === "account" && accountId !== undefined && accountId !== principal.accountId) {
        throw new ApiError("FORBIDDEN", "an account token lists only its own notifications");
      }
      const recipient = principal.kind === "account" ? principal.accountId : accountId;
      const rows = await createDb(c.env.DB)
        .select()
        .from(notifications)
        .where(
          and(
            eq(notifications.orgId, principal.orgId),
            recipient ? eq(notifications.accountId, recipient) : undefined,
            unread === "true" ? isNull(notifications.readAt) : undefined,
            cursor ? lt(notifications.id, decodeCursor(cursor, "ntf")[1]) : undefined,
          ),
        )
        .orderBy(desc(notifications.id))
        .limit(limit + 1);
      return c.json(pageOf(rows, limit, toNotification, (row) => ["", row.id]));
    },
  )
  .post(
    "/:id/read",
    describe({
      summary: "Mark a notification read (the first time counts)",
      tags: ["notifications"],
      responses: { 200: NotificationSchema },
    }),
    auth("apiKey", "account"),
    async (c) => {
      const principal = orgPrincipal(c);
      const id = idParam(c, "id", "ntf");
      const db = createDb(c.env.DB);
      const scope = and(
        eq(notifications.id, id),
        eq(notifications.orgId, principal.orgId),
        principal.kind === "account" ? eq(notifications.accountId, principal.accountId) : undefined,
      );
      await db
        .update(notifications)
        .set({ readAt: new Date().toISOString() })
        .where(and(scope, isNull(notifications.readAt)));
      const row = await db.select().from(notifications).where(scope).get();
      if (!row) throw notFound("notification");
      return c.json(toNotification(row));
    },
  );

/** `/v1/accounts/{id}/notification-preferences` and `/v1/accounts/{id}/push-subscriptions`. */
export const accountNotificationRoutes = new Hono<AppEnv>()
  .get(
    "/:id/notification-preferences",
    describe({
      summary: "Get an account's notification preferences",
      tags: ["notifications"],
      responses: { 200: PreferencesSchema },
    }),
    auth("apiKey", "account"),
    async (c) => {
      const { accountId } = await accountInScope(c);
      const row = await createDb(c.env.DB)
        .select()
        .from(notificationPreferences)
        .where(eq(notificationPreferences.accountId, accountId))
        .get();
      return c.json(toPreferences(accountId, row));
    },
  )
  .put(
    "/:id/notification-preferences",
    describe({
      summary: "Set an account's notification preferences (given fields replace; critical ignores them)",
      tags: ["notifications"],
      responses: { 200: PreferencesSchema },
    }),
    auth("apiKey", "account"),
    jsonBody(PutPreferencesSchema),
    async (c) => {
      const { orgId, accountId } = await accountInScope(c);
      const input = c.req.valid("json");
      const db = createDb(c.env.DB);
      if (input.mutedRoomIds) {
        const participant = orgPrincipal(c).kind === "account" ? accountId : undefined;
        await requireRooms(db, orgId, input.mutedRoomIds, participant);
      }
      const current = toPreferences(
        accountId,
        await db.select().from(notificationPreferences).where(eq(notificationPreferences.accountId, accountId)).get(),
      );
      const next = {
        accountId,
        orgId,
        websocket: input.channels?.websocket ?? current.channels.websocket,
        push: input.channels?.push ?? current.channels.push,
        email: input.channels?.email ?? current.channels.email,
        mutedRoomIds: input.mutedRoomIds ? [...new Set(input.mutedRoomIds)] : current.mutedRoomIds,
        updatedAt: new Date().toISOString(),
      };
      const { accountId: _key, ...changes } = next;
      await db
        .insert(notificationPreferences)
        .values(next)
        .onConflictDoUpdate({ target: notificationPreferences.accountId, set: changes });
      return c.json(toPreferences(accountId, next));
    },
  )
  .post(
    "/:id/push-subscriptions",
    describe({
      summary: "Register a browser's PushSubscription for an account (the same endpoint again updates its keys)",
      tags: ["notifications"],
      responses: { 201: PushSubscriptionSchema },
    }),
    auth("apiKey", "account"),
    jsonBody(CreatePushSubscriptionSchema),
    async (c) => {
      const { orgId, accountId } = await accountInScope(c);
      const { endpoint, keys } = c.req.valid("json");
      if (!(await isP256Point(keys.p256dh))) {
        throw new ApiError("BAD_REQUEST", "invalid push subscription", [
          { path: "keys.p256dh", message: "must be a public key on the P-256 curve" },
        ]);
      }
      const now = new Date().toISOString();
      const [row] = await createDb(c.env.DB)
        .insert(pushSubscriptions)
        .values({
          id: newId("psub"),
          orgId,
          accountId,
          endpoint,
          p256dh: keys.p256dh.replace(/=+$/, ""),
          auth: keys.auth.replace(/=+$/, ""),
          createdAt: now,
          updatedAt: now,
        })
        .onConflictDoUpdate({
          target: [pushSubscriptions.accountId, pushSubscriptions.endpoint],
          set: { p256dh: keys.p256dh.replace(/=+$/, ""), auth: keys.auth.replace(/=+$/, ""), updatedAt: now },
        })
        .returning();
      return c.json(toPushSubscription(row), 201);
    },
  )
  .get(
    "/:id/push-subscriptions",
    describe({
      summary: "List an account's push subscriptions",
      tags: ["notifications"],
      responses: { 200: listOf(PushSubscriptionSchema) },
    }),
    auth("apiKey", "account"),
    query(pageQuerySchema),
    async (c) => {
      const { orgId, accountId } = await accountInScope(c);
      const { limit, cursor } = c.req.valid("query");
      const rows = await createDb(c.env.DB)
        .select()
        .from(pushSubscriptions)
        .where(
          and(
            eq(pushSubscriptions.orgId, orgId),
            eq(pushSubscriptions.accountId, accountId),
            cursor ? lt(pushSubscriptions.id, decodeCursor(cursor, "psub")[1]) : undefined,
          ),
        )
        .orderBy(desc(pushSubscriptions.id))
        .limit(limit + 1);
      return c.json(pageOf(rows, limit, toPushSubscription, (row) => ["", row.id]));
    },
  )
  .delete(
    "/:id/push-subscriptions/:subscriptionId",
    describe({ summary: "Remove a push subscription", tags: ["notifications"], responses: { 204: null } }),
    auth("apiKey", "account"),
    async (c) => {
      const { orgId, accountId } = await accountInScope(c);
      const id = idParam(c, "subscriptionId", "psub");
      const deleted = await createDb(c.env.DB)
        .delete(pushSubscriptions)
        .where(
          and(
            eq(pushSubscriptions.id, id),
            eq(pushSubscriptions.orgId, orgId),
            eq(pushSubscriptions.accountId, accountId),
          ),
        )
        .returning({ id: pushSubscriptions.id });
      if (deleted.length === 0) throw notFound("push subscription");
      return c.body(null, 204);
    },
  );

/** `/v1/push/vapid-public-key`: the key browsers pass as `applicationServerKey` (public: no credential needed). */
export const pushRoutes = new Hono<AppEnv>().get(
  "/vapid-public-key",
  describe({
    summary: "The VAPID public key for PushManager.subscribe (503 when push is not configured)",
    tags: ["notifications"],
    responses: { 200: VapidPublicKeySchema },
    security: [],
  }),
  (c) => {
    const publicKey = c.env.VAPID_PUBLIC_KEY?.trim();
    if (!publicKey || !isPublicPoint(publicKey)) {
      throw new ApiError("UNAVAILABLE", "Web Push is not configured on this server");
    }
    return c.json({ publicKey });
  },
);

function isPublicPoint(key: string): boolean {
  try {
    const bytes = fromBase64Url(key);
    return bytes.byteLength === 65 && bytes[0] === 0x04;
  } catch {
    return false;
  }
}
