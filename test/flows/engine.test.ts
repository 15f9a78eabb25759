import {
  createExecutionContext,
  createMessageBatch,
  env,
  getQueueResult,
  introspectWorkflowInstance,
  runInDurableObject,
} from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { accountToken, call, createAccount, createOrg, eventually, expectError } from "../helpers/api";
import { addParticipant, openHub, openRoom, request, subscribe } from "../helpers/realtime";
import { consumeEvents } from "../../src/events/consumer";
import { messagePostedEvent } from "../../src/events/envelope";
import { dispatchedOf, dispatchedStatements } from "../../src/flows/dispatch";
import { instanceId, resumeStalledFlows, STALLED_AFTER_MS } from "../../src/flows/instances";
import { takeRun } from "../../src/flows/runs";
import type { ParleyEvent } from "../../src/protocol/events";
import { runStep } from "../../src/flows/steps";
import { agentRoom, historyOf, newConversation, runsOf, say, streamEvents } from "./helpers";

/**
 * Queues a message's run in D1 as a room does, without waking its flow (the flow's generation row made if missing);
 * answers the run's id.
 */
async function queueRunDirectly(run: {
  orgId: string;
  agentId: string;
  conversationId: string;
  roomId: string;
  message: any;
}): Promise<string> {
  const { message } = run;
  const id = `run_${message.id.slice(4)}`;
  await env.DB.batch([
    env.DB.prepare(
      "INSERT INTO flow_runs (id, org_id, agent_id, conversation_id, room_id, trigger, trigger_key, message_id, " +
        "event_id, seq, depth, status, started_at, updated_at) VALUES (?, ?, ?, ?, ?, 'message', ?, ?, ?, ?, 0, 'queued', ?, ?)",
    ).bind(
      id,
      run.orgId,
      run.agentId,
      run.conversationId,
      run.roomId,
      message.id,
      message.id,
      messagePostedEvent(message).id,
      message.seq,
      message.createdAt,
      message.createdAt,
    ),
    env.DB.prepare(
      "INSERT INTO flow_instances (conversation_id, agent_id, org_id, generation) VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING",
    ).bind(run.conversationId, run.agentId, run.orgId),
  ]);
  return id;
}

/** Turns an agent's autoRespond in a room on or off. */
async function setAutoRespond(apiKey: string, roomId: string, agentId: string, on: boolean): Promise<void> {
  const patched = await call("PATCH", `/v1/rooms/${roomId}/participants/${agentId}`, {
    token: apiKey,
    body: { autoRespond: on },
  });
  expect(patched.status, JSON.stringify(patched.body)).toBe(200);
}

/**
 * Posts a message while the agent does not answer on its own, so its room queues and wakes no run for it and a test
 * can play that part; then turns its autoRespond back on (a run of an agent that no longer answers would fail).
 */
async function sayUnanswered(
  flow: { apiKey: string; roomId: string; agentId: string; conversationId: string; userId: string },
  text: string,
) {
  await setAutoRespond(flow.apiKey, flow.roomId, flow.agentId, false);
  const message = await say(flow.apiKey, flow.conversationId, flow.userId, text);
  await setAutoRespond(flow.apiKey, flow.roomId, flow.agentId, true);
  return message;
}

/** The Workflow instance of a (conversation, agent) flow's generation, for introspection. */
function flowInstance(conversationId: string, agentId: string, generation = 0) {
  return introspectWorkflowInstance(env.FLOWS, instanceId({ conversationId, agentId, generation }));
}

