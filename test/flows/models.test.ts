import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call } from "../helpers/api";
import { agentRoom, historyOf, runsOf, say, streamEvents } from "./helpers";

/** The chat requests the model server received whose prompt mentions `marker`. */
async function requestsWith(marker: string): Promise<any[]> {
  const response = await fetch(env.OPENAI_BASE_URL!.replace(/\/v1$/, "/requests"));
  const all = (await response.json()) as any[];
  return all.filter((r) => JSON.stringify(r.messages).includes(marker));
}

describe("assistant replies from an OpenAI-compatible server", () => {
  it("sends the instructions and the recent history with authors mapped to roles, and streams the answer", async () => {
    const marker = `m-${crypto.randomUUID()}`;
    const { apiKey, user, bot, socket, conversationId } = await agentRoom({
      instructions: "You are a helpful support agent.",
      model: "openai:echo",
      flow: { onMessage: [{ type: "assistant", instructions: "Answer briefly." }] },
    });
    await say(apiKey, conversationId, user.id, `first ${marker}`);
    await historyOf(apiKey, conversationId, 2);
    await say(apiKey, conversationId, user.id, `second ${marker}`);
    const history = await historyOf(apiKey, conversationId, 4);
    expect(history[1]).toMatchObject({ authorId: bot.id, type: "bot", text: `Model reply to: first ${marker}` });
    expect(history[3]).toMatchObject({ authorId: bot.id, type: "bot", text: `Model reply to: second ${marker}` });

    const requests = await requestsWith(`second ${marker}`);
    expect(requests).toHaveLength(1);
    expect(requests[0].model).toBe("echo");
    expect(requests[0].stream).toBe(true);
    expect(requests[0].messages).toEqual([
      { role: "system", content: "You are a helpful support agent.\n\nAnswer briefly." },
      { role: "user", content: `first ${marker}` },
      { role: "assistant", content: `Model reply to: first ${marker}` },
      { role: "user", content: `second ${marker}` },
    ]);
    await socket.waitLog((f) => f.type === "event" && f.event.data?.messageId === history[3].id);
    const second = streamEvents(socket).filter((d) => d.streamId === streamEvents(socket).at(-1).streamId);
    expect(second.map((d) => d.index)).toEqual(second.map((_, i) => i));
    socket.close();
  });

  it("reads a stream cut anywhere: CRLF lines, characters split across writes, no closing blank line or [DONE]", async () => {
    const { apiKey, user, bot, socket, conversationId } = await agentRoom({ model: "openai:ragged" });
    const question = "wie geht’s — ça va? 日本語のテキスト 🙂";
    await say(apiKey, conversationId, user.id, question);
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history[1]).toMatchObject({ authorId: bot.id, type: "bot", text: `Model reply to: ${question}` });
    const done = await socket.waitLog((f) => f.type === "event" && f.event.data?.done === true);
    expect(done.event.data).toMatchObject({ text: `Model reply to: ${question}`, messageId: history[1].id });
    socket.close();
  });

  it("takes the whole answer of a server that does not stream as one delta", async () => {
    const { apiKey, user, bot, socket, conversationId } = await agentRoom({ model: "openai:whole" });
    await say(apiKey, conversationId, user.id, "all at once");
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history[1]).toMatchObject({ authorId: bot.id, type: "bot", text: "Model reply to: all at once" });
    await socket.waitLog((f) => f.type === "event" && f.event.data?.done === true);
    const deltas = streamEvents(socket).filter((d) => !d.done);
    expect(deltas.map((d) => [d.index, d.delta])).toEqual([[0, "Model reply to: all at once"]]);
    socket.close();
  });

  it("a connection lost before the model answered is tried once more, and the reply is posted once", async () => {
    const marker = `drop-${crypto.randomUUID()}`;
    const { apiKey, user, bot, conversationId } = await agentRoom({ model: "openai:drop-once" });
    await say(apiKey, conversationId, user.id, marker);
    const history = await historyOf(apiKey, conversationId, 2);
    expect(history[1]).toMatchObject({ authorId: bot.id, type: "bot", text: `Model reply to: ${marker}` });
    // The dropped request and its retry reached the server; the run completed without a step retry.
    expect(await requestsWith(marker)).toHaveLength(2);
    const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "completed");
    expect(runs).toHaveLength(1);
  });

  for (const [model, error] of [
    ["openai:fail", /500/],
    ["openai:garbage", /./],
    ["openai:hang", /timed out/],
    ["openai:empty", /no text/],
    ["local:nonexistent", /unknown local model/],
    ["workers-ai:@cf/meta/llama-3.1-8b-instruct", /AI binding is not configured/],
  ] as const) {
    it(`a model that fails (${model}) ends the stream with an error, fails the run, and the next message is answered`, async () => {
      const { apiKey, user, bot, socket, conversationId } = await agentRoom({ model });
      await say(apiKey, conversationId, user.id, "hello?");
      const runs = await runsOf(apiKey, conversationId, (r) => r[0]?.status === "failed");
      expect(runs[0].error).toMatch(error);
      const done = await socket.waitLog((f) => f.type === "event" && f.event.data?.done === true);
      expect(done.event.data.error).toMatch(error);
      expect(done.event.data.messageId).toBeUndefined();
      if (model === "openai:fail") {
        // The provider's own words are for the run (the org's operators), not the room's clients.
        expect(runs[0].error).toBe("model answered 500: the model is down");
        expect(done.event.data.error).toBe("model answered 500");
      }
      // No bot message was posted, and the conversation keeps working: switch the agent to a working model.
      expect((await historyOf(apiKey, conversationId, 1)).length).toBe(1);
      const patched = await call("PATCH", `/v1/accounts/${bot.id}`, {
        token: apiKey,
        body: { agent: { model: "local:echo" } },
      });
      expect(patched.status).toBe(200);
      await say(apiKey, conversationId, user.id, "still there?");
      const history = await historyOf(apiKey, conversationId, 3);
      expect(history.map((m) => m.text)).toEqual(["hello?", "still there?", "Echo: still there?"]);
      await runsOf(apiKey, conversationId, (r) => r.length === 2 && r[1].status === "completed");
      socket.close();
    });
  }
});
