import { numberSetting } from "../lib/settings";
import { sendSmtp, SmtpError } from "./smtp";
import type { Priority } from "../protocol/notifications";

/** SMTP settings from `SMTP_*`. */
export interface SmtpConfig {
  host: string;
  port: number;
  user?: string;
  password?: string;
  from: { name?: string; email: string };
  /** How long the connection and each reply may take (ms; `SMTP_TIMEOUT_MS`, default 15,000). */
  timeoutMs?: number;
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

const encoder = new TextEncoder();
const ADDRESS = /^[^\s@<>()",;:\\[\]]+@[^\s@<>()",;:\\[\]]+\.[^\s@<>()",;:\\[\]]+$/;

/** The SMTP configuration, or null when `SMTP_HOST` or `SMTP_FROM` is missing or malformed. */
export function smtpConfig(env: {
  SMTP_HOST?: string;
  SMTP_PORT?: string;
  SMTP_USER?: string;
  SMTP_PASSWORD?: string;
  SMTP_FROM?: string;
  SMTP_TIMEOUT_MS?: string;
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
    ...(env.SMTP_TIMEOUT_MS ? { timeoutMs: numberSetting(env.SMTP_TIMEOUT_MS, 15_000, 1) } : {}),
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
 * spaces; at most `max` characters.
 */
export function headerText(text: string, max = 200): string {
  const clean = text
    .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  return [...clean].slice(0, max).join("");
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

/**
 * The MIME message of a notification (RFC 5322, RFC 2045-2047): header values are header-safe and encoded when not
 * ASCII, and both parts are base64, so no user text can start a header, a line or a part.
 */
export function buildMessage(config: SmtpConfig, message: EmailMessage, now = new Date()): string {
  const { subject, text, html } = emailContent(message.title, message.body);
  const name = message.to.name ? displayName(message.to.name) : "";
  const boundary = `parley-${crypto.randomUUID()}`;
  const headers: [string, string][] = [
    ["From", mailbox(config.from.name, config.from.email)],
    ["To", mailbox(name, message.to.email)],
    ["Subject", encodeWords(subject)],
    ["Date", now.toUTCString()],
    ["Message-ID", `<${message.notificationId}.${crypto.randomUUID()}@${config.from.email.split("@")[1]}>`],
    ["MIME-Version", "1.0"],
    ["Auto-Submitted", "auto-generated"],
    ["X-Parley-Notification", message.notificationId],
    ...(message.priority === "high" || message.priority === "critical"
      ? ([
          ["Importance", "high"],
          ["X-Priority", "1"],
        ] as [string, string][])
      : []),
    ["Content-Type", `multipart/alternative; boundary="${boundary}"`],
  ];
  const part = (type: string, content: string) =>
    `--${boundary}\r\nContent-Type: ${type}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n${base64Lines(content)}\r\n`;
  return (
    headers.map(([key, value]) => `${key}: ${value}`).join("\r\n") +
    "\r\n\r\n" +
    part("text/plain", text.replace(/\r?\n/g, "\r\n")) +
    part("text/html", html) +
    `--${boundary}--\r\n`
  );
}

function mailbox(name: string | undefined, email: string): string {
  return name ? `${/^[\x20-\x7e]*$/.test(name) ? `"${name}"` : encodeWords(name)} <${email}>` : email;
}

/** RFC 2047: ASCII text as it is, anything else as base64 encoded words of at most 75 characters, folded. */
export function encodeWords(text: string): string {
  if (/^[\x20-\x7e]*$/.test(text)) return text;
  const words: number[][] = [];
  const chunk: number[] = [];
  for (const char of text) {
    const bytes = [...encoder.encode(char)];
    if (chunk.length + bytes.length > 45) words.push(chunk.splice(0));
    chunk.push(...bytes);
  }
  if (chunk.length > 0) words.push(chunk);
  return words.map((bytes) => `=?UTF-8?B?${btoa(String.fromCharCode(...bytes))}?=`).join("\r\n ");
}

function base64Lines(text: string): string {
  let binary = "";
  for (const byte of encoder.encode(text)) binary += String.fromCharCode(byte);
  return (btoa(binary).match(/.{1,76}/g) ?? []).join("\r\n");
}

/** Sends one email over SMTP (`cloudflare:sockets`) and classifies what happened. */
export async function sendEmail(config: SmtpConfig, message: EmailMessage): Promise<EmailOutcome> {
  if (!isSafeAddress(message.to.email)) return { kind: "permanent", error: "the recipient's address is not valid" };
  try {
    await sendSmtp(
      {
        host: config.host,
        port: config.port,
        user: config.user,
        password: config.password,
        timeoutMs: config.timeoutMs,
      },
      { from: config.from.email, to: message.to.email, data: buildMessage(config, message) },
    );
    return { kind: "sent" };
  } catch (error) {
    const text = String(error instanceof Error ? error.message : error).slice(0, 300);
    // A 5xx reply is permanent; 4xx replies, timeouts and connection failures are worth retrying, except when the
    // server may already have the message: at most once means never sending it again.
    if (error instanceof SmtpError && error.unconfirmed) {
      return { kind: "permanent", error: `${text}; not sent again, as the server may have taken it` };
    }
    return error instanceof SmtpError && error.code >= 500
      ? { kind: "permanent", error: text }
      : { kind: "transient", error: text };
  }
}
