import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/**
 * Flow runs: one execution of an agent's steps for one trigger. `triggerKey` is `start` or the message id, so a
 * redelivered trigger finds its run instead of queueing another; `seq` orders the runs of one (conversation, agent).
 */
export const flowRuns = sqliteTable(
  "flow_runs",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    agentId: text("agent_id").notNull(),
    conversationId: text("conversation_id").notNull(),
    roomId: text("room_id").notNull(),
    trigger: text("trigger", { enum: ["start", "message"] }).notNull(),
    triggerKey: text("trigger_key").notNull(),
    messageId: text("message_id"),
    /** The id of the event that triggered the run (what a webhook step receives). */
    eventId: text("event_id").notNull(),
    seq: integer("seq").notNull(),
    /** How many agent replies led to the trigger: 0 for a person's message; bounds agent-to-agent exchanges. */
    depth: integer("depth").notNull().default(0),
    status: text("status", { enum: ["queued", "running", "completed", "failed"] }).notNull(),
    error: text("error"),
    startedAt: text("started_at").notNull(),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [
    uniqueIndex("flow_runs_trigger_idx").on(t.conversationId, t.agentId, t.triggerKey),
    index("flow_runs_queue_idx").on(t.conversationId, t.agentId, t.status, t.seq),
    index("flow_runs_org_idx").on(t.orgId, t.id),
    index("flow_runs_agent_idx").on(t.orgId, t.agentId, t.id),
    index("flow_runs_event_idx").on(t.eventId),
    // The runs not ended yet, oldest change first: what the check for stalled flows reads (`stalledFlows`).
    index("flow_runs_open_idx")
      .on(t.updatedAt)
      .where(sql`${t.status} in ('queued', 'running')`),
  ],
);

/** The Workflow instance generation serving each (conversation, agent); a finished instance hands over to the next. */
export const flowInstances = sqliteTable(
  "flow_instances",
  {
    conversationId: text("conversation_id").notNull(),
    agentId: text("agent_id").notNull(),
    orgId: text("org_id").notNull(),
    generation: integer("generation").notNull(),
  },
  (t) => [primaryKey({ columns: [t.conversationId, t.agentId] })],
);
