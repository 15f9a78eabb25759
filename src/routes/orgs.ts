import { Hono } from "hono";
import { createApiKey } from "../auth/api-keys";
import { auth } from "../auth/middleware";
import { createDb } from "../db/client";
import { orgs } from "../db/schema";
import type { AppEnv } from "../env";
import { describe } from "../http/openapi";
import { jsonBody } from "../http/validate";
import { newId } from "../lib/ids";
import { CreateOrgResponseSchema, CreateOrgSchema } from "../protocol/orgs";

/** `POST /v1/orgs`: the admin token creates an org and its first API key. */
export const orgRoutes = new Hono<AppEnv>().post(
  "/",
  describe({
    summary: "Create an org and its first API key (admin token)",
    tags: ["credentials"],
    responses: { 201: CreateOrgResponseSchema },
  }),
  auth("admin"),
  jsonBody(CreateOrgSchema),
  async (c) => {
    const { name } = c.req.valid("json");
    const db = createDb(c.env.DB);
    const org = { id: newId("org"), name, createdAt: new Date().toISOString() };
    const key = await createApiKey(db, org.id, "default");
    await db.batch([db.insert(orgs).values(org), key.statement]);
    return c.json({ org, apiKey: key.apiKey }, 201);
  },
);
