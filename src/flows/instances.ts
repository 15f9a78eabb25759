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
  await env.DB.prepare(
    "UPDATE flow_instances SET generation = ? WHERE conversation_id = ? AND agent_id = ? AND generation = ?",
  )
    .bind(params.generation + 1, params.conversationId, params.agentId, params.generation)
    .run();
  const queued = await queuedRuns(env.DB, params.conversationId, params.agentId, 1);
  if (queued.length > 0) await createInstance(env, { ...params, generation: params.generation + 1 });
}
