import { and, eq, inArray, isNull } from "drizzle-orm";
import { chunks, D1_MAX_IDS, type Db } from "../db/client";
import { apiKeys } from "../db/schema";
import { randomToken, sha256Hex } from "../lib/crypto";
import { newId } from "../lib/ids";

/** Creates an API key for an org; the secret is answered once and only its SHA-256 is stored. */
export async function createApiKey(db: Db, orgId: string, name: string | null) {
  const apiKey = `sk_${randomToken(32)}`;
  const row = { id: newId("key"), orgId, name, keyHash: await sha256Hex(apiKey), createdAt: new Date().toISOString() };
  return { row, apiKey, statement: db.insert(apiKeys).values(row) };
}

/** Of these key ids, the ones that are no longer live (revoked, or gone). */
export async function revokedKeyIds(db: Db, keyIds: string[]): Promise<Set<string>> {
  const revoked = new Set(keyIds);
  for (const group of chunks(keyIds, D1_MAX_IDS)) {
    const live = await db
      .select({ id: apiKeys.id })
      .from(apiKeys)
      .where(and(inArray(apiKeys.id, group), isNull(apiKeys.revokedAt)));
    for (const row of live) revoked.delete(row.id);
  }
  return revoked;
}

/** How long an isolate trusts a key it looked up; a revocation reaches other isolates within this time. */
const KEY_CACHE_MS = 30_000;
const KEY_CACHE_MAX = 1_000;
const keyCache = new Map<string, { orgId: string; keyId: string; until: number }>();

/**
 * The org and key id of a live API key, or `null`. Live keys are remembered by this isolate for 30 s, so the hot
 * path does not read D1 on every request; revoking a key forgets it here at once.
 */
export async function lookupApiKey(db: Db, apiKey: string): Promise<{ orgId: string; keyId: string } | null> {
  const hash = await sha256Hex(apiKey);
  const cached = keyCache.get(hash);
  if (cached && cached.until > Date.now()) return { orgId: cached.orgId, keyId: cached.keyId };
  const row = await db
    .select({ orgId: apiKeys.orgId, keyId: apiKeys.id })
    .from(apiKeys)
    .where(and(eq(apiKeys.keyHash, hash), isNull(apiKeys.revokedAt)))
    .get();
  if (!row) {
    keyCache.delete(hash);
    return null;
  }
  if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value!);
  keyCache.set(hash, { ...row, until: Date.now() + KEY_CACHE_MS });
  return row;
}

/** Forgets a revoked key in this isolate. */
export function forgetApiKey(keyId: string): void {
  for (const [hash, entry] of keyCache) if (entry.keyId === keyId) keyCache.delete(hash);
}
