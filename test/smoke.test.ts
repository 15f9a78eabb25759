import { describe, expect, it } from "vitest";
import { call, createFixture, post } from "./helpers/api";

describe("smoke", () => {
  it("creates an org, room, conversation and posts", async () => {
    const f = await createFixture();
    const r = await post(f.apiKey, f.conversation.id, { text: "hi", authorId: f.alice.id });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.seq).toBe(1);
    const h = await call("GET", `/v1/conversations/${f.conversation.id}/messages`, { token: f.apiKey });
    expect(h.body.items.map((m: any) => m.text)).toEqual(["hi"]);
  });
});
