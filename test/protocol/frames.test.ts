import { describe, expect, it } from "vitest";
import { random } from "../helpers/random";
import { ClientFrameSchema, fastMessagePost, parseClientFrame } from "../../src/protocol/frames";

/**
 * Values each field of a `message.post` frame takes in the comparison: those the fast path may take, then the others
 * (at and beyond limits, wrong types, keys it leaves to zod).
 */
const ABSENT = Symbol("absent");
const VARIANTS: Record<string, [unknown[], unknown[]]> = {
  type: [["message.post"], ["typing", "Message.post", 1]],
  id: [
    [ABSENT, "a", "f".repeat(64)],
    ["", "f".repeat(65), 5, null],
  ],
  conversationId: [
    ["conv_1", "c".repeat(100)],
    [ABSENT, "", "c".repeat(101), ["conv_1"]],
  ],
  text: [
    ["hi", "t".repeat(32_768), "😀".repeat(16_384)],
    [ABSENT, "", "t".repeat(32_769), "😀".repeat(16_385), 3, null],
  ],
  clientMessageId: [
    [ABSENT, "m1", "m".repeat(128)],
    ["", "m".repeat(129), null, "run_01jd0000000000000000000000.1"],
  ],
  authorId: [
    [ABSENT, "acc_01jd0000000000000000000000"],
    ["acc_short", "usr_01jd0000000000000000000000", 7, ""],
  ],
  extra: [[ABSENT], [{ data: { a: 1 } }, { attachmentIds: ["att_01jd0000000000000000000000"] }, { other: "x" }]],
};

function frameOf(choice: Record<string, unknown>): unknown {
  const frame: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(choice)) {
    if (value === ABSENT) continue;
    if (key === "extra") Object.assign(frame, value);
    else frame[key] = value;
  }
  // As a socket has it: parsed from its text.
  return JSON.parse(JSON.stringify(frame));
}

describe("parseClientFrame", () => {
  it("answers exactly what the zod schema answers, for valid and invalid message.post frames alike", () => {
    const next = random(42);
    let fast = 0;
    for (let i = 0; i < 3_000; i++) {
      // Each field is one the fast path may take four times in five, so both paths see many frames.
      const choice = Object.fromEntries(
        Object.entries(VARIANTS).map(([key, [fast, other]]) => {
          const values = next() < 0.8 ? fast : other;
          return [key, values[Math.floor(next() * values.length)]];
        }),
      );
      const frame = frameOf(choice);
      const expected = ClientFrameSchema.safeParse(frame);
      const actual = parseClientFrame(frame);
      expect(actual.success, JSON.stringify(frame).slice(0, 300)).toBe(expected.success);
      if (expected.success) expect(actual.data).toStrictEqual(expected.data);
      else expect(actual.error!.issues).toStrictEqual(expected.error.issues);
      if (fastMessagePost(frame)) fast++;
    }
    // Both paths were compared: the fast one took a share of the frames.
    expect(fast).toBeGreaterThan(300);
  });

  it("takes the common frame fast and strips nothing it should keep", () => {
    const frame = { type: "message.post", id: "p1", conversationId: "conv_1", text: "hello", clientMessageId: "c1" };
    expect(fastMessagePost(frame)).toStrictEqual(frame);
    // A frame with a key the fast path does not know goes to zod, which drops the key.
    const extra = { ...frame, extra: true };
    expect(fastMessagePost(extra)).toBeNull();
    expect(parseClientFrame(extra)).toStrictEqual({ success: true, data: frame });
    // The prototype is a key like any other in parsed JSON: it never reaches the fast path's result.
    const proto = JSON.parse('{"type":"message.post","conversationId":"conv_1","text":"x","__proto__":{"a":1}}');
    expect(fastMessagePost(proto)).toBeNull();
  });
});
