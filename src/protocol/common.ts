import { z } from "zod";
import { idPattern, type IdPrefix } from "../lib/ids";
import { isJsonObject } from "../lib/json";

/** A contract id of one type, e.g. `idSchema("acc")` matches `acc_...`. */
export const idSchema = (prefix: IdPrefix) =>
  z.string().regex(idPattern(prefix), { message: `must be an id starting with ${prefix}_` });

/** How many levels of objects and arrays a client's free-form JSON (`meta`, a message's `data`) may nest. */
export const JSON_DEPTH_LIMIT = 64;

/**
 * A client's free-form JSON object: at most `maxBytes` serialised and `JSON_DEPTH_LIMIT` levels deep (deeper values
 * cannot be passed between the Worker and the room objects). It is passed on as parsed rather than copied, so a key
 * such as `__proto__` stays an ordinary key: a copy assigns it, which sets the copy's prototype instead.
 */
export const jsonObjectSchema = (maxBytes: number, size = `${maxBytes} bytes`) =>
  z
    .custom<Record<string, unknown>>(isJsonObject, {
      error: (issue) => `Invalid input: expected object, received ${kindOf(issue.input)}`,
    })
    .superRefine((value, ctx) => {
      if (!isJsonObject(value)) return;
      if (deeperThan(value, JSON_DEPTH_LIMIT)) {
        ctx.addIssue({ code: "custom", message: `must nest at most ${JSON_DEPTH_LIMIT} levels of objects and arrays` });
      } else if (jsonSize(value) > maxBytes) {
        ctx.addIssue({ code: "custom", message: `must be at most ${size} as JSON` });
      }
    })
    .meta({ type: "object", additionalProperties: {} });

/** Free-form JSON object metadata, at most 16 KiB serialised. */
export const metaSchema = jsonObjectSchema(16 * 1024, "16 KiB");

function kindOf(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
}

/** Whether objects and arrays nest more than `levels` deep in a value (the value itself is the first level). */
function deeperThan(value: unknown, levels: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (levels === 0) return true;
  for (const item of Array.isArray(value) ? value : Object.values(value)) {
    if (deeperThan(item, levels - 1)) return true;
  }
  return false;
}

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
  limit: queryNumber(z.number().int().min(1).max(100)).default(20).meta({ description: "1..100 (default 20)" }),
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
