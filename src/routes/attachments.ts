import { eq } from "drizzle-orm";
import type { Context } from "hono";
import { Hono } from "hono";
import { findVisible } from "../attachments/access";
import { requireSessionScope } from "../auth/session-scope";
import { boundaryOf, likelyFileLength, MULTIPART_LIMITS, openFilePart } from "../attachments/multipart";
import {
  AttachmentSchema,
  DownloadQuerySchema,
  GetAttachmentQuerySchema,
  UploadQuerySchema,
  type Attachment,
} from "../attachments/schemas";
import { serveObject } from "../attachments/serve";
import { signedUrl, verifySignature } from "../attachments/signing";
import { normalizeDeclaredType } from "../attachments/sniff";
import { storeBody, storeObject, streamSource, type ChunkSource, type StoredObject } from "../attachments/store";
import { auth, orgPrincipal } from "../auth/middleware";
import { createDb } from "../db/client";
import { attachmentRefs, attachments } from "../db/schema";
import type { AppEnv, Bindings } from "../env";
import { ApiError, notFound } from "../errors";
import { describe, errorResponse } from "../http/openapi";
import { idParam, query, requireIdentityEncoding } from "../http/validate";
import { newId } from "../lib/ids";

type AttachmentRow = typeof attachments.$inferSelect;

/** `MAX_ATTACHMENT_BYTES`, or 25 MiB when it is unset or not a positive integer. */
export function maxAttachmentBytes(env: Bindings): number {
  const value = Number(env.MAX_ATTACHMENT_BYTES);
  return Number.isSafeInteger(value) && value > 0 ? value : 25 * 1024 * 1024;
}

/** The R2 key of an attachment's bytes: derived from its id alone, so a signed download never needs D1. */
export function objectKeyOf(id: string): string {
  return `attachments/${id}`;
}

/** A file name as stored: its last path segment, without control or bidi-override characters, at most 255 long. */
export function sanitizeName(raw: string): string {
  const base = raw.split(/[/\\]/).pop() ?? "";
  const clean = base.replace(/[\u0000-\u001f\u007f\u202a-\u202e\u2066-\u2069]/g, "").trim();
  return clean.slice(0, 255) || "attachment";
}

async function toAttachment(c: Context<AppEnv>, row: AttachmentRow, ttlSeconds?: number): Promise<Attachment> {
  const { url, expiresAt } = await signedUrl(c.env, new URL(c.req.url).origin, row.id, ttlSeconds);
  return {
    id: row.id,
    name: row.name,
    contentType: row.contentType,
    size: row.size,
    sha256: row.sha256,
    url,
    urlExpiresAt: expiresAt,
    createdAt: row.createdAt,
  };
}

