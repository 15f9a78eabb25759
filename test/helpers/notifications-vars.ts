import type { ProvidedContext } from "vitest";

type Inject = <K extends keyof ProvidedContext>(key: K) => ProvidedContext[K];

/**
 * The notifications worker's configuration in the tests: the local SMTP server and the VAPID keys the global setup
 * made. Shared by the auxiliary worker's config (in Node) and tests that call its consumer directly (in workerd).
 */
export function notificationsVars(inject: Inject) {
  return {
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: String(inject("smtpPort")),
    SMTP_USER: "parley",
    SMTP_PASSWORD: "smtp-secret",
    SMTP_FROM: "Parley <notify@parley.test>",
    VAPID_PUBLIC_KEY: inject("vapidPublicKey"),
    VAPID_PRIVATE_KEY: inject("vapidPrivateKey"),
    VAPID_SUBJECT: "mailto:ops@parley.test",
    // Short, so tests of a server that never answers go quickly.
    PUSH_TIMEOUT_MS: "3000",
    SMTP_TIMEOUT_MS: "3000",
  };
}