describe("the flow engine", () => {
  it("answers a burst of messages one run at a time, in the order they were posted", async () => {
    const { apiKey, user, bot, conversationId, socket } = await agentRoom();
    const questions = Array.from({ length: 6 }, (_, i) => `question ${i + 1}`);
    await Promise.all(questions.map((q) => say(apiKey, conversationId, user.id, q)));
    const runs = await runsOf(
      apiKey,
      conversationId,
      (r) => r.length === 6 && r.every((x) => x.status === "completed"),
    );
    const history = await historyOf(apiKey, conversationId, 12);
    const asked = history.filter((m) => m.authorId === user.id);
    const answers = history.filter((m) => m.authorId === bot.id);
    expect(answers.map((m) => m.text)).toEqual(asked.map((m) => `Echo: ${m.text}`));
    // Runs went one at a time, in trigger order: each started after the previous one ended.
    const byMessage = asked.map((m) => runs.find((r) => r.messageId === m.id)!);
    for (let i = 1; i < byMessage.length; i++) {
      expect(byMessage[i].startedAt >= byMessage[i - 1].updatedAt).toBe(true);
    }
    socket.close();
  });

  it("never answers its own messages, and two agents do not answer each other", async () => {
    const { apiKey, user, bot, room, conversationId, socket } = await agentRoom();
    const other = await createAccount(apiKey, { type: "agent", name: "Other", agent: {} });
    await addParticipant(apiKey, room.id, other.id);
    await say(apiKey, conversationId, user.id, "hi both");
    await historyOf(apiKey, conversationId, 3);
    await runsOf(apiKey, conversationId, (r) => r.length === 2 && r.every((x) => x.status === "completed"));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const history = await historyOf(apiKey, conversationId, 3);
    expect(history).toHaveLength(3);
    expect(new Set(history.slice(1).map((m) => m.authorId))).toEqual(new Set([bot.id, other.id]));
    const runs = await runsOf(apiKey, conversationId, (r) => r.length === 2);
    expect(runs.every((r) => r.messageId === history[0].id)).toBe(true);
    socket.close();
  });

  it("names on each message the agents that may answer it: never its author", async () => {
    const { apiKey, user, bot, room, conversationId, socket } = await agentRoom();
    const other = await createAccount(apiKey, { type: "agent", name: "Other", agent: {} });
    await addParticipant(apiKey, room.id, other.id);
    // Keep a copy of every queue body the room commits.
    const stub = env.ROOMS.get(env.ROOMS.idFromName(room.id));
    await runInDurableObject(stub, (_instance: unknown, state: DurableObjectState) => {
      state.storage.sql.exec(`CREATE TABLE seen (body TEXT NOT NULL);
        CREATE TRIGGER keep_outbox AFTER INSERT ON outbox BEGIN INSERT INTO seen VALUES (new.body); END;`);
    });
    const question = await say(apiKey, conversationId, user.id, "hi both");
    await historyOf(apiKey, conversationId, 3);
    const bodies = await runInDurableObject(stub, (_instance: unknown, state: DurableObjectState) =>
      state.storage.sql
        .exec<{ body: string }>("SELECT body FROM seen")
        .toArray()
        .map((row) => JSON.parse(row.body)),
    );
    const agentsOf = (authorId: string) =>
      bodies.find((b) => b.event.type === "conversation.message_posted" && b.event.data.authorId === authorId)?.agents;
    expect(new Set(agentsOf(user.id))).toEqual(new Set([bot.id, other.id]));
    expect(agentsOf(bot.id)).toEqual([other.id]);
    expect(agentsOf(other.id)).toEqual([bot.id]);
    expect(bodies.find((b) => b.event.data.id === question.id).agents).toHaveLength(2);
    socket.close();
  });

  it("with replyToAgents, agents answer each other only a bounded number of times", async () => {
    const chatty = { flow: { onMessage: [{ type: "reply", text: "noted" }], replyToAgents: true } };
    const { apiKey, user, room, conversationId, socket } = await agentRoom(chatty);
    const other = await createAccount(apiKey, { type: "agent", name: "Other", agent: chatty });
    await addParticipant(apiKey, room.id, other.id);
    await say(apiKey, conversationId, user.id, "start");
    // user -> both agents (depth 1) -> each answers the other (2) -> (3) -> (4) and then it stops.
    const settled = await eventually(async () => {
      const before = (await historyOf(apiKey, conversationId, 1)).length;
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const after = await historyOf(apiKey, conversationId, 1);
      return after.length === before && before > 3 ? after : null;
    }, 30_000);
    expect(settled.length).toBe(1 + 2 * 4);
    socket.close();
  });

  it("an agent added to a room later joins its existing conversations on their next message", async () => {
    const { apiKey, user, room, conversationId, socket } = await agentRoom({ flow: { onMessage: [] } });
    const late = await createAccount(apiKey, { type: "agent", name: "Late", agent: {} });
    await say(apiKey, conversationId, user.id, "before");
    await addParticipant(apiKey, room.id, late.id);
    await say(apiKey, conversationId, user.id, "after");
    const history = await historyOf(apiKey, conversationId, 3);
    expect(history.map((m) => [m.authorId, m.text])).toEqual([
      [user.id, "before"],
      [user.id, "after"],
      [late.id, "Echo: after"],
    ]);
    socket.close();
  });

  it("a redelivered or duplicated event batch queues no second run and posts no second reply", async () => {
    const { apiKey, user, conversationId, socket } = await agentRoom();
    const question = await say(apiKey, conversationId, user.id, "only once");
    await historyOf(apiKey, conversationId, 2);
    await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed");
    const event = messagePostedEvent(question);
    const batch = createMessageBatch<unknown>("parley-events", [
      { id: "a", timestamp: new Date(), attempts: 2, body: { event } },
      { id: "b", timestamp: new Date(), attempts: 1, body: JSON.stringify({ event }) },
    ]);
    const ctx = createExecutionContext();
    await consumeEvents(batch, env);
    const result = await getQueueResult(batch, ctx);
    expect(result.ackAll).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await historyOf(apiKey, conversationId, 2)).toHaveLength(2);
    expect(await runsOf(apiKey, conversationId, () => true)).toHaveLength(1);
    socket.close();
  });

  it("the events consumer wakes a flow whose run the room queued but never woke", async () => {
    // The agent does not answer on its own, so the room dispatches nothing: the test plays a room that queued the
    // run and stopped before waking the flow.
    const { apiKey, orgId, user, bot, room, conversationId, socket } = await agentRoom();
    const flow = { apiKey, roomId: room.id, agentId: bot.id, conversationId, userId: user.id };
    const question = await sayUnanswered(flow, "anyone there?");
    const event = messagePostedEvent(question);
    const runId = await queueRunDirectly({
      orgId,
      agentId: bot.id,
      conversationId,
      roomId: room.id,
      message: question,
    });
    const batch = createMessageBatch<unknown>("parley-events", [
      { id: "a", timestamp: new Date(), attempts: 1, body: JSON.stringify({ event, agents: [bot.id] }) },
    ]);
    await consumeEvents(batch, env);
    expect((await getQueueResult(batch, createExecutionContext())).ackAll).toBe(true);
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history[1]).toMatchObject({ authorId: bot.id, text: "Echo: anyone there?" });
    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed");
    expect(runs.map((r) => r.id)).toEqual([runId]);
    socket.close();
  });

  it("the check for stalled flows resumes a flow whose run waited with no wake", async () => {
    // As a restart leaves a flow: a run queued that no instance takes (the room never woke it).
    const { apiKey, orgId, user, bot, room, conversationId, socket } = await agentRoom();
    const flow = { apiKey, roomId: room.id, agentId: bot.id, conversationId, userId: user.id };
    const question = await sayUnanswered(flow, "still there?");
    await queueRunDirectly({ orgId, agentId: bot.id, conversationId, roomId: room.id, message: question });
    // Not stalled yet: nothing is resumed.
    const stalledAt = Date.parse(question.createdAt) + STALLED_AFTER_MS + 1;
    const early = await resumeStalledFlows(env, Date.parse(question.createdAt) + 1_000);
    // ... but the check says when it would be (at the latest; another test's run may come sooner).
    expect(early.resumed).toBe(0);
    expect(early.nextAt).toBeLessThanOrEqual(stalledAt);
    expect(await resumeStalledFlows(env, stalledAt)).toMatchObject({ resumed: 1 });
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history[1]).toMatchObject({ authorId: bot.id, text: "Echo: still there?" });
    expect((await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed")).length).toBe(1);
    socket.close();
  });

  it("the check for stalled flows hands the runs of an instance that ended to the next generation", async () => {
    const { apiKey, orgId, user, bot, room, conversationId, socket } = await agentRoom({
      flow: { onMessage: [{ type: "reply", text: "ack" }] },
    });
    await say(apiKey, conversationId, user.id, "one");
    await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed");
    // Generation 0's instance stops for good, and a run is queued with no wake (the room's went to the old one).
    await (await env.FLOWS.get(instanceId({ conversationId, agentId: bot.id, generation: 0 }))).terminate();
    const flow = { apiKey, roomId: room.id, agentId: bot.id, conversationId, userId: user.id };
    const second = await sayUnanswered(flow, "two");
    await queueRunDirectly({ orgId, agentId: bot.id, conversationId, roomId: room.id, message: second });
    expect(await resumeStalledFlows(env, Date.parse(second.createdAt) + STALLED_AFTER_MS + 1)).toMatchObject({
      resumed: 1,
    });
    const runs = await runsOf(apiKey, conversationId, (r) => r.length === 2 && r[1].status === "completed");
    expect(runs[1].messageId).toBe(second.id);
    const generation = await env.DB.prepare(
      "SELECT generation FROM flow_instances WHERE conversation_id = ? AND agent_id = ?",
    )
      .bind(conversationId, bot.id)
      .first<number>("generation");
    expect(generation).toBe(1);
    expect((await historyOf(apiKey, conversationId, 4)).map((m) => m.text)).toEqual(["one", "ack", "two", "ack"]);
    socket.close();
  });

  it("turning autoRespond off ends the reply under way and fails the runs queued behind it: nothing more is posted", async () => {
    const { apiKey, user, bot, room, conversationId, socket } = await agentRoom({ model: "openai:echo@150" });
    for (const text of ["one", "two", "three"]) await say(apiKey, conversationId, user.id, text);
    await eventually(async () => {
      await socket.flush();
      return streamEvents(socket).length > 0;
    });
    await setAutoRespond(apiKey, room.id, bot.id, false);
    const runs = await runsOf(apiKey, conversationId, (r) => r.length === 3 && r.every((x) => x.status === "failed"));
    for (const run of runs) expect(run.error).toMatch(/no longer responds automatically/);
    const done = await eventually(async () => {
      await socket.flush();
      return streamEvents(socket).find((e) => e.done);
    });
    expect(done).toMatchObject({ authorId: bot.id, done: true, error: expect.stringMatching(/no longer responds/) });
    expect(streamEvents(socket).filter((e) => e.done)).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const history = await historyOf(apiKey, conversationId, 3);
    expect(history.map((m) => m.text)).toEqual(["one", "two", "three"]);
    socket.close();
  });

  it("removing the agent from the room ends its reply and fails its queued runs, saying so", async () => {
    const { apiKey, user, bot, room, conversationId, socket } = await agentRoom({ model: "openai:echo@150" });
    for (const text of ["one", "two"]) await say(apiKey, conversationId, user.id, text);
    await eventually(async () => {
      await socket.flush();
      return streamEvents(socket).length > 0;
    });
    const removed = await call("DELETE", `/v1/rooms/${room.id}/participants/${bot.id}`, { token: apiKey });
    expect(removed.status).toBe(204);
    const runs = await runsOf(apiKey, conversationId, (r) => r.length === 2 && r.every((x) => x.status === "failed"));
    for (const run of runs) expect(run.error).toMatch(/the agent is no longer a participant of this room/);
    expect((await historyOf(apiKey, conversationId, 2)).map((m) => m.text)).toEqual(["one", "two"]);
    socket.close();
  });

  it("a queued run whose agent no longer answers on its own calls no webhook and fails", async () => {
    const { apiKey, orgId, user, bot, room, conversationId, socket } = await agentRoom({
      flow: { onMessage: [{ type: "webhook", url: env.OPENAI_BASE_URL!.replace(/\/v1$/, "/hooks/reply") }] },
    });
    await setAutoRespond(apiKey, room.id, bot.id, false);
    const marker = `unanswered ${crypto.randomUUID()}`;
    const question = await say(apiKey, conversationId, user.id, marker);
    await queueRunDirectly({ orgId, agentId: bot.id, conversationId, roomId: room.id, message: question });
    expect(await resumeStalledFlows(env, Date.parse(question.createdAt) + STALLED_AFTER_MS + 1)).toMatchObject({
      resumed: 1,
    });
    const [run] = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "failed");
    expect(run.error).toMatch(/no longer responds automatically/);
    const hookEvents = await (await fetch(env.OPENAI_BASE_URL!.replace(/\/v1$/, "/hook-events"))).json<any[]>();
    expect(hookEvents.some((e) => e.data?.text === marker)).toBe(false);
    expect(await historyOf(apiKey, conversationId, 1)).toHaveLength(1);
    socket.close();
  });

  it("a participant cannot take a step's clientMessageId and so stand in for the agent's reply", async () => {
    const { apiKey, user, bot, conversationId, socket, room } = await agentRoom({
      flow: {
        onMessage: [
          { type: "reply", text: "first" },
          { type: "reply", text: "second" },
        ],
      },
    });
    const userSocket = await openRoom(room.id, await accountToken(apiKey, user.id));
    await say(apiKey, conversationId, user.id, "hello");
    const [run] = await runsOf(apiKey, conversationId, (r) => r.length === 1);
    for (const step of [0, 1]) {
      const taken = await call("POST", `/v1/conversations/${conversationId}/messages`, {
        token: apiKey,
        body: { authorId: user.id, text: "me instead", clientMessageId: `${run.id}.${step}` },
      });
      expectError(taken, 400, "BAD_REQUEST");
      const frame = await request(userSocket, {
        type: "message.post",
        conversationId,
        text: "me instead",
        clientMessageId: `${run.id}.${step}`,
      });
      expect(frame).toMatchObject({ type: "error", error: { code: "BAD_REQUEST" } });
    }
    const history = await historyOf(apiKey, conversationId, 3);
    expect(history.map((m) => [m.authorId, m.text])).toEqual([
      [user.id, "hello"],
      [bot.id, "first"],
      [bot.id, "second"],
    ]);
    socket.close();
    userSocket.close();
  });

  it("a retried step posts nothing twice: reply, webhook and assistant steps are idempotent", async () => {
    const { apiKey, user, bot, room, conversationId, orgId, socket } = await agentRoom({ flow: { onMessage: [] } });
    const question = await say(apiKey, conversationId, user.id, "retry me");
    const flow = { orgId, roomId: room.id, conversationId, agentId: bot.id, generation: 0 };
    const run = {
      id: "run_00000000000000000000000001",
      trigger: "message" as const,
      messageId: question.id,
      eventId: "evt_x",
      seq: 1,
    };
    const hook = env.OPENAI_BASE_URL!.replace(/\/v1$/, "/hooks/reply");
    const steps = [
      { type: "reply" as const, text: "once" },
      { type: "webhook" as const, url: hook },
      { type: "assistant" as const },
    ];
    for (let attempt = 0; attempt < 2; attempt++) {
      for (const [index, step] of steps.entries()) {
        const outcome = await runStep(env, flow, run, index, step, {});
        expect(outcome.error, JSON.stringify(outcome)).toBeUndefined();
      }
    }
    const history = await historyOf(apiKey, conversationId, 4);
    expect(history.map((m) => m.text)).toEqual([
      "retry me",
      "once",
      "hook got conversation.message_posted: retry me",
      "Echo: retry me",
    ]);
    socket.close();
  });

  it("exposes its runs to Workflow introspection: one instance per (conversation, agent) runs them in order", async () => {
    const { apiKey, user, bot, conversationId, socket } = await agentRoom({
      flow: { onMessage: [{ type: "reply", text: "ack" }] },
    });
    await using instance = await flowInstance(conversationId, bot.id);
    const first = await say(apiKey, conversationId, user.id, "one");
    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed");
    // A one-step run is one step: its take runs the step and ends the run.
    expect(await instance.waitForStepResult({ name: "take 0" })).toMatchObject({
      id: runs[0].id,
      steps: [{ type: "reply", text: "ack" }],
      error: null,
      first: { messageId: expect.stringMatching(/^msg_/) },
      ended: true,
    });
    expect(runs[0].messageId).toBe(first.id);
    await say(apiKey, conversationId, user.id, "two");
    const both = await runsOf(apiKey, conversationId, (r) => r.length === 2 && r[1].status === "completed");
    // No take looked for a run after the first: the wake for "two" led to take 1.
    expect(await instance.waitForStepResult({ name: "take 1" })).toMatchObject({ id: both[1].id, ended: true });
    socket.close();
  });

  it("wakes the current generation: after a hand-over the next trigger starts the next generation's instance", async () => {
    const { apiKey, user, bot, conversationId, socket } = await agentRoom({
      flow: { onMessage: [{ type: "reply", text: "ack" }] },
    });
    await say(apiKey, conversationId, user.id, "one");
    await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed");
    // As the end of generation 0 leaves it (`handOver`), with its instance still waiting for a wake.
    await env.DB.prepare("UPDATE flow_instances SET generation = 1 WHERE conversation_id = ? AND agent_id = ?")
      .bind(conversationId, bot.id)
      .run();
    await using next = await flowInstance(conversationId, bot.id, 1);
    await say(apiKey, conversationId, user.id, "two");
    const runs = await runsOf(apiKey, conversationId, (r) => r.length === 2 && r[1].status === "completed");
    expect(await next.waitForStepResult({ name: "take 0" })).toMatchObject({ id: runs[1].id, ended: true });
    socket.close();
  });

  it("a take that fails after its retries leaves the instance running: the next take ends or begins its run", async () => {
    const { apiKey, user, bot, conversationId, socket } = await agentRoom({
      flow: { onMessage: [{ type: "reply", text: "ack" }] },
    });
    await using instance = await flowInstance(conversationId, bot.id);
    await instance.modify(async (m) => {
      await m.disableRetryDelays([{ name: "take 0" }]);
      await m.mockStepError({ name: "take 0" }, new Error("D1 hiccup"));
    });
    await say(apiKey, conversationId, user.id, "one");
    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed", 30_000);
    expect(await instance.waitForStepResult({ name: "take 1" })).toMatchObject({ id: runs[0].id, ended: true });
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history.map((m) => m.text)).toEqual(["one", "ack"]);
    socket.close();
  });
});

