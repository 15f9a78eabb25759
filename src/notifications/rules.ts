import { and, eq, inArray, or } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { chunks, createDb, D1_MAX_IDS, type Db } from "../db/client";
import { accounts, participantDepartures, participants } from "../db/schema";
import { notificationPreferences, notificationRules, notifications } from "../db/schema-notifications";
import type { Bindings } from "../env";
import { createEvent } from "../events/envelope";
import { publishOrgEvents } from "../events/publish";
import { newId } from "../lib/ids";
import type { ParleyEvent } from "../protocol/events";
import type { Channel, NotificationJob, Notification } from "../protocol/notifications";
import { isTopicError, parseTopicPattern, segmentsMatch, type TopicPattern } from "../protocol/topics";
import { roomIdOfConversation } from "../room/client";
import { notificationEventId, toNotification } from "./records";
import { renderNotification } from "./template";

type RuleRow = typeof notificationRules.$inferSelect;
type NotificationRow = typeof notifications.$inferSelect;
type PreferencesRow = typeof notificationPreferences.$inferSelect;

/** One rule that matched one event. */
interface Match {
  event: ParleyEvent;
  rule: RuleRow;
  roomId: string | null;
  authorId: string | null;
}

/**
 * Turns events into notifications (section 10), from the events consumer after the archive of a batch is written.
 * Rules of each event's org are matched with the shared topic matcher; recipients are the participants of the event's
 * room or the rule's listed accounts, never the author of the event; preferences decide each channel (`critical`
 * ignores them). Notifications are unique per (event, rule, recipient), so a redelivered batch creates nothing new;
 * the `notification.created` event goes out for every notification whose websocket channel is still pending, and
 * push and email jobs go to the notifications worker, which claims each delivery before it sends. Any failure throws,
 * and the consumer retries the batch: every step is idempotent.
 */
export async function notifyEvents(env: Bindings, events: ParleyEvent[], rules?: RuleRow[]): Promise<void> {
  const relevant = events.filter((event) => event.source !== "notifications");
  if (relevant.length === 0) return;
  const db = createDb(env.DB);
  const matches = matchRules(relevant, rules ?? (await loadRules(env.DB, relevant)));
  if (matches.length === 0) return;

  const recipients = await resolveRecipients(db, matches);
  const accountIds = [...new Set([...recipients.values()].flatMap((list) => list.map((r) => r.id)))];
  const preferences = await loadPreferences(db, accountIds);
  const now = new Date().toISOString();
  const rows: NotificationRow[] = [];
  for (const match of matches) {
    for (const recipient of recipients.get(match) ?? []) {
      if (recipient.id === match.authorId) continue;
      const { title, body } = renderNotification(match.rule.template, { event: match.event, recipient });
      const channels = channelStatuses(match, preferences.get(recipient.id));
      rows.push({
        id: newId("ntf"),
        orgId: match.event.orgId,
        accountId: recipient.id,
        ruleId: match.rule.id,
        eventId: match.event.id,
        title,
        body,
        priority: match.rule.priority,
        websocketStatus: channels.websocket,
        pushStatus: channels.push,
        emailStatus: channels.email,
        readAt: null,
        createdAt: now,
        checkAt: Date.parse(now) + NOTIFICATION_CHECK_AFTER_MS,
      });
    }
  }
  if (rows.length > 0) {
    await db.batch(
      rows.map((row) => db.insert(notifications).values(row).onConflictDoNothing()) as unknown as [
        BatchItem<"sqlite">,
        ...BatchItem<"sqlite">[],
      ],
    );
  }
  await deliver(env, db, [...new Set(matches.map((m) => m.event.id))]);
}

/** The (event, rule) pairs of a batch, one rules query per org. */
/**
 * The statements reading the rules of the orgs of these events (none when no event can trigger a rule), for the
 * events consumer to run in the same D1 batch as its archive writes; `rulesOf` reads their results.
 */
