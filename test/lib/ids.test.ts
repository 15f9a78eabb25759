import { describe, expect, it } from "vitest";
import { idPattern, newId, ulidBody } from "../../src/lib/ids";
import { newConversationId, roomIdOfConversation } from "../../src/room/client";

describe("ids", () => {
  it("are unique and valid across many ids drawn from the random pool, also within one millisecond", () => {
    const now = Date.now();
    const bodies = Array.from({ length: 1_000 }, () => ulidBody(now));
    expect(new Set(bodies).size).toBe(bodies.length);
    for (const body of bodies) expect(body).toMatch(/^[0-9a-z]{26}$/);
    // The same millisecond shares the time part; the rest is one more each time, so they sort as they were made.
    expect(new Set(bodies.map((b) => b.slice(0, 10))).size).toBe(1);
    expect([...bodies].sort()).toEqual(bodies);
    const ids = Array.from({ length: 200 }, () => newId("msg"));
    for (const id of ids) expect(id).toMatch(idPattern("msg"));
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("of conversations differ within one millisecond (their random part is their own)", () => {
    const room = newId("room");
    const conversations = Array.from({ length: 1_000 }, () => newConversationId(room));
    expect(new Set(conversations).size).toBe(conversations.length);
    for (const id of conversations) expect(roomIdOfConversation(id)).toBe(room);
  });

  it("sort by their millisecond", () => {
    const earlier = ulidBody(1_700_000_000_000);
    const later = ulidBody(1_700_000_000_001);
    const muchLater = ulidBody(1_800_000_000_000);
    expect([muchLater, later, earlier].sort()).toEqual([earlier, later, muchLater]);
    expect(earlier.slice(0, 10)).not.toBe(later.slice(0, 10));
  });
});
