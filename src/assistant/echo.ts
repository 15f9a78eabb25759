import type { ChatMessage } from "./models";

const TOKEN_DELAY_MS = 10;

/**
 * `local:echo`: an offline model whose reply is built deterministically from its input (the last user message, or a
 * greeting when there is none), streamed a word at a time so streaming can be seen and tested without a model server.
 */
export async function echoReply(
  messages: ChatMessage[],
  signal: AbortSignal,
  onDelta: (delta: string) => boolean,
): Promise<void> {
  const last = [...messages].reverse().find((message) => message.role === "user");
  const reply = last ? `Echo: ${last.content}` : "Hello! I am here and listening.";
  for (const token of reply.match(/\s*\S+/g) ?? [reply]) {
    if (signal.aborted) return;
    await scheduler.wait(TOKEN_DELAY_MS);
    if (!onDelta(token)) return;
  }
}
