import { eventually as waitFor } from "../helpers/wait";
import { expect, inject } from "vitest";
import { ParleyClient, ParleyError } from "../../src/sdk";

/** The dev server the global setup started. */
export const baseUrl = inject("baseUrl");

/** A client with the dev server's admin token: it may only create orgs. */
export function adminClient(): ParleyClient {
  return new ParleyClient({ baseUrl, token: inject("adminToken") });
}

/** A fresh org, and a client acting with its API key. */
export async function createOrg(name = "Acme") {
  const { org, apiKey } = await adminClient().orgs.create({ name });
  return { org, apiKey, client: adminClient().withToken(apiKey) };
}

/** An org with two users, a standard room holding both, and a conversation in it. */
export async function createFixture() {
  const { org, apiKey, client } = await createOrg();
  const alice = await client.accounts.create({ type: "user", name: "Alice" });
  const bob = await client.accounts.create({ type: "user", name: "Bob" });
  const room = await client.rooms.create({
    type: "standard",
    name: "General",
    participants: [{ accountId: alice.id, role: "owner" }, { accountId: bob.id }],
  });
  const conversation = await client.conversations.create(room.id, { name: "Hello" });
  return { org, apiKey, client, alice, bob, room, conversation };
}

/** Awaits a promise that must reject with a `ParleyError` of this status and code, and answers the error. */
export async function expectParleyError(promise: Promise<unknown>, status: number, code: string): Promise<ParleyError> {
  const error = await promise.then(
    (value) => {
      throw new Error(`expected ${code}, got ${JSON.stringify(value)}`);
    },
    (error: unknown) => error,
  );
  expect(error).toBeInstanceOf(ParleyError);
  const parley = error as ParleyError;
  expect(parley.status, parley.message).toBe(status);
  expect(parley.code).toBe(code);
  expect(parley.message.length).toBeGreaterThan(0);
  expect(parley.requestId).toMatch(/^\S+$/);
  return parley;
}

/** Collects an async iterable into an array. */
export async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

/** The integers from..to. */
export const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** `eventually` with the longer wait an end-to-end run over HTTP needs. */
export const eventually = <T>(
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 20_000,
  intervalMs = 25,
) => waitFor(check, timeoutMs, intervalMs);
