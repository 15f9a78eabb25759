import type { Bindings } from "../env";
import { chunks, D1_MAX_IDS } from "../db/client";
import type { QueueBody } from "../events/queue";
import { DEFAULT_FLOW, type AgentSettings, type Flow } from "../protocol/accounts";
import type { Conversation } from "../protocol/conversations";
import type { ParleyEvent } from "../protocol/events";
import type { Message } from "../protocol/messages";
import { wakeFlows } from "./instances";
import { flowKey, publishRuns, queueRuns, type RunTrigger } from "./runs";

/** How many agent replies in a row may answer agents (`replyToAgents`) before the exchange stops. */
export const MAX_AGENT_DEPTH = 3;

/** The flow of an agent: its own, or the default one (an assistant reply to every message). */
export function flowOf(settings: AgentSettings | null | undefined): Flow {
  return settings?.flow ?? DEFAULT_FLOW;
}

/** A trigger (a conversation's start or a message) and the auto-responding agents of its room when it happened. */
interface Candidate {
  event: ParleyEvent;
  roomId: string;
  agents: string[];
}

/**
 * The flow dispatcher of the events consumer: a conversation's start and every message posted by someone else
 * queue a run for each auto-responding agent of the room whose flow has steps for it; then each (conversation,
 * agent) flow instance is created or woken. The room names its auto-responding agents in the queue body when it
 * commits the event, so membership is the one at that moment and rooms without agents cost no query. Runs are keyed
 * by their trigger, so redelivered events queue nothing twice, and waking is harmless to repeat.
 */
export async function dispatchFlows(env: Bindings, bodies: QueueBody[]): Promise<void> {
  const triggering = bodies.filter(isTrigger);
  if (triggering.length === 0) return;
  const candidates = await withAgents(env.DB, triggering);
  const agentIds = [...new Set(candidates.flatMap((c) => c.agents))];
  if (agentIds.length === 0) return;
  const flows = await agentFlows(env.DB, agentIds);
  const depths = await replyDepths(env.DB, candidates);

  const triggers: RunTrigger[] = [];
  for (const candidate of candidates) {
    for (const agentId of candidate.agents) {
      const flow = flows.get(agentId);
      const trigger = flow && triggerFor(candidate, agentId, flow, depths.get(candidate.event.id) ?? 0);
      if (trigger) triggers.push(trigger);
    }
  }
  const { created, waiting, generations } = await queueRuns(env.DB, triggers);
  // Only flows with runs still queued need waking: the consumer's second pass over a trigger the room already
  // dispatched usually finds its run begun or done, and then costs no Workflow call.
  const instances = new Map(triggers.filter((t) => waiting.has(flowKey(t))).map((t) => [flowKey(t), t]));
  const woken = [...instances].map(([key, t]) => ({
    orgId: t.orgId,
    roomId: t.roomId,
    conversationId: t.conversationId,
    agentId: t.agentId,
    generation: generations.get(key)!,
  }));
  // The queued runs' events go out while their flows wake: the events queue keeps no order between messages anyway.
  await Promise.all([publishRuns(env, created), wakeFlows(env, woken)]);
}

/** Whether an event may start flows: a conversation's start, or a message that names agents who may answer it. */
function isTrigger(body: QueueBody): boolean {
  const type = body.event.type;
  return (type === "conversation.created" || type === "conversation.message_posted") && body.agents?.length !== 0;
}

/**
 * For the events consumer's D1 batch: the triggers of `bodies` whose runs have all begun (the room dispatched them,
 * and their flows took them). Those need no second dispatch; read them with `dispatchedOf`.
 */
export function dispatchedStatements(db: D1Database, bodies: QueueBody[]): D1PreparedStatement[] {
  const ids = bodies.filter(isTrigger).map((body) => body.event.id);
  return chunks(ids, D1_MAX_IDS).map((some) =>
    db
      .prepare(
        `SELECT event_id FROM flow_runs WHERE event_id IN (${some.map(() => "?").join(",")})
         GROUP BY event_id HAVING SUM(status = 'queued') = 0`,
      )
      .bind(...some),
  );
}

/** The event ids in the results of `dispatchedStatements`. */
export function dispatchedOf(results: D1Result[]): Set<string> {
  return new Set(results.flatMap((result) => (result.results as { event_id: string }[]).map((row) => row.event_id)));
}

/**
 * The run a trigger asks of an agent, if any: never for the agent's own messages, nor other agents' unless its flow
 * says so, and then only up to `MAX_AGENT_DEPTH` replies in a row, so two agents never talk to each other forever.
 */
