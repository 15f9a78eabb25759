import type { Bindings } from "../env";
import { queuedRuns } from "./runs";

/** Parameters of one flow instance: an agent taking part in one conversation, in one generation. */
export interface FlowParams {
  orgId: string;
  roomId: string;
  conversationId: string;
  agentId: string;
  generation: number;
}

/** The Workflow instance id of a (conversation, agent) generation. */
export function instanceId(params: Pick<FlowParams, "conversationId" | "agentId" | "generation">): string {
  return `${params.conversationId}-${params.agentId}-${params.generation}`;
}

/** Creates the instance of a generation; answers false when it already exists. */
export async function createInstance(env: Bindings, params: FlowParams): Promise<boolean> {
  try {
    await env.FLOWS.create({ id: instanceId(params), params });
    return true;
  } catch (error) {
    if (await existing(env, params)) return false;
    throw error;
  }
}

async function existing(env: Bindings, params: FlowParams): Promise<WorkflowInstance | null> {
  try {
    return await env.FLOWS.get(instanceId(params));
  } catch {
    return null;
  }
}

/**
 * Makes sure flows run their queued runs: creates the instance of each one's current generation (read with its runs'
 * queueing, `queueRuns`), or wakes it. An instance that is ending hands over to the next generation itself when runs
 * are still queued, so a wake that reaches an instance too late is never lost.
 */
export async function wakeFlows(env: Bindings, flows: FlowParams[]): Promise<void> {
  await Promise.all(flows.map((flow) => wakeInstance(env, flow)));
}

/** How long a run may stay queued or running with no change before its flow counts as stalled. */
export const STALLED_AFTER_MS = 30_000;
/** The most stalled flows one check resumes. */
const STALLED_BATCH = 50;
/** Instance states from which no run is taken again. */
const ENDED_STATES = new Set<InstanceStatus["status"]>(["complete", "errored", "terminated"]);

/**
 * Resumes the flows whose runs have stayed queued or running for `STALLED_AFTER_MS` with no change; answers how
 * many it found, and when the open runs that are not stalled yet would be (null when none is open). The local runtime resumes an instance cut off by a restart only when an event reaches it (Cloudflare
 * resumes its own); an instance that failed, or a wake that was lost, leaves its runs to the flow's next trigger.
 * A wake that reaches an instance at work is kept for its next wait, which then finds no run and waits again.
 */
export async function resumeStalledFlows(
  env: Bindings,
  now = Date.now(),
): Promise<{ resumed: number; nextAt: number | null }> {
  const stalledBefore = new Date(now - STALLED_AFTER_MS).toISOString();
  const { results } = await env.DB.prepare(
    `SELECT r.org_id AS orgId, r.room_id AS roomId, r.conversation_id AS conversationId, r.agent_id AS agentId,
       i.generation AS generation
     FROM flow_runs r JOIN flow_instances i ON i.conversation_id = r.conversation_id AND i.agent_id = r.agent_id
     WHERE r.status IN ('queued', 'running') AND r.updated_at < ?
     GROUP BY r.conversation_id, r.agent_id LIMIT ?`,
  )
    .bind(stalledBefore, STALLED_BATCH)
    .all<FlowParams>();
  await Promise.all(results.map((flow) => resumeFlow(env, flow)));
  // When the open runs not stalled yet would be: a check then finds them, if nothing changed them meanwhile.
  const newest = await env.DB.prepare(
    "SELECT min(updated_at) AS at FROM flow_runs WHERE status IN ('queued', 'running') AND updated_at >= ?",
  )
    .bind(stalledBefore)
    .first<string | null>("at");
  return { resumed: results.length, nextAt: newest ? Date.parse(newest) + STALLED_AFTER_MS + 1 : null };
}

/** Wakes a stalled flow's instance; one that ended (failed, or stopped) hands its runs to the next generation. */
async function resumeFlow(env: Bindings, flow: FlowParams): Promise<void> {
  const instance = await existing(env, flow);
  if (!instance || !ENDED_STATES.has((await instance.status()).status)) return wakeInstance(env, flow);
  console.warn("flow instance ended with runs open; the next generation takes them", instanceId(flow));
  await nextGeneration(env, flow);
  await createInstance(env, { ...flow, generation: flow.generation + 1 });
}

/** Creates a generation's instance, or wakes it. */
async function wakeInstance(env: Bindings, current: FlowParams): Promise<void> {
  let instance = await existing(env, current);
  if (!instance) {
    if (await createInstance(env, current)) return;
    instance = await env.FLOWS.get(instanceId(current));
  }
  await instance.sendEvent({ type: "wake", payload: {} });
}

/**
 * The end of a generation: moves the (conversation, agent) to the next one, then starts it at once if runs are
 * queued (otherwise the next trigger starts it). Checking after the move closes the race with a trigger that still
 * woke this generation.
 */
export async function handOver(env: Bindings, params: FlowParams): Promise<void> {
  await nextGeneration(env, params);
  const queued = await queuedRuns(env.DB, params.conversationId, params.agentId, 1);
  if (queued.length > 0) await createInstance(env, { ...params, generation: params.generation + 1 });
}

/** Moves a (conversation, agent) from this generation to the next (no change if another call moved it already). */
async function nextGeneration(env: Bindings, params: FlowParams): Promise<void> {
  await env.DB.prepare(
    "UPDATE flow_instances SET generation = ? WHERE conversation_id = ? AND agent_id = ? AND generation = ?",
  )
    .bind(params.generation + 1, params.conversationId, params.agentId, params.generation)
    .run();
}