describe("webhook steps", () => {
  const hook = (kind: string) => env.OPENAI_BASE_URL!.replace(/\/v1$/, `/hooks/${kind}`);

  it("POSTs the triggering event and posts a JSON { text } answer as the agent; an empty answer posts nothing", async () => {
    const { apiKey, user, bot, conversationId, socket } = await agentRoom({
      flow: {
        onMessage: [
          { type: "webhook", url: hook("reply") },
          { type: "webhook", url: hook("empty") },
        ],
      },
    });
    await say(apiKey, conversationId, user.id, "ping");
    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed");
    expect(runs).toHaveLength(1);
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history[1]).toMatchObject({ authorId: bot.id, text: "hook got conversation.message_posted: ping" });
    expect(history).toHaveLength(2);
    socket.close();
  });

  for (const [kind, error] of [
    ["html", /not JSON/],
    ["big", /larger than/],
    ["long", /longer than a message may be/],
    ["fail", /500/],
  ] as const) {
    it(`a webhook answering ${kind} fails the run, ends a stream with the error and posts nothing`, async () => {
      const { apiKey, user, bot, conversationId, socket } = await agentRoom({
        flow: { onMessage: [{ type: "webhook", url: hook(kind) }] },
      });
      await say(apiKey, conversationId, user.id, "ping");
      const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "failed");
      expect(runs[0].error).toMatch(error);
      const [done] = await eventually(async () => {
        await socket.flush();
        const events = streamEvents(socket);
        return events.length > 0 && events;
      });
      expect(done).toMatchObject({ authorId: bot.id, index: 0, delta: "", done: true, error: runs[0].error });
      expect(done.messageId).toBeUndefined();
      expect(await historyOf(apiKey, conversationId, 1)).toHaveLength(1);
      socket.close();
    });
  }

  it("a webhook that cannot be reached fails the run", async () => {
    const { apiKey, user, conversationId, socket } = await agentRoom({
      flow: { onMessage: [{ type: "webhook", url: "http://127.0.0.1:9/unreachable" }] },
    });
    await say(apiKey, conversationId, user.id, "ping");
    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "failed");
    expect(runs[0].error).toMatch(/reached|timed out/);
    socket.close();
  });

  it("rejects flows with non-http webhook URLs", async () => {
    const { apiKey } = await agentRoom({}, { conversation: false });
    const created = await call("POST", "/v1/accounts", {
      token: apiKey,
      body: {
        type: "agent",
        name: "Bad",
        agent: { flow: { onMessage: [{ type: "webhook", url: "file:///etc/passwd" }] } },
      },
    });
    expect(created.status).toBe(400);
  });
});

