/** What a template may refer to: the event, and the recipient. */
export interface TemplateContext {
  event: unknown;
  recipient: { id: string; name: string };
}

/** Longest rendered title and body, in characters. */
export const RENDERED_LIMITS = { title: 200, body: 2000 } as const;

const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;

/**
 * Renders `{{event.data.text}}`-style placeholders as plain text: strings as they are, numbers and booleans as text,
 * objects as JSON, missing fields as nothing. The result is text, not markup: each channel escapes it for itself
 * (HTML for email bodies, header-safe subjects, JSON for push and WebSocket).
 */
export function renderTemplate(template: string, context: TemplateContext): string {
  return template.replace(PLACEHOLDER, (_match, path: string) => stringify(lookup(context, path)));
}

/** The rendered title (one line) and body of a notification, cut to their limits. */
export function renderNotification(template: { title: string; body: string }, context: TemplateContext) {
  const title = renderTemplate(template.title, context)
    .replace(/[\u0000-\u001f\u007f\u2028\u2029]+/g, " ")
    .trim();
  const body = renderTemplate(template.body, context).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, "");
  return {
    title: truncate(title || "Notification", RENDERED_LIMITS.title),
    body: truncate(body, RENDERED_LIMITS.body),
  };
}

function lookup(context: TemplateContext, path: string): unknown {
  let value: unknown = context;
  for (const key of path.split(".")) {
    if (value === null || typeof value !== "object" || !Object.hasOwn(value, key)) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function stringify(value: unknown): string {
  if (value === undefined || value === null) return "";
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return JSON.stringify(value);
}

/** Cuts text to at most `max` characters (code points), marking the cut with an ellipsis. */
export function truncate(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join("")}…`;
}
