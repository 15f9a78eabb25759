import { inject } from "vitest";
import { expect } from "vitest";
import { toBase64Url } from "../../src/notifications/push/base64url";
import { call } from "./api";

/** A request to the control API of the local push service and SMTP server (`/control/...`). */
export async function control(path: string, init?: RequestInit): Promise<any> {
  const response = await fetch(`${inject("controlOrigin")}${path}`, init);
  expect(response.ok, path).toBe(true);
  return response.json();
}

/**
 * A browser's push subscription on the local push service: a fresh P-256 key pair and auth secret. The push service
 * gets the private key so it can decrypt what arrives, and answers pushes with `statuses` in order (then 201).
 */
export async function newPushSubscription(statuses: number[] = []) {
  const pair = (await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, [
    "deriveBits",
  ])) as CryptoKeyPair;
  const jwk = (await crypto.subtle.exportKey("jwk", pair.privateKey)) as JsonWebKey;
  const publicKey = toBase64Url(new Uint8Array((await crypto.subtle.exportKey("raw", pair.publicKey)) as ArrayBuffer));
  const auth = toBase64Url(crypto.getRandomValues(new Uint8Array(16)));
  const id = toBase64Url(crypto.getRandomValues(new Uint8Array(12)));
  await control(`/control/subscriptions/${id}`, {
    method: "PUT",
    body: JSON.stringify({ privateKey: jwk.d, publicKey, auth, statuses }),
  });
  return { id, json: { endpoint: `${inject("controlOrigin")}/push/${id}`, keys: { p256dh: publicKey, auth } } };
}

/** What the push service received for a subscription. */
export function pushesOf(subscriptionId: string): Promise<any[]> {
  return control(`/control/subscriptions/${subscriptionId}/pushes`);
}

/** What the SMTP server received for an address. */
export function emailsTo(address: string): Promise<any[]> {
  return control(`/control/smtp/messages?to=${encodeURIComponent(address)}`);
}

/** Every RCPT TO the SMTP server answered for an address, with its reply code. */
export function rcptAttempts(address: string): Promise<{ address: string; code: number }[]> {
  return control(`/control/smtp/recipients?address=${encodeURIComponent(address)}`);
}

/** A unique email address at the test domain. */
export function uniqueEmail(local = "user") {
  return `${local}-${crypto.randomUUID().slice(0, 8)}@example.com`;
}

/** Creates a notification rule and asserts 201. */
export async function createRule(apiKey: string, body: Record<string, unknown>) {
  const response = await call("POST", "/v1/notification-rules", { token: apiKey, body });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body;
}

/** The notifications of an account, newest first (API key). */
export async function notificationsOf(apiKey: string, accountId: string): Promise<any[]> {
  const response = await call("GET", `/v1/notifications?accountId=${accountId}&limit=100`, { token: apiKey });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body.items;
}

/** The topic of every message posted in an org. */
export function messagesTopic(orgId: string) {
  return `events.${orgId}.conversations.conversation.message_posted.*`;
}
