import { drizzle } from "drizzle-orm/d1";
import * as schema from "./schema";

/** The drizzle client over D1. */
export function createDb(d1: D1Database) {
  return drizzle(d1, { schema });
}

/** The drizzle client type. */
export type Db = ReturnType<typeof createDb>;
