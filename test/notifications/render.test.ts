import { describe, expect, it } from "vitest";
import { displayName, emailContent, encodeWords, headerText, smtpConfig } from "../../src/notifications/email";
import { pushPayload } from "../../src/notifications/deliver";
import { MAX_PAYLOAD_BYTES } from "../../src/notifications/push/encrypt";
import { renderNotification, renderTemplate } from "../../src/notifications/template";

// Templates render event fields as plain text; each channel escapes that text for itself.

const event = {
  id: "evt_1",
  type: "conversation.message_posted",
  data: { text: "Hi <b>you</b>", seq: 7, authorId: "acc_1", meta: { tag: "x" }, flag: false, nothing: null },
};
const recipient = { id: "acc_2", name: "Bob" };

describe("templates", () => {
  it("render event paths and the recipient; numbers, booleans and objects as text; missing paths as nothing", () => {
    expect(
      renderTemplate(
        "{{ event.data.text }}|{{event.data.seq}}|{{event.data.flag}}|{{event.data.meta}}|{{event.data.nothing}}|{{event.data.missing.deep}}|{{recipient.name}}",
        { event, recipient },
      ),
    ).toBe('Hi <b>you</b>|7|false|{"tag":"x"}|||Bob');
    expect(renderTemplate("{{event.constructor}}{{event.data.text.length}}", { event, recipient })).toBe("");
  });

  it("make a one-line title and cut title and body to their limits", () => {
    const long = { ...event, data: { ...event.data, text: "line one\r\nline two\u2028three" + "x".repeat(3000) } };
    const { title, body } = renderNotification(
      { title: "{{event.data.text}}", body: "{{event.data.text}}" },
      {
        event: long,
        recipient,
      },
    );
    expect(title.startsWith("line one line two three")).toBe(true);
    expect([...title]).toHaveLength(200);
    expect(title.endsWith("…")).toBe(true);
    expect(body.startsWith("line one\r\nline two")).toBe(true);
    expect([...body]).toHaveLength(2000);
    expect(renderNotification({ title: "{{event.data.nothing}}", body: "" }, { event, recipient }).title).toBe(
      "Notification",
    );
  });
});

describe("email escaping", () => {
  it("keeps headers on one line and within SMTP's line limit, and escapes HTML", () => {
    expect(headerText("a\r\nBcc: x@y.z\n\tb\u0085c")).toBe("a Bcc: x@y.z b c");
    expect(displayName('Eve "the" \\ hacker\r\nBcc: x')).toBe("Eve the  hacker Bcc: x".replace("  ", " "));
    const cjk = encodeWords(headerText("漢字 ".repeat(100), 250));
    const lines = cjk.split("\r\n");
    expect(lines.length).toBeGreaterThan(10);
    for (const line of lines) expect(line).toMatch(/^ ?=\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=$/);
    expect(Math.max(...lines.map((line) => line.length))).toBeLessThanOrEqual(76);
    const decoded = lines.map((line) => /\?B\?(.*)\?=/.exec(line)![1]).map((b64) => atob(b64));
    const bytes = Uint8Array.from(decoded.join(""), (c) => c.charCodeAt(0));
    expect(new TextDecoder().decode(bytes)).toBe("漢字 ".repeat(100).trim().slice(0, 250));
    expect(encodeWords("plain ASCII")).toBe("plain ASCII");
    const { subject, text, html } = emailContent('<script>alert("x")</script>', "a & b\n<i>c</i>");
    expect(subject).toBe('<script>alert("x")</script>');
    expect(text).toBe('<script>alert("x")</script>\n\na & b\n<i>c</i>');
    expect(html).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;");
    expect(html).toContain("a &amp; b<br>&lt;i&gt;c&lt;/i&gt;");
    expect(html).not.toMatch(/<script|<i>/);
  });

  it("reads SMTP_* configuration, refusing a sender address that could inject headers", () => {
    expect(smtpConfig({ SMTP_HOST: "smtp.example.com", SMTP_FROM: "Parley <n@example.com>" })).toEqual({
      host: "smtp.example.com",
      port: 587,
      from: { name: "Parley", email: "n@example.com" },
    });
    expect(
      smtpConfig({ SMTP_HOST: "h", SMTP_PORT: "465", SMTP_USER: "u", SMTP_PASSWORD: "p", SMTP_FROM: "n@example.com" }),
    ).toEqual({ host: "h", port: 465, user: "u", password: "p", from: { email: "n@example.com" } });
    expect(smtpConfig({ SMTP_HOST: "h", SMTP_FROM: "n@example.com\r\nBcc: x@y.z" })).toBeNull();
    expect(smtpConfig({ SMTP_HOST: "", SMTP_FROM: "n@example.com" })).toBeNull();
    expect(smtpConfig({ SMTP_HOST: "h", SMTP_PORT: "70000", SMTP_FROM: "n@example.com" })).toBeNull();
  });
});

describe("push payload", () => {
  it("fits one encrypted record, cutting the body when it must", () => {
    const row = {
      id: "ntf_1",
      rule_id: "rule_1",
      event_id: "evt_1",
      title: "t",
      body: "😀".repeat(2000),
      priority: "normal" as const,
      created_at: "2026-01-01T00:00:00.000Z",
    };
    const payload = pushPayload(row);
    expect(new TextEncoder().encode(payload).byteLength).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES);
    const parsed = JSON.parse(payload);
    expect(parsed.body.length).toBeGreaterThan(100);
    expect(parsed.body.endsWith("…")).toBe(true);
    expect(JSON.parse(pushPayload({ ...row, body: "short" })).body).toBe("short");
  });
});
