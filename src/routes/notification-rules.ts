import { and, desc, eq, inArray, lt } from "drizzle-orm";
import { Hono } from "hono";
import { auth, orgPrincipal } from "../auth/middleware";
import { createDb, type Db } from "../db/client";
import { accounts } from "../db/schema";
import { notificationRules } from "../db/schema-notifications";
import type { AppEnv } from "../env";
import { ApiError, notFound } from "../errors";
import { decodeCursor, pageOf } from "../http/cursor";
import { describe } from "../http/openapi";
import { idParam, jsonBody, query } from "../http/validate";
import { newId } from "../lib/ids";
import { toRule } from "../notifications/records";
import { listOf, pageQuerySchema } from "../protocol/common";
import { CreateRuleSchema, RuleSchema, UpdateRuleSchema, type Recipients } from "../protocol/notifications";
import { isTopicError, parseTopicPattern } from "../protocol/topics";

/** A rule's topic must follow the grammar of section 8 and name the rule's own org. */
function checkTopic(topic: string, orgId: string): void {
  const parsed = parseTopicPattern(topic, orgId);
  if (isTopicError(parsed)) {
    throw new ApiError("BAD_REQUEST", "invalid request body", [{ path: "topic", message: parsed.message }]);
  }
}

/** Listed recipients must be accounts of the org. */
async function checkRecipients(db: Db, recipients: Recipients, orgId: string): Promise<void> {
  if (recipients === "participants") return;
  const ids = [...new Set(recipients.accountIds)];
  const found = await db
    .select({ id: accounts.id })
    .from(accounts)
    .where(and(eq(accounts.orgId, orgId), inArray(accounts.id, ids)));
  const known = new Set(found.map((row) => row.id));
  const missing = ids.filter((id) => !known.has(id));
  if (missing.length > 0) {
    throw new ApiError(
      "BAD_REQUEST",
      "invalid request body",
      missing.map((id) => ({ path: "recipients.accountIds", message: `no account ${id} in this org` })),
    );
  }
}

/** `/v1/notification-rules`: the org's rules that turn events into notifications (API keys only). */
export const notificationRuleRoutes = new Hono<AppEnv>()
  .post(
    "/",
    describe({ summary: "Create a notification rule", tags: ["notifications"], responses: { 201: RuleSchema } }),
    auth("apiKey"),
    jsonBody(CreateRuleSchema),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const input = c.req.valid("json");
      const db = createDb(c.env.DB);
      checkTopic(input.topic, orgId);
      await checkRecipients(db, input.recipients, orgId);
      const now = new Date().toISOString();
      const row = {
        id: newId("rule"),
        orgId,
        name: input.name,
        topic: input.topic,
        channels: input.channels,
        recipients: input.recipients,
        priority: input.priority,
        template: input.template,
        createdAt: now,
        updatedAt: now,
      };
      await db.insert(notificationRules).values(row);
      return c.json(toRule(row), 201);
    },
  )
  .get(
    "/",
    describe({
      summary: "List notification rules, newest first",
      tags: ["notifications"],
      responses: { 200: listOf(RuleSchema) },
    }),
    auth("apiKey"),
    query(pageQuerySchema),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const { limit, cursor } = c.req.valid("query");
      const rows = await createDb(c.env.DB)
        .select()
        .from(notificationRules)
        .where(
          and(
            eq(notificationRules.orgId, orgId),
            cursor ? lt(notificationRules.id, decodeCursor(cursor, "rule")[1]) : undefined,
          ),
        )
        .orderBy(desc(notificationRules.id))
        .limit(limit + 1);
      return c.json(pageOf(rows, limit, toRule, (row) => ["", row.id]));
    },
  )
  .get(
    "/:id",
    describe({ summary: "Get a notification rule", tags: ["notifications"], responses: { 200: RuleSchema } }),
    auth("apiKey"),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const id = idParam(c, "id", "rule");
      const row = await createDb(c.env.DB)
        .select()
        .from(notificationRules)
        .where(and(eq(notificationRules.id, id), eq(notificationRules.orgId, orgId)))
        .get();
      if (!row) throw notFound("notification rule");
      return c.json(toRule(row));
    },
  )
  .patch(
    "/:id",
    describe({ summary: "Change a notification rule", tags: ["notifications"], responses: { 200: RuleSchema } }),
    auth("apiKey"),
    jsonBody(UpdateRuleSchema),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const id = idParam(c, "id", "rule");
      const patch = c.req.valid("json");
      const db = createDb(c.env.DB);
      if (patch.topic !== undefined) checkTopic(patch.topic, orgId);
      if (patch.recipients !== undefined) await checkRecipients(db, patch.recipients, orgId);
      const [row] = await db
        .update(notificationRules)
        .set({
          ...(patch.name !== undefined ? { name: patch.name } : {}),
          ...(patch.topic !== undefined ? { topic: patch.topic } : {}),
          ...(patch.channels !== undefined ? { channels: patch.channels } : {}),
          ...(patch.recipients !== undefined ? { recipients: patch.recipients } : {}),
          ...(patch.priority !== undefined ? { priority: patch.priority } : {}),
          ...(patch.template !== undefined ? { template: patch.template } : {}),
          updatedAt: new Date().toISOString(),
        })
        .where(and(eq(notificationRules.id, id), eq(notificationRules.orgId, orgId)))
        .returning();
      if (!row) throw notFound("notification rule");
      return c.json(toRule(row));
    },
  )
  .delete(
    "/:id",
    describe({ summary: "Delete a notification rule", tags: ["notifications"], responses: { 204: null } }),
    auth("apiKey"),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const id = idParam(c, "id", "rule");
      const deleted = await createDb(c.env.DB)
        .delete(notificationRules)
        .where(and(eq(notificationRules.id, id), eq(notificationRules.orgId, orgId)))
        .returning({ id: notificationRules.id });
      if (deleted.length === 0) throw notFound("notification rule");
      return c.body(null, 204);
    },
  );
