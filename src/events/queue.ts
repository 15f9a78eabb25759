import { z } from "zod";
import { EventSchema, type ParleyEvent } from "../protocol/events";
import type { Conversation } from "../protocol/conversations";
import type { Room } from "../protocol/rooms";

/** A room's state at one version, as mirrored into D1. */
export interface RoomRecord {
  room: Room;
  dmKey: string | null;
  version: number;
}

/** A conversation's state at one version, as mirrored into D1. */
export interface ConversationRecord {
  conversation: Conversation;
  version: number;
  deleted: boolean;
}

/** The body of every message on the events queue: the event, and the state to mirror into D1 with it. */
export interface QueueBody {
  event: ParleyEvent;
  room?: RoomRecord;
  conversation?: ConversationRecord;
  /**
   * For a conversation's start and its messages: the room's auto-responding agents that may answer it, as of its
   * commit (never a message's author, none for a system message).
   */
  agents?: string[];
}

/** Validates queue bodies at the consumer's edge; mirrors are checked for the fields the archive relies on. */
export const QueueBodySchema = z.object({
  event: EventSchema,
  room: z
    .object({
      room: z.object({ id: z.string(), orgId: z.string() }).loose(),
      dmKey: z.string().nullable(),
      version: z.number(),
    })
    .optional(),
  conversation: z
    .object({
      conversation: z.object({ id: z.string(), orgId: z.string(), roomId: z.string() }).loose(),
      version: z.number(),
      deleted: z.boolean(),
    })
    .optional(),
  agents: z.array(z.string()).max(1000).optional(),
});
