import { z } from "zod";
import { idSchema, jsonObjectSchema, pageQuerySchema, queryNumber, timestampSchema } from "./common";

/** Limits of one message. */
export const MESSAGE_LIMITS = {
  textChars: 32768,
  dataBytes: 16 * 1024,
  attachments: 20,
  clientMessageIdChars: 128,
} as const;

/**
 * The `clientMessageId`s of what flow steps post, and of their reply streams: `<run id>.<step index>`. A post may not
 * take one: it would stand in for the agent's reply, which would then never be posted.
 */
export const STEP_CLIENT_MESSAGE_ID = /^run_[0-9a-z]+\.\d+$/;

/** The fields of a message post, shared by REST and the room socket's `message.post` frame. */
export const MessageInputShape = {
  text: z.string().min(1).max(MESSAGE_LIMITS.textChars).optional(),
  data: jsonObjectSchema(MESSAGE_LIMITS.dataBytes).optional(),
  attachmentIds: z.array(idSchema("att")).min(1).max(MESSAGE_LIMITS.attachments).optional(),
  clientMessageId: z
    .string()
    .min(1)
    .max(MESSAGE_LIMITS.clientMessageIdChars)
    .refine((id) => !STEP_CLIENT_MESSAGE_ID.test(id), "ids of the form run_<id>.<n> are reserved for agents' replies")
    .optional(),
  authorId: idSchema("acc").optional(),
};

/** Requires at least one of text, data and attachmentIds. */
export function requireContent(
  value: { text?: unknown; data?: unknown; attachmentIds?: unknown },
  ctx: z.RefinementCtx,
) {
  if (value.text === undefined && value.data === undefined && value.attachmentIds === undefined) {
    ctx.addIssue({ code: "custom", path: [], message: "at least one of text, data or attachmentIds is required" });
  }
}

/** Body of `POST /v1/conversations/{id}/messages`. */
export const PostMessageSchema = z
  .strictObject(MessageInputShape)
  .superRefine(requireContent)
  .meta({ description: "At least one of `text`, `data` and `attachmentIds`" });
export type PostMessage = z.infer<typeof PostMessageSchema>;

/** Query of `GET /v1/conversations/{id}/messages`. */
export const HistoryQuerySchema = z.object({
  afterSeq: queryNumber(z.number().int().min(0)).optional().meta({ description: "a seq, 0 or more" }),
  beforeSeq: queryNumber(z.number().int().min(1)).optional().meta({ description: "a seq, 1 or more" }),
  limit: pageQuerySchema.shape.limit,
});
export type HistoryQuery = z.infer<typeof HistoryQuerySchema>;

/** An attachment as a message shows it; history marks one deleted since the post with `deleted: true`. */
export const MessageAttachmentSchema = z.object({
  id: z.string(),
  name: z.string(),
  contentType: z.string(),
  size: z.number().int(),
  deleted: z.literal(true).optional(),
});
export type MessageAttachment = z.infer<typeof MessageAttachmentSchema>;

/** Message kinds: `bot` when the author is an agent. */
export const MessageTypeSchema = z.enum(["user", "bot", "system"]);

/** A message in a conversation's ordered history. */
export const MessageSchema = z
  .object({
    id: z.string(),
    orgId: z.string(),
    roomId: z.string(),
    conversationId: z.string(),
    seq: z.number().int(),
    authorId: z.string().nullable(),
    type: MessageTypeSchema,
    text: z.string().nullable(),
    data: z.record(z.string(), z.unknown()).nullable(),
    attachments: z.array(MessageAttachmentSchema),
    clientMessageId: z.string().nullable(),
    createdAt: timestampSchema,
  })
  .meta({ id: "Message" });
export type Message = z.infer<typeof MessageSchema>;

/** Answer of the history read. */
export const HistoryPageSchema = z.object({ items: z.array(MessageSchema), hasMore: z.boolean() });
export type HistoryPage = z.infer<typeof HistoryPageSchema>;
