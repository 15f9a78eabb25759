import { Hono } from "hono";
import { auth, orgPrincipal } from "../auth/middleware";
import { createDb } from "../db/client";
import { flowRuns } from "../db/schema";
import type { AppEnv } from "../env";
import { notFound } from "../errors";
import { decodeCursor, pageOf } from "../http/cursor";
import { describe } from "../http/openapi";
import { idParam, query } from "../http/validate";
import { listOf, pageQuerySchema } from "../protocol/common";
import { FlowRunSchema, ListFlowRunsQuerySchema } from "../protocol/flows";
import { listRuns, toFlowRun } from "../flows/runs";
import { and, eq } from "drizzle-orm";

/** `/v1/flow-runs`: the executions of agents' flows, newest first. */
export const flowRunRoutes = new Hono<AppEnv>()
  .get(
    "/",
    describe({
      summary: "List flow runs, newest first",
      tags: ["flows"],
      responses: { 200: listOf(FlowRunSchema) },
    }),
    auth("apiKey"),
    query(ListFlowRunsQuerySchema.extend(pageQuerySchema.shape)),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const { limit, cursor, ...filter } = c.req.valid("query");
      const rows = await listRuns(c.env.DB, orgId, {
        ...filter,
        before: cursor ? decodeCursor(cursor, "run")[1] : undefined,
        limit: limit + 1,
      });
      return c.json(pageOf(rows, limit, toFlowRun, (row) => ["", row.id]));
    },
  )
  .get(
    "/:id",
    describe({ summary: "Get a flow run", tags: ["flows"], responses: { 200: FlowRunSchema } }),
    auth("apiKey"),
    async (c) => {
      const { orgId } = orgPrincipal(c);
      const id = idParam(c, "id", "run");
      const row = await createDb(c.env.DB)
        .select()
        .from(flowRuns)
        .where(and(eq(flowRuns.id, id), eq(flowRuns.orgId, orgId)))
        .get();
      if (!row) throw notFound("flow run");
      return c.json(toFlowRun(row));
    },
  );