export function rulesStatements(d1: D1Database, events: ParleyEvent[]): D1PreparedStatement[] {
  const orgIds = [...new Set(events.filter((e) => e.source !== "notifications").map((e) => e.orgId))];
  return chunks(orgIds, D1_MAX_IDS).map((ids) =>
    d1.prepare(`SELECT * FROM notification_rules WHERE org_id IN (${ids.map(() => "?").join(",")})`).bind(...ids),
  );
}

/** The rules in the results of `rulesStatements`. */
export function rulesOf(results: D1Result[]): RuleRow[] {
  return results.flatMap((result) =>
    (result.results as Record<string, string>[]).map((row) => ({
      id: row.id,
      orgId: row.org_id,
      name: row.name,
      topic: row.topic,
      channels: JSON.parse(row.channels) as RuleRow["channels"],
      recipients: JSON.parse(row.recipients) as RuleRow["recipients"],
      priority: row.priority as RuleRow["priority"],
      template: JSON.parse(row.template) as RuleRow["template"],
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    })),
  );
}

async function loadRules(d1: D1Database, events: ParleyEvent[]): Promise<RuleRow[]> {
  const statements = rulesStatements(d1, events);
  return statements.length === 0 ? [] : rulesOf(await d1.batch(statements));
}

/** The rules each event matches, with the shared topic matcher: a rule applies to events from its creation on. */
function matchRules(events: ParleyEvent[], rules: RuleRow[]): Match[] {
  const matches: Match[] = [];
  const byOrg = new Map<string, { rule: RuleRow; pattern: TopicPattern }[]>();
  for (const rule of rules) {
    const pattern = parseTopicPattern(rule.topic, rule.orgId);
    if (!isTopicError(pattern)) byOrg.set(rule.orgId, [...(byOrg.get(rule.orgId) ?? []), { rule, pattern }]);
  }
  for (const event of events) {
    const patterns = byOrg.get(event.orgId);
    if (!patterns) continue;
    const parts = event.topic.split(".");
    for (const { rule, pattern } of patterns) {
      // The consumer may run later than the event (a batch, a retry, a redrive): rules made since do not apply.
      if (event.occurredAt < rule.createdAt) continue;
      if (segmentsMatch(pattern, parts)) {
        matches.push({ event, rule, roomId: roomOfEvent(event), authorId: authorOfEvent(event) });
      }
    }
  }
  return matches;
}

/** A participant of a room, now or (with `leftAt`) until it left. */
interface Member {
  id: string;
  name: string;
  joinedAt: string;
  leftAt?: string;
}

/** One recipient per account (an account that left and joined again has several spells). */
function uniqueById(members: Member[]): { id: string; name: string }[] {
  const byId = new Map<string, { id: string; name: string }>();
  for (const { id, name } of members) byId.set(id, { id, name });
  return [...byId.values()];
}

/**
 * The recipients of each match: the participants of its room that were in it when the event happened, or its listed
 * accounts that still exist in the org.
 */
