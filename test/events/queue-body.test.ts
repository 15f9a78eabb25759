import { describe, expect, it } from "vitest";
import { random } from "../helpers/random";
import { isQueueBody, QueueBodySchema } from "../../src/events/queue";

/**
 * Values each part of a queue body takes in the comparison: those the hand-written check may take, then the others
 * (wrong types, missing keys, values zod refuses).
 */
const ABSENT = Symbol("absent");
const event = {
  id: "evt_1",
  type: "conversation.message_posted",
  topic: "events.org_1.conversations.conversation.message_posted.conv_1",
  orgId: "org_1",
  source: "conversations",
  resource: "conversation",
  event: "message_posted",
  resourceId: "conv_1",
  occurredAt: "2026-12-07T00:00:00.000Z",
  data: { seq: 1 },
};
const VARIANTS: Record<string, [unknown[], unknown[]]> = {
  event: [
    [event, { ...event, source: "flows", data: null }, { ...event, data: undefined }],
    [
      ABSENT,
      null,
      [event],
      { ...event, source: "elsewhere" },
      { ...event, id: 1 },
      { ...event, topic: undefined },
      { ...event, occurredAt: null },
    ],
  ],
  room: [
    [ABSENT, { room: { id: "room_1", orgId: "org_1", name: "x" }, dmKey: null, version: 2 }],
    [
      null,
      { room: { id: "room_1" }, dmKey: null, version: 2 },
      { room: { id: "room_1", orgId: "org_1" }, dmKey: 5, version: 2 },
      { room: { id: "room_1", orgId: "org_1" }, dmKey: "k", version: "2" },
      { room: [], dmKey: null, version: 1 },
    ],
  ],
  conversation: [
    [ABSENT, { conversation: { id: "conv_1", orgId: "org_1", roomId: "room_1", more: 1 }, version: 3, deleted: false }],
    [
      null,
      { conversation: { id: "conv_1", orgId: "org_1" }, version: 3, deleted: false },
      { conversation: { id: "conv_1", orgId: "org_1", roomId: "room_1" }, version: 3, deleted: "no" },
      { conversation: { id: "conv_1", orgId: "org_1", roomId: "room_1" }, deleted: true },
    ],
  ],
  agents: [
    [ABSENT, [], ["acc_1", "acc_2"]],
    [null, "acc_1", [1], Array.from({ length: 1001 }, () => "acc_1")],
  ],
  textOmitted: [
    [ABSENT, true],
    [false, "true", null],
  ],
  participantsOmitted: [
    [ABSENT, true],
    [false, 1],
  ],
};

describe("isQueueBody", () => {
  it("never takes a body the zod schema refuses, and takes the bodies rooms write", () => {
    const next = random(7);
    let taken = 0;
    for (let i = 0; i < 3_000; i++) {
      const body: Record<string, unknown> = {};
      for (const [key, [fast, other]] of Object.entries(VARIANTS)) {
        const values = next() < 0.85 ? fast : other;
        const value = values[Math.floor(next() * values.length)];
        if (value !== ABSENT) body[key] = value;
      }
      // As the consumer has it: parsed from the queue's text.
      const parsed = JSON.parse(JSON.stringify(body));
      const zod = QueueBodySchema.safeParse(parsed).success;
      const fast = isQueueBody(parsed);
      if (fast) expect(zod, JSON.stringify(parsed).slice(0, 300)).toBe(true);
      if (fast) taken++;
    }
    // Both answers were compared on many bodies, and the hand-written check took most of those zod takes.
    expect(taken).toBeGreaterThan(600);
    for (const value of [null, [], "body", 3, {}]) expect(isQueueBody(value)).toBe(false);
  });
});
