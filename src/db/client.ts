import { and, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import * as schema from "./schema";

const clients = new WeakMap<D1Database, ReturnType<typeof build>>();

function build(d1: D1Database) {
  return drizzle(d1, { schema });
}

/**
 * The drizzle client over D1, made once per binding: building one walks the whole schema (relational config), which
 * cost more CPU than the queries of a message's path when it was done per call.
 */
export function createDb(d1: D1Database) {
  let db = clients.get(d1);
  if (!db) {
    db = build(d1);
    clients.set(d1, db);
  }
  return db;
}

/** The drizzle client type. */
export type Db = ReturnType<typeof createDb>;

/** How many ids one D1 query binds at most (D1 allows 100 bound parameters; the rest are for other filters). */
export const D1_MAX_IDS = 90;

/** Splits a list into pieces of at most `size`. */
export function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** The ids of the rooms an account takes part in, as a subquery (for `inArray`). */
export function roomIdsOfAccount(db: Db, orgId: string, accountId: string) {
  return db
    .select({ id: schema.participants.roomId })
    .from(schema.participants)
    .where(and(eq(schema.participants.orgId, orgId), eq(schema.participants.accountId, accountId)));
}