async function resolveRecipients(db: Db, matches: Match[]) {
  const roomIds = [
    ...new Set(matches.filter((m) => m.rule.recipients === "participants" && m.roomId).map((m) => m.roomId!)),
  ];
  const members = new Map<string, Member[]>();
  for (const ids of chunks(roomIds, D1_MAX_IDS)) {
    const [present, departed] = await Promise.all([
      db
        .select({ roomId: participants.roomId, id: accounts.id, name: accounts.name, joinedAt: participants.joinedAt })
        .from(participants)
        .innerJoin(accounts, and(eq(accounts.id, participants.accountId), eq(accounts.orgId, participants.orgId)))
        .where(inArray(participants.roomId, ids)),
      // Those who left since (the consumer may run after a removal): they were there when earlier events happened.
      db
        .select({
          roomId: participantDepartures.roomId,
          id: accounts.id,
          name: accounts.name,
          joinedAt: participantDepartures.joinedAt,
          leftAt: participantDepartures.leftAt,
        })
        .from(participantDepartures)
        .innerJoin(
          accounts,
          and(eq(accounts.id, participantDepartures.accountId), eq(accounts.orgId, participantDepartures.orgId)),
        )
        .where(inArray(participantDepartures.roomId, ids)),
    ]);
    for (const row of [...present, ...departed]) members.set(row.roomId, [...(members.get(row.roomId) ?? []), row]);
  }
  const listedIds = [
    ...new Set(matches.flatMap((m) => (m.rule.recipients === "participants" ? [] : m.rule.recipients.accountIds))),
  ];
  const listed = new Map<string, { id: string; name: string; orgId: string }>();
  for (const ids of chunks(listedIds, D1_MAX_IDS)) {
    const rows = await db
      .select({ id: accounts.id, name: accounts.name, orgId: accounts.orgId })
      .from(accounts)
      .where(inArray(accounts.id, ids));
    for (const row of rows) listed.set(row.id, row);
  }
  const out = new Map<Match, { id: string; name: string }[]>();
  for (const match of matches) {
    const recipients = match.rule.recipients;
    out.set(
      match,
      recipients === "participants"
        ? // Those in the room when the event happened: one who joined since, or left before, is not notified of it.
          uniqueById(
            (members.get(match.roomId ?? "") ?? []).filter(
              (member) =>
                member.joinedAt <= match.event.occurredAt &&
                (member.leftAt === undefined || match.event.occurredAt < member.leftAt),
            ),
          )
        : recipients.accountIds
            .map((id) => listed.get(id))
            .filter((a): a is { id: string; name: string; orgId: string } => a?.orgId === match.event.orgId)
            .map(({ id, name }) => ({ id, name })),
    );
  }
  return out;
}

async function loadPreferences(db: Db, accountIds: string[]): Promise<Map<string, PreferencesRow>> {
  const out = new Map<string, PreferencesRow>();
  for (const ids of chunks(accountIds, D1_MAX_IDS)) {
    const rows = await db.select().from(notificationPreferences).where(inArray(notificationPreferences.accountId, ids));
    for (const row of rows) out.set(row.accountId, row);
  }
  return out;
}

/** Each channel's starting state: null when the rule does not use it, `skipped` when preferences say no. */
function channelStatuses(match: Match, preferences: PreferencesRow | undefined): Record<Channel, string | null> {
  const muted = match.roomId !== null && (preferences?.mutedRoomIds.includes(match.roomId) ?? false);
  const state = (channel: Channel) => {
    if (!match.rule.channels.includes(channel)) return null;
    if (match.rule.priority === "critical") return "pending";
    if (muted || preferences?.[channel] === false) return "skipped";
    return "pending";
  };
  return { websocket: state("websocket"), push: state("push"), email: state("email") };
}

/**
 * Delivers what is still pending for the notifications of these events: publishes `notification.created` for
 * pending websocket channels (then marks them sent), and queues a job per pending push or email channel.
 */
async function deliver(env: Bindings, db: Db, eventIds: string[]): Promise<void> {
  const pending: NotificationRow[] = [];
  for (const ids of chunks(eventIds, D1_MAX_IDS)) {
    pending.push(
      ...(await db
        .select()
        .from(notifications)
        .where(
          and(
            inArray(notifications.eventId, ids),
            or(
              eq(notifications.websocketStatus, "pending"),
              eq(notifications.pushStatus, "pending"),
              eq(notifications.emailStatus, "pending"),
            ),
          ),
        )),
    );
  }
  const live = pending.filter((row) => row.websocketStatus === "pending");
  const byOrg = new Map<string, ParleyEvent<Notification>[]>();
  for (const row of live) {
    const event = createEvent({
      id: notificationEventId(row.id),
      orgId: row.orgId,
      source: "notifications",
      resource: "notification",
      event: "created",
      resourceId: row.accountId,
      occurredAt: row.createdAt,
      data: toNotification({ ...row, websocketStatus: "sent" }),
    });
    byOrg.set(row.orgId, [...(byOrg.get(row.orgId) ?? []), event]);
  }
  for (const [orgId, orgEvents] of byOrg) {
    for (const batch of chunks(orgEvents, 100)) await publishOrgEvents(env, orgId, batch);
  }
  for (const ids of chunks(
    live.map((row) => row.id),
    D1_MAX_IDS,
  )) {
    await db
      .update(notifications)
      .set({ websocketStatus: "sent" })
      .where(and(inArray(notifications.id, ids), eq(notifications.websocketStatus, "pending")));
  }
  await sendJobs(env, pending);
}