/** `/v1/attachments`: uploads streamed to R2, metadata in D1, downloads through signed URLs of this worker. */
export const attachmentRoutes = new Hono<AppEnv>()
  .post(
    "/",
    describe({
      summary: "Upload a file: a raw body with its Content-Type and ?name=, or multipart/form-data with a 'file' field",
      description:
        "Streamed to R2 and hashed on the way; larger than MAX_ATTACHMENT_BYTES is 413 (before reading when " +
        "Content-Length says so). The content type is checked against the file's leading bytes: a known format " +
        "corrects the declared type, a declared format the bytes lack is 415.",
      tags: ["attachments"],
      responses: { 201: AttachmentSchema },
      bodyContent: {
        "*/*": { schema: { type: "string", format: "binary", description: "The file's bytes (name it with ?name=)" } },
        "multipart/form-data": {
          schema: {
            type: "object",
            required: ["file"],
            properties: { file: { type: "string", format: "binary", description: "The file, with its name" } },
          },
        },
      },
      otherResponses: {
        413: errorResponse("Larger than MAX_ATTACHMENT_BYTES (`PAYLOAD_TOO_LARGE`)"),
        415: errorResponse("The bytes are not of the declared type, or no file part (`UNSUPPORTED_MEDIA_TYPE`)"),
      },
    }),
    auth("apiKey", "account", "session"),
    query(UploadQuerySchema),
    async (c) => {
      const principal = orgPrincipal(c);
      const { name, ttlSeconds } = c.req.valid("query");
      requireIdentityEncoding(c);
      await requireSessionScope(c.env.DB, principal);
      const maxBytes = maxAttachmentBytes(c.env);
      const contentType = c.req.header("content-type") ?? "";
      const multipart = /^multipart\/form-data\s*(;|$)/i.test(contentType);
      const lengthHeader = c.req.header("content-length");
      const length = lengthHeader !== undefined && /^\d{1,15}$/.test(lengthHeader) ? Number(lengthHeader) : null;
      const overhead = multipart ? MULTIPART_LIMITS.otherPartsBytes + 2 * MULTIPART_LIMITS.headerBytes : 0;
      if (length !== null && length > maxBytes + overhead) {
        throw new ApiError("PAYLOAD_TOO_LARGE", `the file is larger than ${maxBytes} bytes (MAX_ATTACHMENT_BYTES)`);
      }
      const body = c.req.raw.body;
      if (!body || length === 0) {
        throw new ApiError("BAD_REQUEST", "the file is empty", [
          { path: "(body)", message: "send the file as the body" },
        ]);
      }

      let source: ChunkSource | undefined;
      let declaredType: string | null;
      let filename: string | null = null;
      let likelyLength: number | undefined;
      if (multipart) {
        const boundary = boundaryOf(contentType);
        const part = await openFilePart(body, boundary);
        source = part.content;
        filename = part.filename;
        if (length !== null) likelyLength = likelyFileLength(length, part, boundary);
        try {
          declaredType = normalizeDeclaredType(part.contentType);
        } catch (error) {
          await source.cancel(error);
          throw error;
        }
      } else {
        declaredType = normalizeDeclaredType(contentType);
        if (length === null) source = streamSource(body);
      }

      const id = newId("att");
      const row: AttachmentRow = {
        id,
        orgId: principal.orgId,
        name: sanitizeName(name ?? filename ?? ""),
        contentType: "",
        size: 0,
        sha256: "",
        objectKey: objectKeyOf(id),
        createdBy: principal.kind === "apiKey" ? null : principal.accountId,
        conversationId: principal.kind === "session" ? principal.conversationId : null,
        createdAt: new Date().toISOString(),
      };
      // The row is written while R2 completes the object (the store deletes the object if the row fails). An async
      // function makes each query a native promise: drizzle's query builders run again on every `then`.
      const db = createDb(c.env.DB);
      let recorded: Promise<void> | undefined;
      const record = (stored: StoredObject) =>
        (recorded = (async () => void (await db.insert(attachments).values(Object.assign(row, stored))))());
      const options = { maxBytes, declaredType, name: row.name, likelyLength, record };
      try {
        if (!multipart && length !== null) {
          await storeBody(c.env.ATTACHMENTS, row.objectKey, body, { ...options, length });
        } else {
          await storeObject(c.env.ATTACHMENTS, row.objectKey, source!, options);
        }
      } catch (error) {
        // R2 failed after the row was written: the row goes too.
        await recorded
          ?.then(async () => void (await db.delete(attachments).where(eq(attachments.id, id))))
          .catch(() => {});
        throw error;
      }
      if (multipart) await source!.cancel();
      return c.json(await toAttachment(c, row, ttlSeconds), 201);
    },
  )
  .get(
    "/:id",
    describe({
      summary: "Get an attachment's metadata with a fresh signed URL",
      tags: ["attachments"],
      responses: { 200: AttachmentSchema },
    }),
    auth("apiKey", "account", "session"),
    query(GetAttachmentQuerySchema),
    async (c) => {
      const id = idParam(c, "id", "att");
      const row = await findVisible(c.env.DB, orgPrincipal(c), id);
      if (!row) throw notFound("attachment");
      return c.json(await toAttachment(c, row, c.req.valid("query").ttlSeconds));
    },
  )
  .delete(
    "/:id",
    describe({
      summary: "Delete an attachment: its bytes and its row; messages show it as deleted",
      tags: ["attachments"],
      responses: { 204: null },
    }),
    auth("apiKey", "account", "session"),
    async (c) => {
      const principal = orgPrincipal(c);
      const id = idParam(c, "id", "att");
      const row = await findVisible(c.env.DB, principal, id);
      if (!row) throw notFound("attachment");
      const uploader =
        principal.kind === "apiKey" ||
        (row.createdBy === principal.accountId &&
          (principal.kind === "account" || row.conversationId === principal.conversationId));
      if (!uploader) throw new ApiError("FORBIDDEN", "only its uploader or an API key deletes an attachment");
      // The bytes go first: signed URLs read R2 alone, so they stop working as soon as this answers.
      await c.env.ATTACHMENTS.delete(row.objectKey);
      const db = createDb(c.env.DB);
      await db.batch([
        db.delete(attachmentRefs).where(eq(attachmentRefs.attachmentId, id)),
        db.delete(attachments).where(eq(attachments.id, id)),
      ]);
      return c.body(null, 204);
    },
  )
  .get(
    "/:id/content",
    describe({
      summary: "Download an attachment through its signed URL (no Authorization); single ranges, ETag, HEAD",
      tags: ["attachments"],
      query: DownloadQuerySchema,
      otherResponses: {
        200: { description: "The file", content: { "*/*": { schema: { type: "string", format: "binary" } } } },
        206: {
          description: "One range of the file (`Range: bytes=...`)",
          content: { "*/*": { schema: { type: "string", format: "binary" } } },
        },
        304: { description: "Not modified (`If-None-Match` matched the ETag)" },
        403: errorResponse("A tampered or expired signature (`FORBIDDEN`)"),
        416: { description: "A range that starts past the end of the file" },
      },
      security: [],
      head: true,
    }),
    async (c) => {
      const id = c.req.param("id");
      const exp = c.req.query("exp");
      await verifySignature(c.env, id, "download", exp, c.req.query("sig"));
      return serveObject(c.env.ATTACHMENTS, objectKeyOf(id), c.req.raw, Number(exp));
    },
  );
