import { describe, expect, it } from "vitest";
import {
  isTopic,
  isTopicError,
  parseTopicPattern,
  recoverableConversation,
  streamConversation,
  topicMatches,
  type TopicPattern,
} from "../../src/protocol/topics";

// Contract section 8, "Topics": exactly six dot-separated segments; a segment is [A-Za-z0-9_-]+ or `*` (one whole
// segment); a trailing `>` matches one or more remaining segments; the org segment is the credential's own org
// (never `*`); anything else is refused (BAD_REQUEST when malformed, FORBIDDEN for another org).

const ORG = "org_01hzy3k4m5n6p7q8r9s0t1v2w3";
const OTHER = "org_01hzy3k4m5n6p7q8r9s0t1v2zz";
const CONV = "conv_01hzy3k4m5n6p7q8r9s0t1v2w3abcdefghij";
const posted = (org = ORG, conv = CONV) => `events.${org}.conversations.conversation.message_posted.${conv}`;

/** Parses a pattern that must be accepted. */
function accepted(pattern: string, org = ORG): TopicPattern {
  const parsed = parseTopicPattern(pattern, org);
  if (isTopicError(parsed)) throw new Error(`'${pattern}' was refused: ${parsed.code} ${parsed.message}`);
  expect(parsed.source).toBe(pattern);
  return parsed;
}

/** Asserts a pattern is refused with this code and a message. */
function refused(pattern: unknown, code: "BAD_REQUEST" | "FORBIDDEN", org = ORG) {
  const parsed = parseTopicPattern(pattern, org);
  expect(isTopicError(parsed), `${JSON.stringify(pattern)} should be refused`).toBe(true);
  if (!isTopicError(parsed)) return;
  expect(parsed.code, `${JSON.stringify(pattern)}: ${parsed.message}`).toBe(code);
  expect(parsed.message.length).toBeGreaterThan(0);
}

const matches = (pattern: string, topic: string) => topicMatches(accepted(pattern), topic);

describe("parseTopicPattern: segments", () => {
  it("accepts exactly six literal segments", () => {
    const pattern = accepted(posted());
    expect(pattern.tail).toBe(false);
  });

  it("refuses fewer or more than six segments without a trailing '>'", () => {
    refused(`events.${ORG}`, "BAD_REQUEST");
    refused(`events.${ORG}.conversations`, "BAD_REQUEST");
    refused(`events.${ORG}.conversations.conversation`, "BAD_REQUEST");
    refused(`events.${ORG}.conversations.conversation.message_posted`, "BAD_REQUEST");
    refused(`${posted()}.extra`, "BAD_REQUEST");
    refused(`${posted()}.extra.more`, "BAD_REQUEST");
    refused("events", "BAD_REQUEST");
  });

  it("accepts every character of the segment charset [A-Za-z0-9_-]", () => {
    accepted(`events.${ORG}.ABCxyz.0123456789.a_b-c.-_-`);
    accepted(`events.${ORG}.a.b.c.d`);
    accepted(`events.${ORG}.A.Z.z.9`);
  });

  it.each([
    ["a space", "conv 1"],
    ["a colon", "conv:1"],
    ["a slash", "conv/1"],
    ["a plus", "conv+1"],
    ["a hash", "conv#1"],
    ["a dollar", "conv$"],
    ["a question mark", "conv?"],
    ["a non-ASCII letter", "convé"],
    ["an emoji", "conv😀"],
    ["a trailing newline", "conv\n"],
    ["a leading newline", "\nconv"],
    ["a tab", "co\tnv"],
    ["a percent-encoded dot", "conv%2E1"],
    ["a NUL", "conv\u0000"],
    ["a '>' inside a segment", "conv>"],
    ["a '*' inside a segment", "c*v"],
  ])("refuses a segment with %s", (_, segment) => {
    refused(`events.${ORG}.conversations.conversation.message_posted.${segment}`, "BAD_REQUEST");
    refused(`events.${ORG}.${segment}.conversation.message_posted.${CONV}`, "BAD_REQUEST");
  });

  it("refuses empty segments anywhere", () => {
    refused(`events.${ORG}..conversation.message_posted.${CONV}`, "BAD_REQUEST");
    refused(`events.${ORG}.conversations.conversation.message_posted.`, "BAD_REQUEST");
    refused(`.events.${ORG}.conversations.conversation.message_posted`, "BAD_REQUEST");
    refused(`events..conversations.conversation.message_posted.${CONV}`, "BAD_REQUEST");
    refused(`events.${ORG}.conversations.conversation..${CONV}`, "BAD_REQUEST");
    refused(`events.${ORG}.....`, "BAD_REQUEST");
    refused(`events.${ORG}..>`, "BAD_REQUEST");
    refused(".....", "BAD_REQUEST");
  });

  it("refuses values that are not a non-empty string", () => {
    refused("", "BAD_REQUEST");
    refused(undefined, "BAD_REQUEST");
    refused(null, "BAD_REQUEST");
    refused(42, "BAD_REQUEST");
    refused({ topic: posted() }, "BAD_REQUEST");
    refused([posted()], "BAD_REQUEST");
  });

  it("limits the length: 512 characters are accepted, 513 refused", () => {
    const prefix = `events.${ORG}.conversations.conversation.message_posted.`;
    const longest = prefix + "x".repeat(512 - prefix.length);
    expect(longest.length).toBe(512);
    accepted(longest);
    refused(`${longest}x`, "BAD_REQUEST");
    refused(`events.${ORG}.>`.padEnd(10_000, "x"), "BAD_REQUEST");
  });
});