describe("GET /v1/flow-runs", () => {
  it("lists runs newest first with filters and cursors, and validates its query", async () => {
    const { apiKey, user, bot, conversationId, room, socket } = await agentRoom({
      flow: { onMessage: [{ type: "reply", text: "ok" }] },
    });
    const second = await newConversation(apiKey, room.id);
    await say(apiKey, conversationId, user.id, "a");
    await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed");
    await say(apiKey, second, user.id, "b");
    await runsOf(apiKey, second, (r) => r[0]?.status === "completed");
    const page1 = await call("GET", `/v1/flow-runs?agentId=${bot.id}&limit=1`, { token: apiKey });
    expect(page1.status).toBe(200);
    expect(page1.body.items).toHaveLength(1);
    expect(page1.body.items[0].conversationId).toBe(second);
    const page2 = await call("GET", `/v1/flow-runs?agentId=${bot.id}&limit=1&cursor=${page1.body.nextCursor}`, {
      token: apiKey,
    });
    expect(page2.body.items[0].conversationId).toBe(conversationId);
    const one = await call("GET", `/v1/flow-runs/${page2.body.items[0].id}`, { token: apiKey });
    expect(one.body).toEqual(page2.body.items[0]);
    expect((await call("GET", "/v1/flow-runs?conversationId=nope", { token: apiKey })).status).toBe(400);
    expect((await call("GET", "/v1/flow-runs/run_0000000000", { token: apiKey })).status).toBe(404);
    expect((await call("GET", "/v1/flow-runs")).status).toBe(401);
    socket.close();
  });
});

