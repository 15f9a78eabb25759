import { z } from "zod";
import { queryNumber, timestampSchema } from "../protocol/common";
import { URL_TTL } from "./signing";

/** An attachment: its metadata and a signed, expiring download URL (contract section 9). */
export const AttachmentSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    contentType: z.string(),
    size: z.number().int(),
    sha256: z.string().meta({ description: "lower-case hex" }),
    url: z.string().meta({ description: "signed download URL on this service; no Authorization needed" }),
    urlExpiresAt: timestampSchema,
    createdAt: timestampSchema,
  })
  .meta({ id: "Attachment" });
export type Attachment = z.infer<typeof AttachmentSchema>;

const ttlSeconds = queryNumber(z.number().int().min(1).max(URL_TTL.maxSeconds))
  .optional()
  .meta({ description: `lifetime of the signed URL in seconds (default ${URL_TTL.defaultSeconds})` });

/** Query of `POST /v1/attachments`: the file's name (raw bodies; a multipart file's own name otherwise). */
export const UploadQuerySchema = z.object({
  name: z.string().min(1).max(255).optional(),
  ttlSeconds,
});

/** Query of `GET /v1/attachments/{id}`. */
export const GetAttachmentQuerySchema = z.object({ ttlSeconds });

/** Query of a signed download URL, for the OpenAPI document (the route checks the signature itself). */
export const DownloadQuerySchema = z.object({
  exp: z.string().meta({ description: "expiry of the URL (Unix seconds), as signed" }),
  sig: z.string().meta({ description: "the URL's signature (HMAC-SHA256)" }),
});
