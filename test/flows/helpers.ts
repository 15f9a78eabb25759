import { expect } from "vitest";
import { call, createAccount, createOrg, eventually } from "../helpers/api";
import { accountToken } from "../helpers/api";
import { openRoom, subscribe, type LoggedSocket } from "../helpers/realtime";

/** An org with a user, an agent with these settings, a standard room holding both, and a user socket on the room. */
export async function agentRoom(agent: Record<string, unknown> = {}, options: { conversation?: boolean } = {}) {
  const org = await createOrg();
  const user = await createAccount(org.apiKey, { type: "user", name: "Uma" });
  const bot = await createAccount(org.apiKey, { type: "agent", name: "Botty", agent });
  const room = await call("POST", "/v1/rooms", {
    token: org.apiKey,
    body: { type: "standard", name: "Support", participants: [{ accountId: user.id }, { accountId: bot.id }] },
  });
  expect(room.status, JSON.stringify(room.body)).toBe(201);
  const token = await accountToken(org.apiKey, user.id);
  const socket = await openRoom(room.body.id, token);
  await subscribe(socket, `events.${org.orgId}.conversations.conversation.*.*`);
  let conversationId = "";
  if (options.conversation !== false) conversationId = await newConversation(org.apiKey, room.body.id);
  return { ...org, user, bot, room: room.body, token, socket, conversationId };
}

/** Creates a conversation in a room. */
export async function newConversation(apiKey: string, roomId: string): Promise<string> {
  const created = await call("POST", `/v1/rooms/${roomId}/conversations`, { token: apiKey, body: { name: "Chat" } });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return created.body.id;
}

/** Posts as the user and answers the message. */
export async function say(apiKey: string, conversationId: string, authorId: string, text: string) {
  const posted = await call("POST", `/v1/conversations/${conversationId}/messages`, {
    token: apiKey,
    body: { authorId, text },
  });
  expect(posted.status, JSON.stringify(posted.body)).toBe(201);
  return posted.body;
}

/** The `message_stream` events a socket got for one stream, in arrival order. */
export function streamEvents(socket: LoggedSocket, streamId?: string): any[] {
  return socket
    .events((f) => f.event.type === "conversation.message_stream")
    .map((f) => f.event.data)
    .filter((data) => streamId === undefined || data.streamId === streamId);
}

/** Waits until a conversation's history has `count` messages and answers them. */
export async function historyOf(apiKey: string, conversationId: string, count: number, timeoutMs = 20_000) {
  return eventually(async () => {
    const page = await call("GET", `/v1/conversations/${conversationId}/messages?limit=100`, { token: apiKey });
    return page.body.items.length >= count ? (page.body.items as any[]) : null;
  }, timeoutMs);
}

/** Waits until the runs of a conversation satisfy `done`, and answers them (oldest first). */
export async function runsOf(
  apiKey: string,
  conversationId: string,
  done: (runs: any[]) => boolean,
  timeoutMs = 20_000,
): Promise<any[]> {
  let last: any[] = [];
  try {
    return await eventually(async () => {
      const page = await call("GET", `/v1/flow-runs?conversationId=${conversationId}&limit=100`, { token: apiKey });
      last = [...page.body.items].reverse();
      return done(last) ? last : null;
    }, timeoutMs);
  } catch (error) {
    throw new Error(`runs never satisfied the condition: ${JSON.stringify(last)}`, { cause: error });
  }
}
