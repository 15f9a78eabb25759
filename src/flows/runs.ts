import { and, desc, eq, inArray, lt, or, sql } from "drizzle-orm";
import type { Bindings } from "../env";
import { chunks, createDb, type Db } from "../db/client";
import { accounts, flowInstances, flowRuns } from "../db/schema";
import { createEvent } from "../events/envelope";
import { publishOrgEvents } from "../events/publish";
import { sha256 } from "../lib/crypto";
import { base32, newId } from "../lib/ids";
import type { AgentSettings } from "../protocol/accounts";
import type { ParleyEvent } from "../protocol/events";
import type { FlowRun, FlowRunStatus, FlowTrigger } from "../protocol/flows";

/** A flow run's row. */
export type FlowRunRow = typeof flowRuns.$inferSelect;

/** A trigger of one agent's flow in one conversation. */
export interface RunTrigger {
  orgId: string;
  agentId: string;
  conversationId: string;
  roomId: string;
  trigger: FlowTrigger;
  messageId: string | null;
  eventId: string;
  seq: number;
  depth: number;
  at: string;
}

/** The contract's FlowRun from its row. */
export function toFlowRun(row: FlowRunRow): FlowRun {
  return {
    id: row.id,
    agentId: row.agentId,
    conversationId: row.conversationId,
    trigger: row.trigger,
    ...(row.messageId ? { messageId: row.messageId } : {}),
    status: row.status,
    ...(row.error ? { error: row.error } : {}),
    startedAt: row.startedAt,
    updatedAt: row.updatedAt,
  };
}

/** The `flows.flow.run` event of a run in one status; its id is the same however often it is published. */
export async function flowRunEvent(orgId: string, row: FlowRunRow): Promise<ParleyEvent<FlowRun>> {
  const digest = await sha256(`${row.id}:${row.status}`);
  return createEvent({
    id: `evt_${base32(digest).slice(0, 26)}`,
    orgId,
    source: "flows",
    resource: "flow",
    event: "run",
    resourceId: row.id,
    occurredAt: row.updatedAt,
    data: toFlowRun(row),
  });
}

/** Publishes the `flows.flow.run` events of runs. */
export async function publishRuns(env: Bindings, rows: FlowRunRow[]): Promise<void> {
  const byOrg = new Map<string, FlowRunRow[]>();
  for (const row of rows) byOrg.set(row.orgId, [...(byOrg.get(row.orgId) ?? []), row]);
  await Promise.all(
    [...byOrg].map(async ([orgId, runs]) =>
      publishOrgEvents(env, orgId, await Promise.all(runs.map((row) => flowRunEvent(orgId, row)))),
    ),
  );
}

/**
 * Queues runs for triggers; a trigger that already has its run (a redelivered event) queues nothing. Answers the runs
 * this call created, the flows (`flowKey`) of these triggers that have runs still queued, and each flow's current
 * generation (`flow_instances`, its first one made here): one D1 round trip for all three.
 */
export async function queueRuns(
  db: D1Database,
  triggers: RunTrigger[],
): Promise<{ created: FlowRunRow[]; waiting: Set<string>; generations: Map<string, number> }> {
  if (triggers.length === 0) return { created: [], waiting: new Set(), generations: new Map() };
  const d = createDb(db);
  const inserts = triggers.map((t) =>
    d
      .insert(flowRuns)
      .values({
        id: newId("run"),
        orgId: t.orgId,
        agentId: t.agentId,
        conversationId: t.conversationId,
        roomId: t.roomId,
        trigger: t.trigger,
        triggerKey: t.messageId ?? "start",
        messageId: t.messageId,
        eventId: t.eventId,
        seq: t.seq,
        depth: t.depth,
        status: "queued",
        startedAt: t.at,
        updatedAt: t.at,
      })
      .onConflictDoNothing()
      .returning(),
  );
  // In the same batch, after the inserts: which of these (conversation, agent) pairs have runs still queued (in
  // chunks: D1 binds at most 100 values a statement).
  const pairs = [...new Map(triggers.map((t) => [flowKey(t), t])).values()];
  const waiting = chunks(pairs, 45).map((some) =>
    d
      .selectDistinct({ conversationId: flowRuns.conversationId, agentId: flowRuns.agentId })
      .from(flowRuns)
      .where(
        and(
          eq(flowRuns.status, "queued"),
          or(...some.map((t) => and(eq(flowRuns.conversationId, t.conversationId), eq(flowRuns.agentId, t.agentId)))),
        ),
      ),
  );
  const generations = pairs.map((t) =>
    d
      .insert(flowInstances)
      .values({ conversationId: t.conversationId, agentId: t.agentId, orgId: t.orgId, generation: 0 })
      .onConflictDoUpdate({
        target: [flowInstances.conversationId, flowInstances.agentId],
        set: { generation: sql`${flowInstances.generation}` },
      })
      .returning({ generation: flowInstances.generation }),
  );
  const [first, ...rest] = inserts;
  const results = (await d.batch([first, ...rest, ...waiting, ...generations])) as unknown[];
  const current = results.splice(inserts.length + waiting.length) as { generation: number }[][];
  const queued = results.splice(inserts.length) as { conversationId: string; agentId: string }[][];
  return {
    created: (results as FlowRunRow[][]).flat(),
    waiting: new Set(queued.flat().map(flowKey)),
    generations: new Map(pairs.map((t, i) => [flowKey(t), current[i][0].generation])),
  };
}

