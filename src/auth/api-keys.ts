import { and, eq, isNull } from "drizzle-orm";
import type { Db } from "../db/client";
import { apiKeys } from "../db/schema";
import { randomToken, sha256Hex } from "../lib/crypto";
import { newId } from "../lib/ids";

/** Creates an API key for an org; the secret is answered once and only its SHA-256 is stored. */
export async function createApiKey(db: Db, orgId: string, name: string | null) {
  const apiKey = `sk_${randomToken(32)}`;
  const row = { id: newId("key"), orgId, name, keyHash: await sha256Hex(apiKey), createdAt: new Date().toISOString() };
  return { row, apiKey, statement: db.insert(apiKeys).values(row) };
}

/** The org and key id of a live API key, or `null`. */
export async function lookupApiKey(db: Db, apiKey: string): Promise<{ orgId: string; keyId: string } | null> {
  const hash = await sha256Hex(apiKey);
  const row = await db
    .select({ orgId: apiKeys.orgId, keyId: apiKeys.id })
    .from(apiKeys)
    .where(and(eq(apiKeys.keyHash, hash), isNull(apiKeys.revokedAt)))
    .get();
  return row ?? null;
}
