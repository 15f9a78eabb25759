import type { Context, MiddlewareHandler } from "hono";
import { z } from "zod";
import type { AppEnv } from "../env";
import { ApiError, notFound, type ErrorDetail } from "../errors";
import { idSchema } from "../protocol/common";
import type { IdPrefix } from "../lib/ids";
import { attachDoc } from "./openapi";
import { readLimited } from "../lib/bytes";
import { parseClientJson } from "../lib/json";

/** The largest JSON body a route reads by default. */
export const DEFAULT_MAX_BODY_BYTES = 512 * 1024;

/**
 * zod issues as the contract's `details`. A value of the wrong type gets that one issue: zod also runs a field's
 * length checks on a value of another type (a string given for an array: "expected array", then "too big").
 */
export function detailsOf(error: z.ZodError, root = "(body)"): ErrorDetail[] {
  const pathOf = (issue: z.core.$ZodIssue) => (issue.path.length > 0 ? issue.path.map(String).join(".") : root);
  const mistyped = new Set(error.issues.filter((issue) => issue.code === "invalid_type").map(pathOf));
  // Of a value's bounds, the tightest says it all (an integer's safe range beside the field's own maximum).
  const tightest = new Map<string, number>();
  for (const issue of error.issues) {
    if (issue.code !== "too_big" && issue.code !== "too_small") continue;
    const key = `${pathOf(issue)}\u0000${issue.code}`;
    const bound = Number(issue.code === "too_big" ? issue.maximum : -Number(issue.minimum));
    tightest.set(key, Math.min(tightest.get(key) ?? Infinity, bound));
  }
  return error.issues
    .filter((issue) => issue.code === "invalid_type" || !mistyped.has(pathOf(issue)))
    .filter((issue) => {
      if (issue.code !== "too_big" && issue.code !== "too_small") return true;
      const bound = Number(issue.code === "too_big" ? issue.maximum : -Number(issue.minimum));
      return bound <= tightest.get(`${pathOf(issue)}\u0000${issue.code}`)!;
    })
    .map((issue) => ({ path: pathOf(issue), message: issue.message }));
}

/** Parses a value with a schema, throwing the contract's 400 with details. */
export function parseWith<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const result = schema.safeParse(value);
  if (!result.success) throw new ApiError("BAD_REQUEST", `invalid ${what}`, detailsOf(result.error));
  return result.data;
}

/**
 * Reads a JSON body: 415 unless JSON, 413 past `maxBytes` (before reading when Content-Length says so), 400 if
 * malformed. No body at all (or an empty one) reads as `{}`: a route whose fields are all optional takes a bare POST,
 * and any other answers its schema's 400 with details.
 */
export async function readJson(c: Context<AppEnv>, maxBytes = DEFAULT_MAX_BODY_BYTES): Promise<unknown> {
  const type = c.req.header("content-type") ?? "";
  const declared = Number(c.req.header("content-length") ?? "NaN");
  if (!/^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(type)) {
    if (c.req.raw.body === null || declared === 0) return {};
    throw new ApiError("UNSUPPORTED_MEDIA_TYPE", "the body must be JSON: send 'Content-Type: application/json'");
  }
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(type)?.[1].toLowerCase();
  if (charset !== undefined && charset !== "utf-8" && charset !== "utf8") {
    throw new ApiError("UNSUPPORTED_MEDIA_TYPE", `JSON bodies are UTF-8, not ${charset}`);
  }
  requireIdentityEncoding(c);
  if (declared > maxBytes) throw new ApiError("PAYLOAD_TOO_LARGE", `the body is larger than ${maxBytes} bytes`);
  const bytes = await readLimited(
    c.req.raw.body,
    maxBytes,
    () => new ApiError("PAYLOAD_TOO_LARGE", `the body is larger than ${maxBytes} bytes`),
  );
  if (bytes.byteLength === 0) return {};
  try {
    return parseClientJson(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new ApiError("BAD_REQUEST", "the body is not valid JSON", [
      { path: "(body)", message: error instanceof SyntaxError ? error.message : "not valid JSON" },
    ]);
  }
}

/** Refuses a request body sent with a `Content-Encoding` (gzip, br, ...): bodies are read as they are sent. */
export function requireIdentityEncoding(c: Context<AppEnv>): void {
  const encoding = c.req.header("content-encoding")?.trim().toLowerCase();
  if (encoding && encoding !== "identity") {
    throw new ApiError("UNSUPPORTED_MEDIA_TYPE", `request bodies are not decoded: send them without Content-Encoding`);
  }
}

/** Route middleware: validates the JSON body; the handler reads it with `c.req.valid("json")`. */
export function jsonBody<T extends z.ZodType>(
  schema: T,
  maxBytes = DEFAULT_MAX_BODY_BYTES,
): MiddlewareHandler<AppEnv, string, { in: { json: z.input<T> }; out: { json: z.output<T> } }> {
  const middleware: MiddlewareHandler<AppEnv> = async function validateJson(c, next) {
    const value = parseWith(schema, await readJson(c, maxBytes), "request body");
    c.req.addValidatedData("json", value as object);
    await next();
  };
  return attachDoc(middleware, { body: schema });
}

/** Route middleware: validates the query string; the handler reads it with `c.req.valid("query")`. */
export function query<T extends z.ZodType>(
  schema: T,
): MiddlewareHandler<AppEnv, string, { in: { query: Record<string, string> }; out: { query: z.output<T> } }> {
  const middleware: MiddlewareHandler<AppEnv> = async function validateQuery(c, next) {
    c.req.addValidatedData("query", parseWith(schema, c.req.query(), "query") as object);
    await next();
  };
  return attachDoc(middleware, { query: schema });
}

/** What an id of each prefix names, for the 404 of a path id that names nothing. */
const RESOURCES: Partial<Record<IdPrefix, string>> = {
  acc: "account",
  key: "API key",
  room: "room",
  conv: "conversation",
  att: "attachment",
  run: "flow run",
  rule: "notification rule",
  ntf: "notification",
  psub: "push subscription",
};

/**
 * A path parameter that must be an id of one type. Ids are opaque to clients: one that cannot be ours (another
 * type's, or not an id at all) names nothing, and answers 404 like an unknown one.
 */
export function idParam(c: Context<AppEnv>, name: string, prefix: IdPrefix): string {
  const value = c.req.param(name);
  const result = idSchema(prefix).safeParse(value);
  if (!result.success) throw notFound(RESOURCES[prefix] ?? "resource");
  return result.data;
}
