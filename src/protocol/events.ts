import { z } from "zod";
import { timestampSchema } from "./common";

/** Event sources of the contract. */
export const EventSourceSchema = z.enum(["conversations", "flows", "notifications"]);
export type EventSource = z.infer<typeof EventSourceSchema>;

/** The envelope every state change is published in. */
export const EventSchema = z
  .object({
    id: z.string(),
    type: z.string(),
    topic: z.string(),
    orgId: z.string(),
    source: EventSourceSchema,
    resource: z.string(),
    event: z.string(),
    resourceId: z.string(),
    occurredAt: timestampSchema,
    data: z.unknown(),
  })
  .meta({ id: "Event" });
export type ParleyEvent<T = unknown> = Omit<z.infer<typeof EventSchema>, "data"> & { data: T };
