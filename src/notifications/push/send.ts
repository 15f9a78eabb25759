import type { Priority } from "../../protocol/notifications";
import { encryptPayload, type SubscriptionKeys } from "./encrypt";
import { vapidAuthorization, type VapidKeys } from "./vapid";

/** How long a push service keeps a message for an offline browser, and how urgently it delivers, per priority. */
export const PUSH_POLICY: Record<Priority, { ttl: number; urgency: "very-low" | "low" | "normal" | "high" }> = {
  low: { ttl: 3600, urgency: "low" },
  normal: { ttl: 24 * 3600, urgency: "normal" },
  high: { ttl: 24 * 3600, urgency: "high" },
  critical: { ttl: 7 * 24 * 3600, urgency: "high" },
};

/** A push subscription as the worker sends to it. */
export interface PushTarget {
  endpoint: string;
  keys: SubscriptionKeys;
}

/** What became of one push: sent, gone (404/410: remove the subscription), transient (retry) or permanent. */
export type PushOutcome =
  | { kind: "sent"; status: number }
  | { kind: "gone"; status: number }
  | { kind: "transient"; status: number; retryAfterSeconds?: number; error: string }
  | { kind: "permanent"; status: number; error: string };

/** How long a push service may take to answer before the push is tried again (ms; `PUSH_TIMEOUT_MS`). */
export const PUSH_TIMEOUT_MS = 10_000;

/** One push: what to send, how urgently, and its `Topic` (RFC 8030 section 5.4; at most 32 base64url characters). */
export interface PushMessage {
  payload: string;
  priority: Priority;
  topic?: string;
}

/**
 * The push request for one subscription (RFC 8030 section 5): encrypted body, VAPID, TTL, Urgency and Topic. The
 * topic is the notification's id: a push tried again after an answer that never came replaces the first at the push
 * service while the browser has not fetched it, so the browser gets it once.
 */
export async function buildPushRequest(target: PushTarget, message: PushMessage, vapid: VapidKeys): Promise<Request> {
  const { payload, priority, topic } = message;
  const body = await encryptPayload(payload, target.keys);
  const policy = PUSH_POLICY[priority];
  return new Request(target.endpoint, {
    method: "POST",
    headers: {
      authorization: await vapidAuthorization(target.endpoint, vapid),
      "content-encoding": "aes128gcm",
      "content-type": "application/octet-stream",
      ttl: String(policy.ttl),
      urgency: policy.urgency,
      ...(topic ? { topic } : {}),
    },
    body,
  });
}

/**
 * Sends one push and classifies the push service's answer. A service that does not answer within `timeoutMs` is
 * tried again later, like one that cannot be reached; keys it cannot encrypt for fail the push for good.
 */
export async function sendPush(
  target: PushTarget,
  message: PushMessage,
  vapid: VapidKeys,
  timeoutMs = PUSH_TIMEOUT_MS,
): Promise<PushOutcome> {
  let request: Request;
  try {
    request = await buildPushRequest(target, message, vapid);
  } catch (error) {
    return { kind: "permanent", status: 0, error: `the subscription's keys cannot be used: ${String(error)}` };
  }
  let response: Response;
  try {
    response = await fetch(request, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    const timedOut = error instanceof Error && error.name === "TimeoutError";
    const why = timedOut ? `push service did not answer within ${timeoutMs} ms` : `push service unreachable: ${error}`;
    return { kind: "transient", status: 0, error: why };
  }
  const status = response.status;
  const text = response.ok ? "" : (await response.text().catch(() => "")).slice(0, 200);
  if (!response.ok) console.warn("push service answered", status, text);
  else await response.body?.cancel();
  if (status >= 200 && status < 300) return { kind: "sent", status };
  if (status === 404 || status === 410) return { kind: "gone", status };
  if (status === 429 || status >= 500) {
    const retryAfter = Number(response.headers.get("retry-after"));
    return {
      kind: "transient",
      status,
      error: `push service answered ${status}`,
      ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterSeconds: retryAfter } : {}),
    };
  }
  return { kind: "permanent", status, error: `push service answered ${status}${text ? `: ${text}` : ""}` };
}
