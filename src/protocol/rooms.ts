import { z } from "zod";
import { idSchema, metaSchema, nameSchema, timestampSchema } from "./common";

/** Participant roles; `observer` cannot post. */
export const RoleSchema = z.enum(["owner", "admin", "member", "observer"]);
export type Role = z.infer<typeof RoleSchema>;

/** Room kinds: standard rooms change membership, DM rooms never do. */
export const RoomTypeSchema = z.enum(["standard", "dm"]);
export type RoomType = z.infer<typeof RoomTypeSchema>;

/** A participant as given when creating a room or adding one. */
export const ParticipantInputSchema = z.strictObject({
  accountId: idSchema("acc"),
  role: RoleSchema.optional(),
  autoRespond: z.boolean().optional(),
});
export type ParticipantInput = z.infer<typeof ParticipantInputSchema>;

/** Body of `POST /v1/rooms`. */
export const CreateRoomSchema = z
  .strictObject({
    type: RoomTypeSchema,
    name: nameSchema.nullable().optional(),
    meta: metaSchema.optional(),
    participants: z.array(ParticipantInputSchema).max(1000).optional(),
  })
  .superRefine((value, ctx) => {
    if (value.type === "dm") {
      const distinct = new Set((value.participants ?? []).map((p) => p.accountId));
      if (distinct.size < 2) {
        ctx.addIssue({
          code: "custom",
          path: ["participants"],
          message: "a dm needs at least 2 distinct participants",
        });
      }
      if (distinct.size > 100) {
        ctx.addIssue({ code: "custom", path: ["participants"], message: "a dm has at most 100 participants" });
      }
    }
  });
export type CreateRoom = z.infer<typeof CreateRoomSchema>;

/** Body of `PATCH /v1/rooms/{id}`. */
export const UpdateRoomSchema = z.strictObject({ name: nameSchema.nullable().optional(), meta: metaSchema.optional() });
export type UpdateRoom = z.infer<typeof UpdateRoomSchema>;

/** Body of `PATCH /v1/rooms/{id}/participants/{accountId}`. */
export const UpdateParticipantSchema = z.strictObject({
  role: RoleSchema.optional(),
  autoRespond: z.boolean().optional(),
});
export type UpdateParticipant = z.infer<typeof UpdateParticipantSchema>;

/** Query of `GET /v1/rooms`. */
export const ListRoomsQuerySchema = z.object({
  accountId: idSchema("acc").optional(),
  type: RoomTypeSchema.optional(),
});

/** A member of a room. */
export const ParticipantSchema = z
  .object({
    accountId: z.string(),
    role: RoleSchema,
    autoRespond: z.boolean(),
    joinedAt: timestampSchema,
  })
  .meta({ id: "Participant" });
export type Participant = z.infer<typeof ParticipantSchema>;

/** A room. */
export const RoomSchema = z
  .object({
    id: z.string(),
    orgId: z.string(),
    type: RoomTypeSchema,
    name: z.string().nullable(),
    meta: z.record(z.string(), z.unknown()),
    participants: z.array(ParticipantSchema),
    createdAt: timestampSchema,
  })
  .meta({ id: "Room" });
export type Room = z.infer<typeof RoomSchema>;
