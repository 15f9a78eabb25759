import { newId } from "../lib/ids";
import type { EventSource, ParleyEvent } from "../protocol/events";

/** What a state change says about itself; the envelope adds id, topic and time. */
export interface EventSpec<T> {
  orgId: string;
  source: EventSource;
  resource: string;
  event: string;
  resourceId: string;
  data: T;
  occurredAt?: string;
}

/** The topic of an event: `events.{orgId}.{source}.{resource}.{event}.{resourceId}`. */
export function topicOf(
  spec: Pick<EventSpec<unknown>, "orgId" | "source" | "resource" | "event" | "resourceId">,
): string {
  return `events.${spec.orgId}.${spec.source}.${spec.resource}.${spec.event}.${spec.resourceId}`;
}

/** Wraps a state change in the contract's event envelope. */
export function createEvent<T>(spec: EventSpec<T>): ParleyEvent<T> {
  return {
    id: newId("evt"),
    type: `${spec.resource}.${spec.event}`,
    topic: topicOf(spec),
    orgId: spec.orgId,
    source: spec.source,
    resource: spec.resource,
    event: spec.event,
    resourceId: spec.resourceId,
    occurredAt: spec.occurredAt ?? new Date().toISOString(),
    data: spec.data,
  };
}
