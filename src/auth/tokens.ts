import { sign, verify } from "hono/jwt";
import { ApiError } from "../errors";
import type { Bindings } from "../env";
import { newId } from "../lib/ids";

const ALGORITHM = "HS256";
const AUDIENCE = "parley-api";

/** The two token types this service issues. */
export type TokenKind = "account" | "session";

/** The claims of a verified token. */
export interface TokenClaims {
  kind: TokenKind;
  orgId: string;
  accountId: string;
  conversationId?: string;
  /** The API key that issued the token: revoking it revokes the token. */
  keyId?: string;
  /** Expiry, in seconds since the epoch (verified tokens only). */
  exp?: number;
}

function secretOf(env: Bindings): string {
  if (!env.JWT_SECRET || env.JWT_SECRET.length < 16) {
    console.error("JWT_SECRET is missing or shorter than 16 characters");
    throw new ApiError("UNAVAILABLE", "token service is not configured");
  }
  return env.JWT_SECRET;
}

/** Issues an HS256 JWT with `exp`, `iss`, `aud` and the token type; answers the token and its expiry. */
export async function issueToken(env: Bindings, claims: TokenClaims, ttlSeconds: number) {
  const now = Math.floor(Date.now() / 1000);
  const exp = now + ttlSeconds;
  const token = await sign(
    {
      iss: env.JWT_ISSUER ?? "parley",
      aud: AUDIENCE,
      sub: claims.accountId,
      org: claims.orgId,
      typ: claims.kind,
      ...(claims.conversationId ? { conv: claims.conversationId } : {}),
      ...(claims.keyId ? { key: claims.keyId } : {}),
      jti: newId("tok"),
      iat: now,
      exp,
    },
    secretOf(env),
    ALGORITHM,
  );
  return { token, expiresAt: new Date(exp * 1000).toISOString() };
}

/** Verifies a token's signature (HS256 only), expiry, issuer, audience and type; `null` when any check fails. */
export async function verifyToken(env: Bindings, token: string): Promise<TokenClaims | null> {
  let payload: Record<string, unknown>;
  try {
    payload = await verify(token, secretOf(env), { alg: ALGORITHM, iss: env.JWT_ISSUER ?? "parley", aud: AUDIENCE });
  } catch (error) {
    if (error instanceof ApiError) throw error;
    return null;
  }
  const { typ, org, sub, conv, key, exp } = payload;
  if (typeof exp !== "number" || typeof org !== "string" || typeof sub !== "string") return null;
  const issuer = typeof key === "string" ? { keyId: key } : {};
  if (typ === "account") return { kind: "account", orgId: org, accountId: sub, exp, ...issuer };
  if (typ === "session" && typeof conv === "string") {
    return { kind: "session", orgId: org, accountId: sub, conversationId: conv, exp, ...issuer };
  }
  return null;
}
