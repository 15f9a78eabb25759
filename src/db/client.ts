import { drizzle } from "drizzle-orm/d1";
import * as schema from "./schema";

/** The drizzle client over D1. */
export function createDb(d1: D1Database) {
  return drizzle(d1, { schema });
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
