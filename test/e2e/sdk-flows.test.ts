import { afterEach, describe, expect, it } from "vitest";
import { RealtimeClient, realtimeUrl, topicOf, type MessageStream, type ParleyEvent } from "../../src/sdk";
import { baseUrl, createOrg, eventually } from "./helpers";

// Agents against `npm run dev`: the default `local:echo` model works with no account and no network.

const clients: RealtimeClient[] = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

describe("agents under npm run dev", () => {
  it("an agent in a room streams its reply to an org socket, posts it, and records the run", async () => {
    const { org, apiKey, client } = await createOrg();
    const user = await client.accounts.create({ type: "user", name: "Uma" });
    const agent = await client.accounts.create({
      type: "agent",
      name: "Echo",
      agent: { flow: { onStart: [{ type: "reply", text: "Welcome!" }], onMessage: [{ type: "assistant" }] } },
    });
    const room = await client.rooms.create({
      type: "standard",
      participants: [{ accountId: user.id }, { accountId: agent.id }],
    });
    const realtime = new RealtimeClient({ url: realtimeUrl(baseUrl), token: apiKey });
    clients.push(realtime);
    const events: ParleyEvent[] = [];
    realtime.on("event", (event) => events.push(event));
    await realtime.subscribe(`events.${org.id}.conversations.conversation.*.*`);

    const conversation = await client.conversations.create(room.id, { name: "Help" });
    await eventually(async () => (await client.messages.list(conversation.id)).items.length === 1, 30_000);
    await client.messages.post(conversation.id, { text: "hello there", authorId: user.id });
    const history = await eventually(async () => {
      const page = await client.messages.list(conversation.id);
      return page.items.length === 3 ? page.items : null;
    }, 30_000);
    expect(history.map((m) => [m.authorId, m.type, m.text])).toEqual([
      [agent.id, "bot", "Welcome!"],
      [user.id, "user", "hello there"],
      [agent.id, "bot", "Echo: hello there"],
    ]);

    const streamTopic = topicOf(org.id, "conversation", "message_stream", conversation.id);
    await eventually(() => events.some((e) => e.topic === streamTopic && (e.data as MessageStream).done), 10_000);
    const stream = events.filter((e) => e.topic === streamTopic).map((e) => e.data as MessageStream);
    expect(stream.map((d) => d.index)).toEqual(stream.map((_, i) => i));
    expect(stream.at(-1)).toMatchObject({ done: true, text: "Echo: hello there", messageId: history[2].id });

    const runs = await eventually(async () => {
      const page = await client.flowRuns.list({ conversationId: conversation.id });
      return page.items.length === 2 && page.items.every((r) => r.status === "completed") ? page.items : null;
    }, 30_000);
    expect(runs.map((r) => r.trigger).sort()).toEqual(["message", "start"]);
  });
});