describe("flows.flow.run events", () => {
  it("publish each run's queued, running and completed states to the org hub", async () => {
    const { apiKey, user, orgId, conversationId, socket } = await agentRoom({
      flow: { onMessage: [{ type: "reply", text: "ok" }] },
    });
    const hub = await openHub(apiKey);
    await subscribe(hub, `events.${orgId}.flows.flow.run.*`);
    // A participant's own socket sees the conversation, never the runs (the operators', as GET /v1/flow-runs).
    const member = await openHub(await accountToken(apiKey, user.id));
    await subscribe(member, `events.${orgId}.>`);
    await subscribe(member, `events.${orgId}.flows.flow.run.*`);
    await say(apiKey, conversationId, user.id, "go");
    const [run] = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed");
    await hub.waitLog((f) => f.type === "event" && f.event.data?.status === "completed");
    await member.waitLog((f) => f.type === "event" && f.event.data?.text === "ok");
    expect(member.events(() => true).filter((f) => f.event.source === "flows")).toEqual([]);
    member.close();
    const states = hub.events((f) => f.event.resourceId === run.id).map((f) => f.event);
    expect(states.map((e) => e.data.status)).toEqual(["queued", "running", "completed"]);
    expect(states.every((e) => e.topic === `events.${orgId}.flows.flow.run.${run.id}` && e.type === "flow.run")).toBe(
      true,
    );
    expect(states[2].data).toEqual(run);
    hub.close();
    socket.close();
  });
});