/** The key of a (conversation, agent) flow. */
export function flowKey(run: { conversationId: string; agentId: string }): string {
  return `${run.conversationId}/${run.agentId}`;
}

/** The runs of one (conversation, agent) in one of `statuses`: a condition. */
function ofFlow(flow: { conversationId: string; agentId: string }, statuses: FlowRunStatus[]) {
  return and(
    eq(flowRuns.conversationId, flow.conversationId),
    eq(flowRuns.agentId, flow.agentId),
    inArray(flowRuns.status, statuses),
  );
}

/** The queued runs of one (conversation, agent), in trigger order. */
export async function queuedRuns(db: D1Database, conversationId: string, agentId: string, limit: number) {
  return createDb(db)
    .select()
    .from(flowRuns)
    .where(ofFlow({ conversationId, agentId }, ["queued"]))
    .orderBy(flowRuns.seq)
    .limit(limit);
}

/**
 * A run that ended, with its error if it failed. A null `id` is the run its flow has running, whichever it is: the
 * step that took it failed before it could answer which.
 */
export interface EndedRun {
  id: string | null;
  error: string | null;
}

/** Ends a running run (completed, or failed with its error), for a batch: answers the moved row, or none. */
function endRunUpdate(d: Db, flow: { conversationId: string; agentId: string }, run: EndedRun, now: string) {
  return d
    .update(flowRuns)
    .set({ status: run.error ? "failed" : "completed", error: run.error, updatedAt: now })
    .where(and(ofFlow(flow, ["running"]), run.id ? eq(flowRuns.id, run.id) : undefined))
    .returning();
}

/**
 * Ends a running run, in one D1 transaction with reading whether its flow has runs queued (their takes cannot wait
 * for a wake: a burst of triggers wakes a flow once). Answers its row (null when it had ended before) and that.
 */
export async function endRun(
  db: D1Database,
  flow: { conversationId: string; agentId: string },
  run: EndedRun,
): Promise<{ row: FlowRunRow | null; queued: boolean }> {
  const d = createDb(db);
  const [rows, queued] = await d.batch([
    endRunUpdate(d, flow, run, new Date().toISOString()),
    d
      .select({ id: flowRuns.id })
      .from(flowRuns)
      .where(ofFlow(flow, ["queued"]))
      .limit(1),
  ]);
  return { row: rows[0] ?? null, queued: queued.length > 0 };
}

/**
 * The next run of a (conversation, agent), begun, in one D1 transaction: ends the run before it (if any), moves the
 * next queued run to running, and reads the agent's settings. A run still running is taken again first: it is the
 * one a retried take had begun before its answer was lost. Answers the rows that moved (to publish) and the run
 * taken with its agent's settings (null if the agent is gone), or no run when none is queued.
 */
export async function takeRun(
  db: D1Database,
  flow: { orgId: string; conversationId: string; agentId: string },
  previous: EndedRun | null,
): Promise<{ moved: FlowRunRow[]; run: FlowRunRow | null; agent: AgentSettings | null }> {
  const d = createDb(db);
  const now = new Date().toISOString();
  const next = d
    .select({ id: flowRuns.id })
    .from(flowRuns)
    .where(ofFlow(flow, ["queued", "running"]))
    .orderBy(desc(sql`${flowRuns.status} = 'running'`), flowRuns.seq)
    .limit(1);
  const begin = d
    .update(flowRuns)
    .set({ status: "running", error: null, updatedAt: now, startedAt: now })
    .where(inArray(flowRuns.id, next))
    .returning();
  const agent = d
    .select({ agent: accounts.agent })
    .from(accounts)
    .where(and(eq(accounts.id, flow.agentId), eq(accounts.orgId, flow.orgId), eq(accounts.type, "agent")));
  if (previous) {
    const [ended, begun, agents] = await d.batch([endRunUpdate(d, flow, previous, now), begin, agent]);
    return { moved: [...ended, ...begun], run: begun[0] ?? null, agent: agentSettings(agents) };
  }
  const [begun, agents] = await d.batch([begin, agent]);
  return { moved: begun, run: begun[0] ?? null, agent: agentSettings(agents) };
}

/** The settings of the agent read by `takeRun`, or null when it is gone. */
function agentSettings(rows: { agent: Record<string, unknown> | null }[]): AgentSettings | null {
  return rows.length === 0 ? null : ((rows[0].agent ?? {}) as AgentSettings);
}

/** A page of an org's runs, newest first. */
export async function listRuns(
  db: D1Database,
  orgId: string,
  filter: { conversationId?: string; agentId?: string; status?: FlowRunStatus; before?: string; limit: number },
) {
  return createDb(db)
    .select()
    .from(flowRuns)
    .where(
      and(
        eq(flowRuns.orgId, orgId),
        filter.conversationId ? eq(flowRuns.conversationId, filter.conversationId) : undefined,
        filter.agentId ? eq(flowRuns.agentId, filter.agentId) : undefined,
        filter.status ? eq(flowRuns.status, filter.status) : undefined,
        filter.before ? lt(flowRuns.id, filter.before) : undefined,
      ),
    )
    .orderBy(desc(flowRuns.id))
    .limit(filter.limit);
}
