import type { Bindings } from "../env";
import { chunks, D1_MAX_IDS } from "../db/client";
import { DEFAULT_FLOW, type AgentSettings, type Flow } from "../protocol/accounts";
import type { Conversation } from "../protocol/conversations";
import type { ParleyEvent } from "../protocol/events";
import type { Message } from "../protocol/messages";
import { wakeFlow } from "./instances";
import { publishRuns, queueRuns, type RunTrigger } from "./runs";

/** An auto-responding agent of a room. */
interface RoomAgent {
  roomId: string;
  agentId: string;
  joinedAt: string;
  flow: Flow;
}

/** The flow of an agent: its own, or the default one (an assistant reply to every message). */
export function flowOf(settings: AgentSettings | null | undefined): Flow {
  return settings?.flow ?? DEFAULT_FLOW;
}

/**
 * The flow dispatcher of the events consumer: a conversation's start and every message posted by someone else
 * queue a run for each auto-responding agent of the room whose flow has steps for it; then each (conversation,
 * agent) flow instance is created or woken. Runs are keyed by their trigger, so redelivered events queue nothing
 * twice, and waking is harmless to repeat.
 */
export async function dispatchFlows(env: Bindings, events: ParleyEvent[]): Promise<void> {
  const candidates = events.filter(
    (e) => e.type === "conversation.created" || e.type === "conversation.message_posted",
  );
  if (candidates.length === 0) return;
  const agents = await autoRespondingAgents(env.DB, [...new Set(candidates.map(roomOfTrigger))]);
  if (agents.length === 0) return;

  const depths = await replyDepths(env.DB, candidates);
  const triggers: RunTrigger[] = [];
  for (const event of candidates) {
    for (const agent of agents) {
      if (agent.roomId !== roomOfTrigger(event)) continue;
      const trigger = triggerFor(event, agent, depths);
      if (trigger) triggers.push(trigger);
    }
  }
  const created = await queueRuns(env.DB, triggers);
  await publishRuns(env, created);
  const flows = new Map(triggers.map((t) => [`${t.conversationId}/${t.agentId}`, t]));
  await Promise.all(
    [...flows.values()].map((t) =>
      wakeFlow(env, { orgId: t.orgId, roomId: t.roomId, conversationId: t.conversationId, agentId: t.agentId }),
    ),
  );
}

function roomOfTrigger(event: ParleyEvent): string {
  return (event.data as Conversation | Message).roomId;
}

/**
 * The run an event asks of an agent that was in the room when it happened, if any: never for its own messages, nor
 * other agents' unless its flow says so,
 * and then only up to `MAX_AGENT_DEPTH` replies in a row, so two agents never talk to each other forever.
 */
function triggerFor(event: ParleyEvent, agent: RoomAgent, depths: Map<string, number>): RunTrigger | null {
  // Only what happened after the agent joined: a trigger read late must not reach an agent added meanwhile.
  if (agent.joinedAt > event.occurredAt) return null;
  const depth = depths.get(event.id) ?? 0;
  const base = { orgId: event.orgId, agentId: agent.agentId, roomId: agent.roomId, eventId: event.id, depth };
  if (event.type === "conversation.created") {
    if (!agent.flow.onStart?.length) return null;
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
  if (!agent.flow.onMessage?.length || message.authorId === agent.agentId || message.type === "system") return null;
  if (message.type === "bot" && (!agent.flow.replyToAgents || depth > MAX_AGENT_DEPTH)) return null;
  return {
    ...base,
    conversationId: message.conversationId,
    trigger: "message",
    messageId: message.id,
    seq: message.seq,
    at: new Date().toISOString(),
  };
}

/** How many agent replies in a row may answer agents (`replyToAgents`) before the exchange stops. */
export const MAX_AGENT_DEPTH = 3;

/**
 * The reply depth of bot messages posted by flow steps (their `clientMessageId` is `<run id>.<step>`): one more than
 * the depth of the run that posted them. A person's message, or a bot message posted by other means, has depth 0.
 */
async function replyDepths(db: D1Database, events: ParleyEvent[]): Promise<Map<string, number>> {
  const byRun = new Map<string, string[]>();
  for (const event of events) {
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

/** The auto-responding agents of rooms, from the D1 mirror (which the consumer brought up to date first). */
async function autoRespondingAgents(db: D1Database, roomIds: string[]): Promise<RoomAgent[]> {
  const found: RoomAgent[] = [];
  for (const ids of chunks(roomIds, D1_MAX_IDS)) {
    const { results } = await db
      .prepare(
        `SELECT p.room_id AS roomId, p.account_id AS agentId, p.joined_at AS joinedAt, a.agent AS agent
         FROM participants p JOIN accounts a ON a.id = p.account_id AND a.org_id = p.org_id
         WHERE p.room_id IN (${ids.map(() => "?").join(",")}) AND p.auto_respond = 1 AND a.type = 'agent'`,
      )
      .bind(...ids)
      .all<{ roomId: string; agentId: string; joinedAt: string; agent: string | null }>();
    for (const row of results) {
      const settings = row.agent ? (JSON.parse(row.agent) as AgentSettings) : null;
      found.push({ roomId: row.roomId, agentId: row.agentId, joinedAt: row.joinedAt, flow: flowOf(settings) });
    }
  }
  return found;
}