describe("runs in D1", () => {
  /** Inserts a run of a (conversation, agent) in a status, for an event. */
  async function insertRun(flow: { orgId: string; conversationId: string; agentId: string }, run: RunSeed) {
    await env.DB.prepare(
      "INSERT INTO flow_runs (id, org_id, agent_id, conversation_id, room_id, trigger, trigger_key, message_id, " +
        "event_id, seq, depth, status, started_at, updated_at) VALUES (?, ?, ?, ?, 'room_x', 'message', ?, ?, ?, ?, 0, ?, " +
        "'2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
    )
      .bind(run.id, flow.orgId, flow.agentId, flow.conversationId, run.id, run.id, run.eventId, run.seq, run.status)
      .run();
  }
  interface RunSeed {
    id: string;
    eventId: string;
    seq: number;
    status: string;
  }

  it("a take ends the run before it and begins the next queued one; a run left running is taken again first", async () => {
    const org = await createOrg();
    const bot = await createAccount(org.apiKey, { type: "agent", name: "Botty", agent: { model: "local:echo" } });
    const flow = { orgId: org.orgId, conversationId: "conv_take", agentId: bot.id };
    await insertRun(flow, { id: "run_a", eventId: "evt_a", seq: 1, status: "queued" });
    await insertRun(flow, { id: "run_b", eventId: "evt_b", seq: 2, status: "running" });
    await insertRun(flow, { id: "run_c", eventId: "evt_c", seq: 3, status: "completed" });

    // run_b is running: a take that began it lost its answer, so it is taken again before run_a.
    const again = await takeRun(env.DB, flow, null);
    expect(again.run).toMatchObject({ id: "run_b", status: "running" });
    expect(again.agent).toMatchObject({ model: "local:echo" });
    const next = await takeRun(env.DB, flow, { id: "run_b", error: "the step failed" });
    expect(next.moved.map((r) => [r.id, r.status, r.error])).toEqual([
      ["run_b", "failed", "the step failed"],
      ["run_a", "running", null],
    ]);
    const none = await takeRun(env.DB, flow, { id: "run_a", error: null });
    expect(none.run).toBeNull();
    expect(none.moved.map((r) => [r.id, r.status])).toEqual([["run_a", "completed"]]);
    // Ending it again (a retried take) moves nothing.
    expect((await takeRun(env.DB, flow, { id: "run_a", error: null })).moved).toEqual([]);
    const gone = await takeRun(env.DB, { ...flow, agentId: "acc_gone" }, null);
    expect(gone).toEqual({ moved: [], run: null, agent: null });
    // A take that failed lost which run it began: the next ends the one this flow has running, and only that one.
    await insertRun(flow, { id: "run_d", eventId: "evt_d", seq: 4, status: "running" });
    await insertRun({ ...flow, agentId: "acc_other" }, { id: "run_e", eventId: "evt_e", seq: 4, status: "running" });
    const lost = await takeRun(env.DB, flow, { id: null, error: "the step failed" });
    expect(lost.moved.map((r) => [r.id, r.status, r.error])).toEqual([["run_d", "failed", "the step failed"]]);
    expect(lost.run).toBeNull();
    const other = await takeRun(env.DB, { ...flow, agentId: "acc_other" }, null);
    expect(other.run).toMatchObject({ id: "run_e", status: "running" });
  });

  it("the consumer leaves out triggers whose runs have all begun, and dispatches those with runs still queued", async () => {
    const org = await createOrg();
    const flow = (agentId: string) => ({ orgId: org.orgId, conversationId: "conv_seen", agentId });
    await insertRun(flow("acc_1"), { id: "run_1", eventId: "evt_done", seq: 1, status: "completed" });
    await insertRun(flow("acc_2"), { id: "run_2", eventId: "evt_done", seq: 1, status: "running" });
    await insertRun(flow("acc_1"), { id: "run_3", eventId: "evt_half", seq: 2, status: "running" });
    await insertRun(flow("acc_2"), { id: "run_4", eventId: "evt_half", seq: 2, status: "queued" });
    const body = (id: string, agents?: string[]) => ({
      event: { id, type: "conversation.message_posted" } as ParleyEvent,
      ...(agents ? { agents } : {}),
    });
    const bodies = [
      body("evt_done", ["acc_1", "acc_2"]),
      body("evt_half", ["acc_1", "acc_2"]),
      body("evt_none", ["acc_1"]),
      body("evt_old"),
    ];
    const results = await env.DB.batch(dispatchedStatements(env.DB, bodies));
    expect(dispatchedOf(results)).toEqual(new Set(["evt_done"]));
    // A message no agent may answer is no trigger: nothing to read.
    expect(dispatchedStatements(env.DB, [body("evt_done", [])])).toEqual([]);
  });
});
