import type { Message } from "../protocol/messages";
import type { ChatMessage } from "./models";

/** How many recent messages of the conversation a prompt carries. */
export const HISTORY_MESSAGES = 30;

/**
 * The prompt of an assistant step: the instructions as the system message, then the recent history with authors
 * mapped to roles (the agent's own messages are `assistant`, system messages `system`, everyone else `user`).
 */
export function buildPrompt(agentId: string, instructions: string[], history: Message[]): ChatMessage[] {
  const system = instructions.filter((text) => text.trim() !== "").join("\n\n");
  const messages: ChatMessage[] = system ? [{ role: "system", content: system }] : [];
  for (const message of history) {
    const content = contentOf(message);
    if (!content) continue;
    const role = message.authorId === agentId ? "assistant" : message.type === "system" ? "system" : "user";
    messages.push({ role, content });
  }
  return messages;
}

function contentOf(message: Message): string {
  const parts: string[] = [];
  if (message.text) parts.push(message.text);
  if (message.data) parts.push(JSON.stringify(message.data));
  if (message.attachments.length > 0) {
    parts.push(`[attachments: ${message.attachments.map((a) => `${a.name} (${a.contentType})`).join(", ")}]`);
  }
  return parts.join("\n");
}
