import type { Bindings } from "../env";
import { hubStub } from "../hub/client";
import type { ParleyEvent } from "../protocol/events";

/**
 * Publishes events that no room owns (flow runs, notifications): live to the org's hub, then onto the events queue
 * so every consumer sees them. Event ids are stable, so a retried publish is deduplicated by the hub and consumers.
 */
export async function publishOrgEvents(env: Bindings, orgId: string, events: ParleyEvent[]): Promise<void> {
  if (events.length === 0) return;
  await Promise.all([
    hubStub(env, orgId).publish(null, events),
    env.EVENTS.sendBatch(events.map((event) => ({ body: JSON.stringify({ event }), contentType: "text" as const }))),
  ]);
}
