import { and, eq } from "drizzle-orm";
import { Hono } from "hono";
import { auth, orgPrincipal } from "../auth/middleware";
import { issueToken } from "../auth/tokens";
import { createDb } from "../db/client";
import { accounts } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { describe } from "../http/openapi";
import { jsonBody } from "../http/validate";
import { CreateTokenSchema, TokenResponseSchema } from "../protocol/orgs";

/** `POST /v1/tokens`: an API key issues an account token. */
export const tokenRoutes = new Hono<AppEnv>().post(
  "/",
  describe({ summary: "Issue an account token", tags: ["credentials"], responses: { 201: TokenResponseSchema } }),
  auth("apiKey"),
  jsonBody(CreateTokenSchema),
  async (c) => {
    const principal = orgPrincipal(c);
    const { orgId } = principal;
    const { accountId, ttlSeconds } = c.req.valid("json");
    const account = await createDb(c.env.DB)
      .select({ id: accounts.id })
      .from(accounts)
      .where(and(eq(accounts.id, accountId), eq(accounts.orgId, orgId)))
      .get();
    if (!account) {
      throw new ApiError("BAD_REQUEST", "unknown account", [
        { path: "accountId", message: "no account with this id in the org" },
      ]);
    }
    return c.json(
      await issueToken(c.env, { kind: "account", orgId, accountId, keyId: principal.keyId }, ttlSeconds),
      201,
    );
  },
);
