import { and, eq, sql } from "drizzle-orm";
import type { Context, MiddlewareHandler } from "hono";
import { createDb } from "../db/client";
import { accounts, apiKeys } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { timingSafeEqual } from "../lib/crypto";
import { lookupApiKey } from "./api-keys";
import type { OrgPrincipal, Principal } from "./principal";
import { verifyToken } from "./tokens";

/** The bearer token of a request: the `Authorization` header, or `?token=` on WebSocket upgrades. */
export function bearerToken(c: Context<AppEnv>): string | null {
  const header = c.req.header("authorization");
  if (header) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) throw new ApiError("UNAUTHORIZED", "the Authorization header must be 'Bearer <token>'");
    return match[1];
  }
  if (c.req.header("upgrade")?.toLowerCase() === "websocket") return c.req.query("token") ?? null;
  return null;
}

/** Resolves a token to its principal; throws 401 for anything missing, malformed, revoked, expired or foreign. */
export async function resolvePrincipal(c: Context<AppEnv>): Promise<Principal> {
  const token = bearerToken(c);
  if (!token) throw new ApiError("UNAUTHORIZED", "missing credentials: send 'Authorization: Bearer <token>'");
  if (token.startsWith("sk_")) {
    const key = await lookupApiKey(createDb(c.env.DB), token);
    if (!key) throw new ApiError("UNAUTHORIZED", "invalid or revoked API key");
    return { kind: "apiKey", ...key };
  }
  if (c.env.ADMIN_TOKEN && timingSafeEqual(token, c.env.ADMIN_TOKEN)) return { kind: "admin" };
  const claims = await verifyToken(c.env, token);
  if (!claims) throw new ApiError("UNAUTHORIZED", "invalid or expired token");
  // One read: the account still exists, and the key that issued the token is still live.
  const keyLive = claims.keyId
    ? sql<number>`EXISTS (SELECT 1 FROM ${apiKeys} WHERE ${apiKeys.id} = ${claims.keyId} AND ${apiKeys.revokedAt} IS NULL)`
    : sql<number>`1`;
  const account = await createDb(c.env.DB)
    .select({ id: accounts.id, keyLive })
    .from(accounts)
    .where(and(eq(accounts.id, claims.accountId), eq(accounts.orgId, claims.orgId)))
    .get();
  if (!account) throw new ApiError("UNAUTHORIZED", "the token's account no longer exists");
  if (!account.keyLive) throw new ApiError("UNAUTHORIZED", "the API key that issued this token was revoked");
  const common = {
    orgId: claims.orgId,
    accountId: claims.accountId,
    expiresAt: claims.exp! * 1000,
    ...(claims.keyId ? { keyId: claims.keyId } : {}),
  };
  return claims.kind === "session"
    ? { kind: "session", ...common, conversationId: claims.conversationId! }
    : { kind: "account", ...common };
}

/**
 * Route middleware: resolves the principal and admits only the given kinds. Other valid credentials get 403.
 * Only matched routes run it, so unknown routes stay 404 whatever the credential.
 */
export function auth(...kinds: Principal["kind"][]): MiddlewareHandler<AppEnv> {
  return async function authenticate(c, next) {
    const principal = await resolvePrincipal(c);
    if (!kinds.includes(principal.kind)) {
      throw new ApiError("FORBIDDEN", `this operation is not allowed with a credential of kind '${principal.kind}'`);
    }
    c.set("principal", principal);
    await next();
  };
}

/** The org principal of a route guarded by `auth` without "admin". */
export function orgPrincipal(c: Context<AppEnv>): OrgPrincipal {
  const principal = c.get("principal");
  if (principal.kind === "admin") throw new ApiError("FORBIDDEN", "the admin token only creates orgs");
  return principal;
}