/**
 * How long after its creation a notification whose push or email has not ended is checked for a lost job, and how
 * long after each check the next. Deliveries end within a minute (five retries back off for 31 s; a claim's lease is
 * 5 minutes), and the dead-letter queue tries every 15 minutes.
 */
export const NOTIFICATION_CHECK_AFTER_MS = 2 * 60_000;
const NOTIFICATION_CHECK_EVERY_MS = 5 * 60_000;
const NOTIFICATION_CHECK_BATCH = 100;

/**
 * Sends the push and email jobs again of notifications due for a check whose channel has not ended, and answers how
 * many. A job the queue lost (the local queue keeps its messages in memory: a restart of `wrangler dev` loses them)
 * would otherwise leave its channel pending for good. A job that was not lost finds nothing more to send (each
 * delivery is claimed before it is sent) or tries a retry sooner. Each check moves the notification's next one on, in
 * the same conditional write, so two isolates checking at once send its jobs once.
 */
export async function resumeStalledNotifications(env: Bindings, now = Date.now()): Promise<number> {
  const { results: claimed } = await env.DB.prepare(
    `UPDATE notifications SET check_at = ?1
      WHERE id IN (SELECT id FROM notifications
                    WHERE (push_status = 'pending' OR email_status = 'pending') AND check_at < ?2 LIMIT ?3)
        AND check_at < ?2
      RETURNING id, push_status AS pushStatus, email_status AS emailStatus`,
  )
    .bind(now + NOTIFICATION_CHECK_EVERY_MS, now, NOTIFICATION_CHECK_BATCH)
    .all<{ id: string; pushStatus: string | null; emailStatus: string | null }>();
  const sent = await sendJobs(env, claimed);
  if (sent > 0) console.warn("sent notification jobs again", { jobs: sent });
  return sent;
}

/** Sends the notifications worker a push and an email job for each pending channel of these; answers how many. */
async function sendJobs(
  env: Bindings,
  rows: { id: string; pushStatus: string | null; emailStatus: string | null }[],
): Promise<number> {
  const jobs: NotificationJob[] = rows.flatMap((row) => [
    ...(row.pushStatus === "pending" ? [{ notificationId: row.id, channel: "push" as const }] : []),
    ...(row.emailStatus === "pending" ? [{ notificationId: row.id, channel: "email" as const }] : []),
  ]);
  for (const batch of chunks(jobs, 100)) await env.NOTIFICATIONS.sendBatch(batch.map((body) => ({ body })));
  return jobs.length;
}

/** The room an event belongs to: a room event's own, else its data's `roomId`, else its conversation's room. */
export function roomOfEvent(event: ParleyEvent): string | null {
  if (event.resource === "room") return event.resourceId;
  const data = event.data as { roomId?: unknown; conversationId?: unknown } | null;
  if (data && typeof data.roomId === "string") return data.roomId;
  const conversationId =
    event.resource === "conversation"
      ? event.resourceId
      : data && typeof data.conversationId === "string"
        ? data.conversationId
        : null;
  return conversationId ? roomIdOfConversation(conversationId) : null;
}

/** The author of an event, when it has one (messages and message streams carry `authorId`). */
export function authorOfEvent(event: ParleyEvent): string | null {
  const data = event.data as { authorId?: unknown } | null;
  return data && typeof data.authorId === "string" ? data.authorId : null;
}
