import { WorkerMailer } from "worker-mailer";
import type { Priority } from "../protocol/notifications";

/** SMTP settings from `SMTP_*`. */
export interface SmtpConfig {
  host: string;
  port: number;
  user?: string;
  password?: string;
  from: { name?: string; email: string };
}

/** What one email became: sent, transient (retry: connection problems, 4xx replies) or permanent (5xx replies). */
export type EmailOutcome =
  { kind: "sent" } | { kind: "transient"; error: string } | { kind: "permanent"; error: string };

/** An email to send: the notification's rendered title and body. */
export interface EmailMessage {
  to: { email: string; name?: string };
  title: string;
  body: string;
  priority: Priority;
  notificationId: string;
}

const ADDRESS = /^[^\s@<>()",;:\\[\]]+@[^\s@<>()",;:\\[\]]+\.[^\s@<>()",;:\\[\]]+$/;

/** The SMTP configuration, or null when `SMTP_HOST` or `SMTP_FROM` is missing or malformed. */
export function smtpConfig(env: {
  SMTP_HOST?: string;
  SMTP_PORT?: string;
  SMTP_USER?: string;
  SMTP_PASSWORD?: string;
  SMTP_FROM?: string;
}): SmtpConfig | null {
  const host = env.SMTP_HOST?.trim();
  const from = parseFrom(env.SMTP_FROM ?? "");
  if (!host || !from) return null;
  const port = Number(env.SMTP_PORT || 587);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return null;
  return {
    host,
    port,
    ...(env.SMTP_USER ? { user: env.SMTP_USER, password: env.SMTP_PASSWORD ?? "" } : {}),
    from,
  };
}

/** `SMTP_FROM` as `addr@example.com` or `Name <addr@example.com>`. */
function parseFrom(value: string): SmtpConfig["from"] | null {
  const match = /^\s*(?:"?([^"<>]*?)"?\s*<([^<>]+)>|([^<>\s]+))\s*$/.exec(value);
  const email = (match?.[2] ?? match?.[3] ?? "").trim();
  if (!ADDRESS.test(email)) return null;
  const name = displayName(match?.[1] ?? "");
  return name ? { name, email } : { email };
}

/**
 * Text made safe for a header value: control characters (CR and LF above all, which would start a new header) become
 * spaces, and the text is cut so that even fully encoded (RFC 2047, up to 12 characters per character) its line stays
 * under SMTP's 998-octet limit.
 */
export function headerText(text: string, max = 200): string {
  const clean = text
    .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  let out = "";
  let encoded = 0;
  for (const char of [...clean].slice(0, max)) {
    encoded += char.charCodeAt(0) < 128 ? 3 : 3 * new TextEncoder().encode(char).byteLength;
    if (encoded > 900) break;
    out += char;
  }
  return out;
}

/** A display name for `"Name" <address>`: header-safe, without the quotes and backslashes that would end it. */
export function displayName(text: string): string {
  return headerText(text.replace(/["\\]/g, ""), 100);
}

/** Whether an address can go into an SMTP envelope and a header unchanged. */
export function isSafeAddress(email: string): boolean {
  return email.length <= 320 && ADDRESS.test(email);
}

/** Escapes text for HTML. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** The subject, plain text and HTML parts of a notification's email. */
export function emailContent(title: string, body: string) {
  const subject = headerText(title, 250) || "Notification";
  const html =
    `<!doctype html><html><body><h1 style="font-size:18px">${escapeHtml(title)}</h1>` +
    `<p>${escapeHtml(body).replace(/\r?\n/g, "<br>")}</p></body></html>`;
  return { subject, text: body ? `${title}\n\n${body}` : title, html };
}

/** Sends one email over SMTP (`cloudflare:sockets` through worker-mailer) and classifies what happened. */
export async function sendEmail(config: SmtpConfig, message: EmailMessage): Promise<EmailOutcome> {
  if (!isSafeAddress(message.to.email)) return { kind: "permanent", error: "the recipient's address is not valid" };
  const { subject, text, html } = emailContent(message.title, message.body);
  const name = message.to.name ? displayName(message.to.name) : "";
  let mailer: WorkerMailer;
  try {
    mailer = await WorkerMailer.connect({
      host: config.host,
      port: config.port,
      secure: config.port === 465,
      startTls: true,
      ...(config.user ? { credentials: { username: config.user, password: config.password ?? "" } } : {}),
      authType: ["plain", "login"],
      socketTimeoutMs: 15_000,
      responseTimeoutMs: 15_000,
      logLevel: 3,
    });
  } catch (error) {
    return classify(error);
  }
  try {
    await mailer.send({
      from: config.from,
      to: name ? { name, email: message.to.email } : message.to.email,
      subject,
      text,
      html,
      headers: {
        "Auto-Submitted": "auto-generated",
        "X-Parley-Notification": message.notificationId,
        ...(message.priority === "high" || message.priority === "critical"
          ? { Importance: "high", "X-Priority": "1" }
          : {}),
      },
    });
    return { kind: "sent" };
  } catch (error) {
    return classify(error);
  } finally {
    await mailer.close().catch(() => undefined);
  }
}

/** A 5xx SMTP reply is permanent; 4xx replies, timeouts and connection failures are worth retrying. */
function classify(error: unknown): EmailOutcome {
  const text = error instanceof Error ? error.message : String(error);
  const code = /(?:^|\s)([245])\d\d[\s-]/.exec(`${text} `)?.[1];
  return code === "5"
    ? { kind: "permanent", error: text.slice(0, 300) }
    : { kind: "transient", error: text.slice(0, 300) };
}
