import { describe, expect, it } from "vitest";
import { numberSetting } from "../../src/lib/settings";

describe("numberSetting", () => {
  it("reads a number of at least `least`, and falls back for anything else", () => {
    expect(numberSetting("900", 60)).toBe(900);
    expect(numberSetting("0", 60)).toBe(0);
    expect(numberSetting(" 2.5 ", 60)).toBe(2.5);
    for (const value of [undefined, "", "  ", "soon", "-1", "Infinity", "NaN"])
      expect(numberSetting(value, 60)).toBe(60);
    // A limit that must be more than 0.
    expect(numberSetting("0", 120_000, Number.MIN_VALUE)).toBe(120_000);
    expect(numberSetting("1500", 120_000, Number.MIN_VALUE)).toBe(1500);
  });
});