describe("parseTopicPattern: the first segment and the org", () => {
  it("requires the first segment to be 'events'", () => {
    refused(`event.${ORG}.conversations.conversation.message_posted.${CONV}`, "BAD_REQUEST");
    refused(`Events.${ORG}.conversations.conversation.message_posted.${CONV}`, "BAD_REQUEST");
    refused(`eventsx.${ORG}.conversations.conversation.message_posted.${CONV}`, "BAD_REQUEST");
    refused(`*.${ORG}.conversations.conversation.message_posted.${CONV}`, "BAD_REQUEST");
    refused(`>`, "BAD_REQUEST");
    refused(`*.${ORG}.>`, "BAD_REQUEST");
  });

  it("refuses another org with FORBIDDEN, for literal and wildcard patterns", () => {
    refused(posted(OTHER), "FORBIDDEN");
    refused(`events.${OTHER}.>`, "FORBIDDEN");
    refused(`events.${OTHER}.*.*.*.*`, "FORBIDDEN");
    // org ids are case-sensitive: another spelling is another org
    refused(posted(ORG.toUpperCase()), "FORBIDDEN");
    // a pattern for an org that is a prefix of the credential's own
    refused(posted(ORG.slice(0, -1)), "FORBIDDEN");
  });

  it("never accepts '*' or '>' in place of the org", () => {
    for (const pattern of [
      `events.*.conversations.conversation.message_posted.${CONV}`,
      "events.*.>",
      "events.*.*.*.*.*",
      "events.>",
    ]) {
      const parsed = parseTopicPattern(pattern, ORG);
      expect(isTopicError(parsed), pattern).toBe(true);
      if (isTopicError(parsed)) expect(["FORBIDDEN", "BAD_REQUEST"]).toContain(parsed.code);
    }
  });

  it("answers the same pattern for the credential's own org", () => {
    accepted(posted(ORG), ORG);
    refused(posted(ORG), "FORBIDDEN", OTHER);
  });
});

