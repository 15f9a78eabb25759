import type { Hono, MiddlewareHandler } from "hono";
import { z } from "zod";
import { ErrorBodySchema } from "../protocol/common";

const DOC = Symbol.for("parley.openapi");

/** What a route tells the OpenAPI document about itself. */
export interface RouteDoc {
  summary?: string;
  description?: string;
  tags?: string[];
  body?: z.ZodType;
  query?: z.ZodType;
  responses?: Record<number, z.ZodType | null>;
  /** A body that is not (only) JSON: OpenAPI content by media type. */
  bodyContent?: Record<string, { schema: unknown }>;
  /** Answers that are not JSON, or errors beyond the common ones: OpenAPI responses by status. */
  otherResponses?: Record<number, { description: string; content?: Record<string, { schema: unknown }> }>;
  security?: string[];
  /** Whether HEAD answers it too (the same headers, no body): documented as an operation of its own. */
  head?: boolean;
}

/** An error answer of a route beyond the common ones, in the contract's error shape. */
export function errorResponse(description: string) {
  return { description, content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } };
}

/** Attaches OpenAPI facts to a middleware; the document is built from the routes' own middleware. */
export function attachDoc<M extends MiddlewareHandler<any, any, any>>(middleware: M, doc: RouteDoc): M {
  (middleware as unknown as Record<symbol, RouteDoc>)[DOC] = doc;
  return middleware;
}

/** Route middleware that only documents: summary, tags and response schemas. */
export function describe(doc: RouteDoc): MiddlewareHandler {
  return attachDoc(async function documented(_c, next) {
    await next();
  }, doc);
}

const ERROR_RESPONSES: Record<string, string> = {
  "400": "Invalid input (`BAD_REQUEST`, with `details`)",
  "401": "Missing, malformed, expired or foreign credential",
  "403": "Valid credential outside its scope",
  "404": "Not found (also anything outside the credential's org)",
  "500": "Internal error (`INTERNAL`; the message never carries internal text)",
  "503": "A service the request needs is not configured or not available (`UNAVAILABLE`)",
};

/** The errors of an operation with a JSON body. */
const BODY_ERROR_RESPONSES: Record<string, string> = {
  "413": "The body is larger than 512 KiB (`PAYLOAD_TOO_LARGE`)",
  "415": "The body is not `application/json` (`UNSUPPORTED_MEDIA_TYPE`)",
};

/** `get /v1/rooms/{id}/participants` -> `getRoomsByIdParticipants`: a stable name for generated clients. */
function operationId(method: string, path: string): string {
  const words = path
    .split("/")
    .filter((segment) => segment !== "" && segment !== "v1")
    .map((segment) => {
      const param = /^\{(\w+)\}$/.exec(segment);
      const word = (param ? `by-${param[1]}` : segment).replace(/[-_.](\w)/g, (_, c: string) => c.toUpperCase());
      return word.charAt(0).toUpperCase() + word.slice(1);
    });
  return method + words.join("");
}

/** Builds the OpenAPI 3.1 document of an app from the docs attached to its routes. */
export function buildOpenApi(app: Hono<any, any, any>, info: { title: string; version: string; description: string }) {
  const components: Record<string, unknown> = {};
  const convert = (schema: z.ZodType, io: "input" | "output") => {
    const raw = JSON.stringify(z.toJSONSchema(schema, { io, unrepresentable: "any" }));
    const json = JSON.parse(raw.replaceAll('"#/$defs/', '"#/components/schemas/')) as Record<string, unknown>;
    const { $defs, $schema: _ignored, ...rest } = json;
    Object.assign(components, $defs ?? {});
    return rest;
  };

  const operations = new Map<string, RouteDoc & { method: string; path: string }>();
  for (const route of app.routes) {
    const doc = (route.handler as unknown as Record<symbol, RouteDoc | undefined>)[DOC];
    if (!doc || route.method === "ALL") continue;
    const key = `${route.method} ${route.path}`;
    const current = operations.get(key) ?? { method: route.method.toLowerCase(), path: route.path };
    operations.set(key, { ...current, ...doc, responses: { ...current.responses, ...doc.responses } });
  }

  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of operations.values()) {
    const path = op.path.replace(/:(\w+)/g, "{$1}");
    const parameters: unknown[] = [...path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: "path",
      required: true,
      schema: { type: "string" },
    }));
    if (op.query) {
      const schema = convert(op.query, "input") as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, property] of Object.entries(schema.properties ?? {})) {
        parameters.push({ name, in: "query", required: schema.required?.includes(name) ?? false, schema: property });
      }
    }
    const responses: Record<string, unknown> = {};
    for (const [status, schema] of Object.entries(op.responses ?? {})) {
      responses[status] = schema
        ? { description: "Success", content: { "application/json": { schema: convert(schema, "output") } } }
        : { description: "Success, no content" };
    }
    Object.assign(responses, op.otherResponses);
    const errors = op.body ? { ...ERROR_RESPONSES, ...BODY_ERROR_RESPONSES } : ERROR_RESPONSES;
    const security = (op.security ?? ["bearer"]).map((name) => ({ [name]: [] }));
    for (const [status, description] of Object.entries(errors)) responses[status] ??= errorResponse(description);
    (paths[path] ??= {})[op.method] = {
      operationId: operationId(op.method, path),
      summary: op.summary,
      description: op.description,
      tags: op.tags,
      parameters,
      ...(op.body || op.bodyContent
        ? {
            requestBody: {
              // No body reads as `{}` (see `jsonBody`): a body is required only where `{}` is not valid.
              required: !op.body || !op.body.safeParse({}).success,
              content: {
                ...(op.body ? { "application/json": { schema: convert(op.body, "input") } } : {}),
                ...op.bodyContent,
              },
            },
          }
        : {}),
      responses,
      security,
    };
    if (op.head) {
      const headers = Object.fromEntries(
        Object.entries(responses).map(([status, response]) => [
          status,
          { description: (response as { description: string }).description },
        ]),
      );
      paths[path].head = {
        operationId: operationId("head", path),
        summary: `${op.summary ?? ""} (headers only)`,
        tags: op.tags,
        parameters,
        responses: headers,
        security,
      };
    }
  }
  convert(ErrorBodySchema, "output");
  return {
    openapi: "3.1.0",
    info,
    servers: [{ url: "/" }],
    paths,
    components: {
      schemas: components,
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          description: "Admin token, API key (sk_...), account token or session token",
        },
      },
    },
  };
}
