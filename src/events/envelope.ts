import { newId } from "../lib/ids";
import type { EventSource, ParleyEvent } from "../protocol/events";
import type { Message } from "../protocol/messages";

/** What a state change says about itself; the envelope adds id, topic and time. */
export interface EventSpec<T> {
  orgId: string;
  source: EventSource;
  resource: string;
  event: string;
  resourceId: string;
  data: T;
  occurredAt?: string;
  /** A fixed id, for events that must be rebuilt identically (a message's `message_posted`). */
  id?: string;
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
    id: spec.id ?? newId("evt"),
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

/** The `message_posted` event of a message: the same id and time whenever it is built, live or replayed. */
export function messagePostedEvent(message: Message): ParleyEvent<Message> {
  return createEvent({
    id: `evt_${message.id.slice("msg_".length)}`,
    orgId: message.orgId,
    source: "conversations",
    resource: "conversation",
    event: "message_posted",
    resourceId: message.conversationId,
    occurredAt: message.createdAt,
    data: message,
  });
}
