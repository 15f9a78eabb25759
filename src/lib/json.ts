/** A `\uD800`-`\uDFFF` escape: JSON text may spell a lone UTF-16 surrogate this way. */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;
/** How deep `wellFormed` walks: deeper values are refused by validation anyway (`JSON_DEPTH_LIMIT`). */
const WALK_DEPTH = 100;

/**
 * Parses client JSON (a request body, a socket frame). Any lone UTF-16 surrogate in its strings and keys becomes
 * U+FFFD, as a WebIDL USVString does: text is stored as UTF-8, which cannot hold one, so the answer to a post is then
 * what every later read gives. Only text that spells a surrogate escape is walked.
 */
export function parseClientJson(text: string): unknown {
  const value: unknown = JSON.parse(text);
  return SURROGATE_ESCAPE.test(text) ? wellFormed(value, WALK_DEPTH) : value;
}

function wellFormed(value: unknown, depth: number): unknown {
  if (typeof value === "string") return value.toWellFormed();
  if (typeof value !== "object" || value === null || depth === 0) return value;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = wellFormed(value[i], depth - 1);
    return value;
  }
  const object = value as Record<string, unknown>;
  for (const key of Object.keys(object)) {
    const item = wellFormed(object[key], depth - 1);
    const fixed = key.toWellFormed();
    if (fixed !== key) delete object[key];
    // Defined, not assigned: a key named `__proto__` stays an ordinary key.
    Object.defineProperty(object, fixed, { value: item, enumerable: true, writable: true, configurable: true });
  }
  return object;
}

/** Whether a value is a JSON object: an object that is neither null nor an array. */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
