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

/** The push request for one subscription (RFC 8030 section 5): encrypted body, VAPID, TTL and Urgency. */
export async function buildPushRequest(
  target: PushTarget,
  payload: string,
  priority: Priority,
  vapid: VapidKeys,
): Promise<Request> {
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
    },
    body,
  });
}

/** Sends one push and classifies the push service's answer. */
export async function sendPush(
  target: PushTarget,
  payload: string,
  priority: Priority,
  vapid: VapidKeys,
): Promise<PushOutcome> {
  let response: Response;
  try {
    response = await fetch(await buildPushRequest(target, payload, priority, vapid));
  } catch (error) {
    return { kind: "transient", status: 0, error: `push service unreachable: ${String(error)}` };
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
