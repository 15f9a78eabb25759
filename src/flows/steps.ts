import { z } from "zod";
import { streamReply } from "../assistant/reply";
import { DEFAULT_MODEL } from "../assistant/models";
import type { Bindings } from "../env";
import { ApiError, unwrap } from "../errors";
import { createEvent, messagePostedEvent } from "../events/envelope";
import type { AgentSettings, Step } from "../protocol/accounts";
import type { ParleyEvent } from "../protocol/events";
import { MESSAGE_LIMITS } from "../protocol/messages";
import { roomStub } from "../room/client";
import type { FlowParams } from "./instances";
import { readLimited } from "../lib/bytes";
import { parseClientJson } from "../lib/json";

/** What a step needs of its run. */
export interface StepRun {
  id: string;
  trigger: "start" | "message";
  messageId: string | null;
  eventId: string;
  seq: number;
}

/** The outcome of a step: it went through, or it failed for a reason the run records (nothing to retry). */
export interface StepOutcome {
  messageId?: string;
  error?: string;
}

/** Limits of the webhook step. */
export const WEBHOOK_LIMITS = { timeoutMs: 10_000, answerBytes: 64 * 1024 } as const;

const WebhookAnswerSchema = z.object({ text: z.string().min(1).max(MESSAGE_LIMITS.textChars) });

/**
 * Runs one step of a run. Everything it posts carries a `clientMessageId` made of the run and the step's index, so
 * a retried step never posts twice. Failures of the step itself (a model, a webhook, a refused post) are answered
 * as an error; failures to reach the room are thrown, for the Workflow to retry.
 */
export async function runStep(
  env: Bindings,
  flow: FlowParams,
  run: StepRun,
  index: number,
  step: Step,
  agent: AgentSettings,
  retried = false,
): Promise<StepOutcome> {
  const key = `${run.id}.${index}`;
  try {
    if (step.type === "reply") return await post(env, flow, key, step.text);
    if (step.type === "webhook") {
      let answer: string | null;
      // The webhook is the step's side effect: not called once the agent may no longer answer.
      unwrap(await roomStub(env, flow.roomId).checkAnswer({ orgId: flow.orgId }, flow.conversationId, flow.agentId));
      try {
        answer = await callWebhook(step.url, await triggerEvent(env, flow, run), flow, run);
      } catch (error) {
        if (error instanceof StepError) await failStream(env, flow, key, error.message);
        throw error;
      }
      return answer === null ? {} : await post(env, flow, key, answer);
    }
    const outcome = await streamReply(env, {
      orgId: flow.orgId,
      roomId: flow.roomId,
      conversationId: flow.conversationId,
      agentId: flow.agentId,
      streamId: key,
      model: step.model ?? agent.model ?? DEFAULT_MODEL,
      instructions: [agent.instructions ?? "", step.instructions ?? ""],
      // A message's run answers the history up to its message; a start's, the latest.
      ...(run.trigger === "message" ? { beforeSeq: run.seq + 1 } : {}),
      ...(retried ? { retried } : {}),
    });
    return outcome.error ? { error: outcome.error } : { messageId: outcome.message?.id };
  } catch (error) {
    if (error instanceof ApiError) return { error: error.message };
    if (error instanceof StepError) return { error: error.message };
    throw error;
  }
}

/** A failure that ends the step (and its run) without a retry. */
class StepError extends Error {}

async function post(env: Bindings, flow: FlowParams, clientMessageId: string, text: string): Promise<StepOutcome> {
  const result = await roomStub(env, flow.roomId).postMessage({ orgId: flow.orgId }, flow.conversationId, {
    authorId: flow.agentId,
    text,
    attachments: [],
    clientMessageId,
  });
  return { messageId: unwrap(result).message.id };
}

/**
 * Ends a failed webhook step the way a failed model ends an assistant step: a `message_stream` event with
 * `done: true` and the error, so clients waiting for the agent's answer learn it is not coming. Nothing is posted.
 */
async function failStream(env: Bindings, flow: FlowParams, streamId: string, error: string): Promise<void> {
  const room = roomStub(env, flow.roomId);
  const opened = await room.openStream({ orgId: flow.orgId }, flow.conversationId, streamId, flow.agentId);
  if (opened.ok && !opened.value.message) await room.closeStream(streamId, error);
}

/** The event that triggered a run, rebuilt with its id: the message's `message_posted`, or `conversation.created`. */
async function triggerEvent(env: Bindings, flow: FlowParams, run: StepRun): Promise<ParleyEvent> {
  const room = roomStub(env, flow.roomId);
  const actor = { orgId: flow.orgId };
  if (run.trigger === "message") {
    const page = unwrap(await room.listMessages(actor, flow.conversationId, { afterSeq: run.seq - 1, limit: 1 }));
    const message = page.items[0];
    if (!message || message.id !== run.messageId) throw new StepError("the triggering message is gone");
    return messagePostedEvent(message);
  }
  const { conversation } = unwrap(await room.getConversation(actor, flow.conversationId));
  return createEvent({
    id: run.eventId,
    orgId: flow.orgId,
    source: "conversations",
    resource: "conversation",
    event: "created",
    resourceId: conversation.id,
    occurredAt: conversation.createdAt,
    data: conversation,
  });
}

/**
 * POSTs the event to a webhook and reads its answer: a JSON `{ text }` is the reply, an empty answer is none.
 * Only http and https, a timeout, a size limit; anything else is a step error.
 */
async function callWebhook(url: string, event: ParleyEvent, flow: FlowParams, run: StepRun): Promise<string | null> {
  const target = new URL(url);
  if (target.protocol !== "https:" && target.protocol !== "http:") throw new StepError("webhook URL must be http(s)");
  let response: Response;
  try {
    response = await fetch(target, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": "Parley-Webhook/1",
        "x-parley-event-id": event.id,
        "x-parley-run-id": run.id,
        "x-parley-agent-id": flow.agentId,
      },
      body: JSON.stringify(event),
      redirect: "manual",
      signal: AbortSignal.timeout(WEBHOOK_LIMITS.timeoutMs),
    });
  } catch (error) {
    const timedOut = error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError");
    throw new StepError(timedOut ? "webhook timed out" : "webhook could not be reached");
  }
  if (response.status < 200 || response.status >= 300) {
    await response.body?.cancel();
    throw new StepError(`webhook answered ${response.status}`);
  }
  const text = await readAnswer(response, WEBHOOK_LIMITS.answerBytes);
  if (text.trim() === "") return null;
  let body: unknown;
  try {
    body = parseClientJson(text);
  } catch {
    throw new StepError("webhook answer is not JSON");
  }
  const answer = WebhookAnswerSchema.safeParse(body);
  if (!answer.success) {
    const tooLong = answer.error.issues.some((issue) => issue.code === "too_big");
    throw new StepError(
      tooLong
        ? `webhook answer's \`text\` is longer than a message may be (${MESSAGE_LIMITS.textChars} characters)`
        : "webhook answer must be a JSON object with a non-empty string `text`",
    );
  }
  return answer.data.text;
}

/** Reads an answer as UTF-8 text, refusing it past `maxBytes` without reading further. */
async function readAnswer(response: Response, maxBytes: number): Promise<string> {
  const tooLarge = () => new StepError(`webhook answer is larger than ${maxBytes} bytes`);
  if (Number(response.headers.get("content-length") ?? "0") > maxBytes) {
    await response.body?.cancel();
    throw tooLarge();
  }
  const bytes = await readLimited(response.body, maxBytes, tooLarge);
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new StepError("webhook answer is not UTF-8");
  }
}
