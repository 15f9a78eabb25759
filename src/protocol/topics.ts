/**
 * The topic grammar of the contract (section 8), shared by the hub, the rooms and the notification rules.
 *
 * A topic is `events.{orgId}.{source}.{resource}.{event}.{resourceId}`: exactly six dot-separated segments of
 * `[A-Za-z0-9_-]+`. A pattern may use `*` for one whole segment, and a trailing `>` for one or more remaining
 * segments. The first segment is `events`, and the org segment is always the credential's own org, never a wildcard.
 */

const SEGMENT = /^[A-Za-z0-9_-]+$/;
const SEGMENTS = 6;

/** A parsed subscription pattern. */
export interface TopicPattern {
  /** The pattern as given. */
  source: string;
  /** Each segment before any trailing `>`: a literal, or `*`. */
  segments: string[];
  /** Whether the pattern ends in `>`. */
  tail: boolean;
}

/** Why a pattern was refused; `code` maps to the error frame's code. */
export interface TopicError {
  code: "BAD_REQUEST" | "FORBIDDEN";
  message: string;
}

/**
 * Parses a subscription pattern for a credential of `orgId`. Answers the pattern, or the reason it is refused:
 * malformed patterns are `BAD_REQUEST`, another org (or a wildcard org) is `FORBIDDEN`.
 */
export function parseTopicPattern(pattern: unknown, orgId: string): TopicPattern | TopicError {
  if (typeof pattern !== "string" || pattern.length === 0 || pattern.length > 512) {
    return { code: "BAD_REQUEST", message: "topic must be a string of 1 to 512 characters" };
  }
  const segments = pattern.split(".");
  const tail = segments[segments.length - 1] === ">";
  const fixed = tail ? segments.slice(0, -1) : segments;
  if (tail ? fixed.length < 2 || fixed.length >= SEGMENTS : fixed.length !== SEGMENTS) {
    return {
      code: "BAD_REQUEST",
      message:
        "topic must have exactly six segments (events.{orgId}.{source}.{resource}.{event}.{resourceId}), or end in '>'",
    };
  }
  for (const segment of fixed) {
    if (segment !== "*" && !SEGMENT.test(segment)) {
      return {
        code: "BAD_REQUEST",
        message: `invalid topic segment '${segment}': use [A-Za-z0-9_-]+, '*' or a trailing '>'`,
      };
    }
  }
  if (fixed[0] !== "events") return { code: "BAD_REQUEST", message: "topic must start with 'events.'" };
  if (fixed[1] !== orgId) return { code: "FORBIDDEN", message: "topic must name the credential's own org" };
  return { source: pattern, segments: fixed, tail };
}

/** Whether a parse result is an error. */
export function isTopicError(value: TopicPattern | TopicError): value is TopicError {
  return "code" in value;
}

/** Whether a concrete topic matches a parsed pattern. */
export function topicMatches(pattern: TopicPattern, topic: string): boolean {
  return segmentsMatch(pattern, topic.split("."));
}

/** Whether a concrete topic, already split into its segments, matches a parsed pattern (for matching one event
 * against many patterns). */
export function segmentsMatch(pattern: TopicPattern, parts: string[]): boolean {
  if (parts.length !== SEGMENTS) return false;
  const { segments, tail } = pattern;
  if (tail ? parts.length <= segments.length : parts.length !== segments.length) return false;
  for (let i = 0; i < segments.length; i++) {
    if (segments[i] !== "*" && segments[i] !== parts[i]) return false;
  }
  return true;
}

/** Whether a string is a concrete topic (six literal segments). */
export function isTopic(topic: string): boolean {
  const parts = topic.split(".");
  return parts.length === SEGMENTS && parts.every((part) => SEGMENT.test(part));
}

/**
 * If a pattern names exactly one conversation's `message_posted` topic, that conversation's id: the only kind of
 * subscription that `sinceSeq` recovery applies to.
 */
export function recoverableConversation(pattern: TopicPattern): string | null {
  return pattern.tail ? null : recoverableConversationOf(pattern.segments.join("."));
}

/** The same for a topic string (clients use it to know which subscriptions they can recover). */
export function recoverableConversationOf(topic: string): string | null {
  const parts = topic.split(".");
  if (parts.length !== SEGMENTS || parts.includes("*") || parts.includes(">")) return null;
  const [, , source, resource, event, resourceId] = parts;
  return source === "conversations" && resource === "conversation" && event === "message_posted" ? resourceId : null;
}

/**
 * The conversation a pattern names, when its resource id segment is one conversation's id and it can match that
 * conversation's `message_stream` events (hubs send such subscriptions the streams in flight).
 */
export function streamConversation(pattern: TopicPattern): string | null {
  const resourceId = streamResource(pattern);
  return resourceId !== null && resourceId !== "*" && resourceId.startsWith("conv_") ? resourceId : null;
}

/** Whether a pattern can match `message_stream` events at all (of one conversation, or of any). */
export function matchesStreams(pattern: TopicPattern): boolean {
  return streamResource(pattern) !== null;
}

/** The resource id segment (a literal or `*`) of a pattern that can match `message_stream` events; else null. */
function streamResource(pattern: TopicPattern): string | null {
  const parts = [...pattern.segments];
  while (pattern.tail && parts.length < SEGMENTS) parts.push("*");
  const [, , source, resource, event, resourceId] = parts;
  const can = (segment: string, literal: string) => segment === "*" || segment === literal;
  if (!can(source, "conversations") || !can(resource, "conversation") || !can(event, "message_stream")) return null;
  return resourceId;
}
