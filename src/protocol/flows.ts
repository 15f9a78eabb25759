import { z } from "zod";
import { idSchema, timestampSchema } from "./common";

/** What started a flow run: the conversation's start, or one message. */
export const FlowTriggerSchema = z.enum(["start", "message"]);
export type FlowTrigger = z.infer<typeof FlowTriggerSchema>;

/** Where a run is. */
export const FlowRunStatusSchema = z.enum(["queued", "running", "completed", "failed"]);
export type FlowRunStatus = z.infer<typeof FlowRunStatusSchema>;

/** One execution of an agent's steps for one trigger (contract section 7). */
export const FlowRunSchema = z
  .object({
    id: z.string(),
    agentId: z.string(),
    conversationId: z.string(),
    trigger: FlowTriggerSchema,
    messageId: z.string().optional(),
    status: FlowRunStatusSchema,
    error: z.string().optional(),
    startedAt: timestampSchema,
    updatedAt: timestampSchema,
  })
  .meta({ id: "FlowRun" });
export type FlowRun = z.infer<typeof FlowRunSchema>;

/** Query of `GET /v1/flow-runs`. */
export const ListFlowRunsQuerySchema = z.object({
  conversationId: idSchema("conv").optional(),
  agentId: idSchema("acc").optional(),
  status: FlowRunStatusSchema.optional(),
});

/**
 * Data of `message_stream` events. `index` counts the deltas of one stream from 0; the last event has `done: true`
 * (with `error` when the reply failed, and `messageId` of the posted message when it did not). `text` is the whole
 * text so far: set on the last event, and on a snapshot sent to a client that subscribes mid-stream, which repeats
 * the index of the last delta it includes.
 */
export const MessageStreamSchema = z
  .object({
    streamId: z.string(),
    authorId: z.string(),
    conversationId: z.string(),
    index: z.number().int().min(0),
    delta: z.string(),
    text: z.string().optional(),
    done: z.boolean(),
    error: z.string().optional(),
    messageId: z.string().optional(),
  })
  .meta({ id: "MessageStream" });
export type MessageStream = z.infer<typeof MessageStreamSchema>;
