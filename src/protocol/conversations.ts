import { z } from "zod";
import { idSchema, metaSchema, nameSchema, timestampSchema, ttlSecondsSchema } from "./common";

/**
 * The contact a conversation is with: a `ctc_` id, or the id the caller's own system gives the person (nothing in
 * Parley issues contacts yet), up to 128 printable characters.
 */
const contactIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[^\s\p{Cc}\p{Cf}\p{Cs}]+$/u, "must be printable characters without spaces");

/** Body of `POST /v1/rooms/{roomId}/conversations`. */
export const CreateConversationSchema = z.strictObject({
  name: nameSchema.nullable().optional(),
  description: z.string().max(4000).nullable().optional(),
  meta: metaSchema.optional(),
  contactId: contactIdSchema.nullable().optional(),
});
export type CreateConversation = z.infer<typeof CreateConversationSchema>;

/** Body of `PATCH /v1/conversations/{id}`. */
export const UpdateConversationSchema = CreateConversationSchema;
export type UpdateConversation = z.infer<typeof UpdateConversationSchema>;

/** Query of `GET /v1/conversations`. */
export const ListConversationsQuerySchema = z.object({
  roomId: idSchema("room").optional(),
  contactId: contactIdSchema.optional(),
  accountId: idSchema("acc").optional(),
});

/** Body of `POST /v1/conversations/{id}/sessions`. */
export const CreateSessionSchema = z.strictObject({ accountId: idSchema("acc"), ttlSeconds: ttlSecondsSchema });

/** A thread inside a room. */
export const ConversationSchema = z
  .object({
    id: z.string(),
    orgId: z.string(),
    roomId: z.string(),
    name: z.string().nullable(),
    description: z.string().nullable(),
    meta: z.record(z.string(), z.unknown()),
    contactId: z.string().nullable(),
    messageCount: z.number().int(),
    lastMessageAt: timestampSchema.nullable(),
    createdAt: timestampSchema,
    updatedAt: timestampSchema,
  })
  .meta({ id: "Conversation" });
export type Conversation = z.infer<typeof ConversationSchema>;