describe("parseTopicPattern and topicMatches: '*'", () => {
  it("matches any one whole segment", () => {
    const topic = posted();
    expect(matches(`events.${ORG}.conversations.conversation.message_posted.*`, topic)).toBe(true);
    expect(matches(`events.${ORG}.*.conversation.message_posted.${CONV}`, topic)).toBe(true);
    expect(matches(`events.${ORG}.*.*.*.*`, topic)).toBe(true);
    expect(matches(`events.${ORG}.conversations.*.*.${CONV}`, topic)).toBe(true);
    expect(matches(`events.${ORG}.conversations.conversation.message_posted.*`, posted(ORG, "conv_other"))).toBe(true);
  });

  it("does not match when a literal segment differs", () => {
    const topic = posted();
    expect(matches(`events.${ORG}.conversations.conversation.created.*`, topic)).toBe(false);
    expect(matches(`events.${ORG}.flows.*.*.*`, topic)).toBe(false);
    expect(matches(`events.${ORG}.*.room.*.*`, topic)).toBe(false);
    expect(matches(`events.${ORG}.*.*.*.conv_other`, topic)).toBe(false);
    // literal matching is exact and case-sensitive
    expect(matches(`events.${ORG}.conversations.conversation.Message_posted.*`, topic)).toBe(false);
    expect(matches(`events.${ORG}.conversations.conversation.message_post.*`, topic)).toBe(false);
  });

  it("is one whole segment: partial wildcards like 'conv*' or '*_posted' are refused", () => {
    refused(`events.${ORG}.conversations.conversation.message_posted.conv*`, "BAD_REQUEST");
    refused(`events.${ORG}.conversations.conversation.*_posted.*`, "BAD_REQUEST");
    refused(`events.${ORG}.conv*.conversation.message_posted.*`, "BAD_REQUEST");
    refused(`events.${ORG}.**.conversation.message_posted.*`, "BAD_REQUEST");
    refused(`events.${ORG}.conversations.conversation.message_posted.*.*`, "BAD_REQUEST");
  });

  it("never spans more or fewer segments", () => {
    // five wildcarded segments after the org is seven segments: refused, never a silent "matches nothing"
    refused(`events.${ORG}.*.*.*.*.*`, "BAD_REQUEST");
    refused(`events.${ORG}.*.*.*`, "BAD_REQUEST");
    const pattern = accepted(`events.${ORG}.*.*.*.*`);
    expect(topicMatches(pattern, `events.${ORG}.a.b.c`)).toBe(false);
    expect(topicMatches(pattern, `events.${ORG}.a.b.c.d.e`)).toBe(false);
    expect(topicMatches(pattern, `events.${ORG}.a.b.c.d`)).toBe(true);
  });

  it("does not match another org's topic even when everything else is a wildcard", () => {
    expect(matches(`events.${ORG}.*.*.*.*`, posted(OTHER))).toBe(false);
  });
});

describe("parseTopicPattern and topicMatches: trailing '>'", () => {
  it("'events.{org}.>' matches every topic of the org, and no other org's", () => {
    const pattern = accepted(`events.${ORG}.>`);
    expect(pattern.tail).toBe(true);
    expect(topicMatches(pattern, posted())).toBe(true);
    expect(topicMatches(pattern, `events.${ORG}.flows.flow.run.run_1`)).toBe(true);
    expect(topicMatches(pattern, `events.${ORG}.notifications.notification.created.acc_1`)).toBe(true);
    expect(topicMatches(pattern, posted(OTHER))).toBe(false);
    expect(topicMatches(pattern, `other.${ORG}.a.b.c.d`)).toBe(false);
  });

  it("matches one or more remaining segments at every depth", () => {
    const topic = posted();
    expect(matches(`events.${ORG}.conversations.>`, topic)).toBe(true);
    expect(matches(`events.${ORG}.conversations.conversation.>`, topic)).toBe(true);
    expect(matches(`events.${ORG}.conversations.conversation.message_posted.>`, topic)).toBe(true);
    expect(matches(`events.${ORG}.*.conversation.>`, topic)).toBe(true);
    expect(matches(`events.${ORG}.*.*.*.>`, topic)).toBe(true);
  });

  it("does not match when a segment before it differs", () => {
    const topic = posted();
    expect(matches(`events.${ORG}.flows.>`, topic)).toBe(false);
    expect(matches(`events.${ORG}.conversations.room.>`, topic)).toBe(false);
    expect(matches(`events.${ORG}.conversations.conversation.created.>`, topic)).toBe(false);
    expect(matches(`events.${ORG}.*.room.>`, topic)).toBe(false);
  });

  it("does not match zero segments: a '>' after all six segments is refused, and a prefix topic never matches", () => {
    refused(`${posted()}.>`, "BAD_REQUEST");
    refused(`events.${ORG}.*.*.*.*.>`, "BAD_REQUEST");
    const pattern = accepted(`events.${ORG}.conversations.conversation.message_posted.>`);
    expect(topicMatches(pattern, `events.${ORG}.conversations.conversation.message_posted`)).toBe(false);
    expect(topicMatches(pattern, `events.${ORG}.conversations.conversation.message_posted.a.b`)).toBe(false);
  });

  it("only trails: '>' in the middle or first is refused", () => {
    refused(`events.${ORG}.>.conversation.message_posted.${CONV}`, "BAD_REQUEST");
    refused(`events.${ORG}.conversations.>.message_posted.${CONV}`, "BAD_REQUEST");
    refused(`events.${ORG}.conversations.conversation.message_posted.>.>`, "BAD_REQUEST");
    refused(`events.${ORG}.>.>`, "BAD_REQUEST");
    refused(`events.>.conversations.conversation.message_posted.${CONV}`, "BAD_REQUEST");
    refused(`>.${ORG}.conversations.conversation.message_posted.${CONV}`, "BAD_REQUEST");
  });

  it("needs the org before it: 'events.>' and '>' are refused", () => {
    expect(isTopicError(parseTopicPattern("events.>", ORG))).toBe(true);
    expect(isTopicError(parseTopicPattern(">", ORG))).toBe(true);
  });
});