function triggerFor(candidate: Candidate, agentId: string, flow: Flow, depth: number): RunTrigger | null {
  const { event, roomId } = candidate;
  const base = { orgId: event.orgId, agentId, roomId, eventId: event.id, depth };
  if (event.type === "conversation.created") {
    if (!flow.onStart?.length) return null;
    const conversation = event.data as Conversation;
    return {
      ...base,
      conversationId: conversation.id,
      trigger: "start",
      messageId: null,
      seq: 0,
      at: event.occurredAt,
    };
  }
  const message = event.data as Message;
  if (!flow.onMessage?.length || message.authorId === agentId || message.type === "system") return null;
  if (message.type === "bot" && (!flow.replyToAgents || depth > MAX_AGENT_DEPTH)) return null;
  return {
    ...base,
    conversationId: message.conversationId,
    trigger: "message",
    messageId: message.id,
    seq: message.seq,
    at: new Date().toISOString(),
  };
}

/**
 * The agents of each trigger: as its room named them, or for bodies that do not say (written by older code), the
 * auto-responding agents of the D1 mirror that had joined by the time of the event.
 */
async function withAgents(db: D1Database, bodies: QueueBody[]): Promise<Candidate[]> {
  const roomOf = (event: ParleyEvent) => (event.data as Conversation | Message).roomId;
  const unknown = [...new Set(bodies.filter((b) => !b.agents).map((b) => roomOf(b.event)))];
  const mirrored = new Map<string, { agentId: string; joinedAt: string }[]>();
  for (const ids of chunks(unknown, D1_MAX_IDS)) {
    const { results } = await db
      .prepare(
        `SELECT p.room_id AS roomId, p.account_id AS agentId, p.joined_at AS joinedAt
         FROM participants p JOIN accounts a ON a.id = p.account_id AND a.org_id = p.org_id
         WHERE p.room_id IN (${ids.map(() => "?").join(",")}) AND p.auto_respond = 1 AND a.type = 'agent'`,
      )
      .bind(...ids)
      .all<{ roomId: string; agentId: string; joinedAt: string }>();
    for (const row of results) mirrored.set(row.roomId, [...(mirrored.get(row.roomId) ?? []), row]);
  }
  return bodies.map((body) => {
    const roomId = roomOf(body.event);
    const agents =
      body.agents ??
      (mirrored.get(roomId) ?? []).filter((a) => a.joinedAt <= body.event.occurredAt).map((a) => a.agentId);
    return { event: body.event, roomId, agents };
  });
}

/** The current flow of each agent account. */
async function agentFlows(db: D1Database, agentIds: string[]): Promise<Map<string, Flow>> {
  const flows = new Map<string, Flow>();
  for (const ids of chunks(agentIds, D1_MAX_IDS)) {
    const { results } = await db
      .prepare(`SELECT id, agent FROM accounts WHERE id IN (${ids.map(() => "?").join(",")}) AND type = 'agent'`)
      .bind(...ids)
      .all<{ id: string; agent: string | null }>();
    for (const row of results) flows.set(row.id, flowOf(row.agent ? (JSON.parse(row.agent) as AgentSettings) : null));
  }
  return flows;
}

/**
 * The reply depth of bot messages posted by flow steps (their `clientMessageId` is `<run id>.<step>`): one more than
 * the depth of the run that posted them. A person's message, or a bot message posted by other means, has depth 0.
 */
async function replyDepths(db: D1Database, candidates: Candidate[]): Promise<Map<string, number>> {
  const byRun = new Map<string, string[]>();
  for (const { event } of candidates) {
    const message = event.data as Message;
    if (event.type !== "conversation.message_posted" || message.type !== "bot") continue;
    const runId = /^(run_[0-9a-z]+)\.\d+$/.exec(message.clientMessageId ?? "")?.[1];
    if (runId) byRun.set(runId, [...(byRun.get(runId) ?? []), event.id]);
  }
  const depths = new Map<string, number>();
  for (const ids of chunks([...byRun.keys()], D1_MAX_IDS)) {
    const { results } = await db
      .prepare(`SELECT id, depth FROM flow_runs WHERE id IN (${ids.map(() => "?").join(",")})`)
      .bind(...ids)
      .all<{ id: string; depth: number }>();
    for (const run of results) for (const eventId of byRun.get(run.id) ?? []) depths.set(eventId, run.depth + 1);
  }
  return depths;
}
