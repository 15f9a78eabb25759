import { z } from "zod";
import { idPattern, type IdPrefix } from "../lib/ids";

/** A contract id of one type, e.g. `idSchema("acc")` matches `acc_...`. */
export const idSchema = (prefix: IdPrefix) =>
  z.string().regex(idPattern(prefix), { message: `must be an id starting with ${prefix}_` });

/** Free-form JSON object metadata, at most 16 KiB serialised. */
export const metaSchema = z
  .record(z.string(), z.unknown())
  .refine((value) => jsonSize(value) <= 16 * 1024, { message: "must be at most 16 KiB as JSON" });

/** ISO-8601 UTC timestamp. */
export const timestampSchema = z.string().meta({ format: "date-time", example: "2026-11-21T12:00:00.000Z" });

/** A whole number in a query string: digits only (no sign, exponent, hex or blank), then checked by `schema`. */
export const queryNumber = <T extends z.ZodType<number, number>>(schema: T) =>
  z
    .string()
    .regex(/^\d{1,15}$/, { message: "must be a whole number" })
    .transform(Number)
    .pipe(schema);

/** `limit` and `cursor` of every list. */
export const pageQuerySchema = z.object({
  limit: queryNumber(z.number().int().min(1).max(100)).default(20),
  cursor: z.string().min(1).max(512).optional(),
});

/** The envelope of every list answer. */
export const listOf = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), nextCursor: z.string().nullable() });

/** The contract's error body. */
export const ErrorBodySchema = z
  .object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      requestId: z.string(),
      details: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    }),
  })
  .meta({ id: "Error" });

/** `ttlSeconds` of issued tokens: 1 s to 30 days, default one hour. */
export const ttlSecondsSchema = z
  .number()
  .int()
  .min(1)
  .max(30 * 24 * 3600)
  .default(3600);

/** The size of a value serialised as JSON, in bytes. */
export function jsonSize(value: unknown): number {
  return new TextEncoder().encode(JSON.stringify(value)).byteLength;
}

/** A display name. */
export const nameSchema = z.string().trim().min(1).max(200);