describe("topicMatches: concrete topics", () => {
  it("a literal pattern matches only its own topic", () => {
    const pattern = accepted(posted());
    expect(topicMatches(pattern, posted())).toBe(true);
    expect(topicMatches(pattern, posted(ORG, `${CONV}x`))).toBe(false);
    expect(topicMatches(pattern, posted(ORG, CONV.slice(0, -1)))).toBe(false);
    expect(topicMatches(pattern, `${posted()}.x`)).toBe(false);
    expect(topicMatches(pattern, posted().toUpperCase())).toBe(false);
  });

  it("isTopic accepts only six literal segments", () => {
    expect(isTopic(posted())).toBe(true);
    expect(isTopic(`events.${ORG}.conversations.conversation.message_posted.*`)).toBe(false);
    expect(isTopic(`events.${ORG}.>`)).toBe(false);
    expect(isTopic(`events.${ORG}.a.b.c`)).toBe(false);
    expect(isTopic(`events.${ORG}.a.b.c.`)).toBe(false);
    expect(isTopic(`events.${ORG}.a.b.c.d.e`)).toBe(false);
  });
});

describe("recoverableConversation", () => {
  it("answers the conversation of exactly one conversation's message_posted topic", () => {
    expect(recoverableConversation(accepted(posted()))).toBe(CONV);
  });

  it.each([
    ["a wildcard conversation", `events.${ORG}.conversations.conversation.message_posted.*`],
    ["a wildcard source", `events.${ORG}.*.conversation.message_posted.${CONV}`],
    ["a wildcard resource", `events.${ORG}.conversations.*.message_posted.${CONV}`],
    ["a wildcard event", `events.${ORG}.conversations.conversation.*.${CONV}`],
    ["a trailing '>'", `events.${ORG}.conversations.conversation.message_posted.>`],
    ["the org-wide '>'", `events.${ORG}.>`],
    ["another event", `events.${ORG}.conversations.conversation.created.${CONV}`],
    ["typing", `events.${ORG}.conversations.conversation.typing.${CONV}`],
    ["a stream", `events.${ORG}.conversations.conversation.message_stream.${CONV}`],
    ["another resource", `events.${ORG}.conversations.room.message_posted.${CONV}`],
    ["another source", `events.${ORG}.flows.conversation.message_posted.${CONV}`],
  ])("answers null for %s", (_, pattern) => {
    expect(recoverableConversation(accepted(pattern))).toBeNull();
  });
});

describe("streamConversation", () => {
  const parse = (topic: string) => parseTopicPattern(topic, "org_1") as TopicPattern;
  it("names the conversation of patterns that can match its message_stream events", () => {
    const conv = "conv_0123456789abcdefghjkmnpqrstvwxyz0123";
    expect(streamConversation(parse(`events.org_1.conversations.conversation.message_stream.${conv}`))).toBe(conv);
    expect(streamConversation(parse(`events.org_1.*.*.*.${conv}`))).toBe(conv);
    expect(streamConversation(parse(`events.org_1.conversations.conversation.message_posted.${conv}`))).toBeNull();
    expect(streamConversation(parse("events.org_1.conversations.conversation.message_stream.*"))).toBeNull();
    expect(streamConversation(parse("events.org_1.conversations.>"))).toBeNull();
    expect(streamConversation(parse(`events.org_1.flows.flow.run.${conv}`))).toBeNull();
  });
});
