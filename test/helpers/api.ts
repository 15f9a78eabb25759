import { env, SELF } from "cloudflare:test";
import { expect } from "vitest";

/** The admin token the test configuration sets. */
export const ADMIN_TOKEN = "test-admin-token";

/** A JSON request to the worker under test, as a client would send it. */
export async function call(
  method: string,
  path: string,
  options: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
) {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["content-type"] ??= "application/json";
    body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
  }
  return readResponse(await SELF.fetch(`https://parley.test${path}`, { method, headers, body }));
}

/** A response as tests read it: status, headers, and the body as JSON (its text when it is not JSON, null if empty). */
export async function readResponse(response: Response) {
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  return { status: response.status, headers: response.headers, body };
}

/** Asserts a response is the contract's error with this status and code. */
export function expectError(response: { status: number; body: any }, status: number, code: string) {
  expect(response.status, JSON.stringify(response.body)).toBe(status);
  expect(response.body.error.code).toBe(code);
  expect(typeof response.body.error.message).toBe("string");
  expect(typeof response.body.error.requestId).toBe("string");
}

/** Asserts a 400 with the contract's `details` (each a non-empty path and message), one of them at `path` when given. */
export function expectBadRequest(response: { status: number; body: any }, path?: string) {
  expectError(response, 400, "BAD_REQUEST");
  const details = response.body.error.details;
  expect(Array.isArray(details), JSON.stringify(response.body)).toBe(true);
  expect(details.length).toBeGreaterThan(0);
  for (const detail of details) {
    expect(typeof detail.path).toBe("string");
    expect(typeof detail.message).toBe("string");
    expect(detail.message.length).toBeGreaterThan(0);
  }
  if (path !== undefined)
    expect(
      details.map((d: any) => d.path),
      JSON.stringify(details),
    ).toContain(path);
}

/** A fresh org with its API key. */
export async function createOrg(name = "Acme") {
  const response = await call("POST", "/v1/orgs", { token: ADMIN_TOKEN, body: { name } });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return { orgId: response.body.org.id as string, apiKey: response.body.apiKey as string };
}

/** Creates an account and answers it. */
export async function createAccount(apiKey: string, body: Record<string, unknown> = { type: "user", name: "Ada" }) {
  const response = await call("POST", "/v1/accounts", { token: apiKey, body });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body;
}

/** An org with two users, a standard room holding both, and a conversation in it. */
export async function createFixture() {
  const org = await createOrg();
  const alice = await createAccount(org.apiKey, { type: "user", name: "Alice", email: "alice@example.com" });
  const bob = await createAccount(org.apiKey, { type: "user", name: "Bob" });
  const room = await call("POST", "/v1/rooms", {
    token: org.apiKey,
    body: {
      type: "standard",
      name: "General",
      participants: [{ accountId: alice.id, role: "owner" }, { accountId: bob.id }],
    },
  });
  expect(room.status, JSON.stringify(room.body)).toBe(201);
  const conversation = await call("POST", `/v1/rooms/${room.body.id}/conversations`, {
    token: org.apiKey,
    body: { name: "Hello" },
  });
  expect(conversation.status, JSON.stringify(conversation.body)).toBe(201);
  return { ...org, alice, bob, room: room.body, conversation: conversation.body };
}

/** Issues an account token. */
export async function accountToken(apiKey: string, accountId: string, ttlSeconds?: number) {
  const response = await call("POST", "/v1/tokens", { token: apiKey, body: { accountId, ttlSeconds } });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body.token as string;
}

/** Posts a message with an API key as `authorId`. */
export async function post(apiKey: string, conversationId: string, body: Record<string, unknown>) {
  return call("POST", `/v1/conversations/${conversationId}/messages`, { token: apiKey, body });
}

export { env };
export { eventually } from "./wait";
