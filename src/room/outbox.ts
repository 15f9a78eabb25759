import { utf8Length } from "../lib/bytes";
import { Pace } from "../lib/pace";
import type { OutboxRow } from "./storage";

/** Where outbox rows go: the events queue (`queued`) and the org hub (`published`), each with its own flag. */
export interface OutboxSinks {
  /** Sends rows to the events queue; the batch respects the queue's limit in bytes. */
  queue(bodies: string[]): Promise<void>;
  /** Publishes rows to the org hub. */
  hub(bodies: string[]): Promise<void>;
}

interface Row extends OutboxRow {
  queued: number;
  published: number;
}

const BATCH_ROWS = 100;
const QUEUE_BATCH_BYTES = 200 * 1024; // the queue takes 256 KB a batch

/**
 * The least time between two sends of a drain. A quiet room's event goes at once; a busy room's go in batches (each
 * send is a queue call and a hub call: at one per commit, they were a third of a room's work at 400 msg/s).
 */
const DRAIN_EVERY_MS = 5;

/** How long a room must be quiet before rows both sinks have are marked (or deleted) by a write of their own. */
const PRUNE_AFTER_MS = 1_000;

/**
 * How long rows both sinks took are kept, marked as delivered, before they are deleted. A sink that took a row may
 * still lose it: the local queue keeps its messages in memory while it gathers a batch (up to a second) and until its
 * consumer acks them, so a restart of `wrangler dev` (even Ctrl-C) lost the events of the last moment: their
 * notifications, and the D1 mirror of their conversations. An object that starts sends the marked rows it still has
 * (those up to `outbox_delivered`) to the queue again (its consumer is idempotent), and only the rows past them to
 * the hub as well, whose sockets must not get an event twice. Kept rows cost a busy room: 10 s of them (50,000 rows at
 * 5,000 msg/s) lowered a 2-member room's delivery ceiling by a third (measured); 3 s did not.
 */
export const KEEP_DELIVERED_MS = 3_000;

/**
 * Drains a room's transactional outbox to both sinks in one pass: rows go out in id order to the queue and the hub
 * at the same time. A sink that fails keeps its rows (the other marks what it took), the next batch is halved so one
 * bad batch never blocks the rows behind it, and a retry is asked for after a backoff. One drain runs at a time;
 * writes during a drain make it go round again.
 *
 * Rows both sinks accepted are marked delivered by the room's next write (`prune` inside its transaction, or in the
 * same turn as a stream delta's row), or once no drain has come for `PRUNE_AFTER_MS`: a write of its own after every
 * drain would cost each message a second commit. Marked rows are deleted the same way once kept `KEEP_DELIVERED_MS`.
 * Until they are marked they are only remembered in memory; an object that restarts meanwhile sends them again to
 * both sinks, which take them twice without harm (the consumer is idempotent, the hub drops what a conversation
 * already had); marked rows it sends again to the queue only (see `KEEP_DELIVERED_MS`).
 */
export class Outbox {
  private running = false;
  private again = false;
  private failures = 0;
  private limit = BATCH_ROWS;
  /** The last id both sinks have (in this incarnation), the last id marked delivered, and the last id deleted. */
  private delivered = 0;
  private marked = 0;
  private pruned = 0;
  /** Ids marked delivered, and when: rows up to one marked `KEEP_DELIVERED_MS` ago may be deleted. */
  private marks: { id: number; at: number }[] = [];
  /** What a prune inside a transaction changed, to undo if the transaction rolls back. */
  private beforePrune: { marked: number; pruned: number; marks: { id: number; at: number }[] } | null = null;
  /** Whether this incarnation has yet to send the queue the rows an earlier one marked (see `KEEP_DELIVERED_MS`). */
  private requeue = true;
  private pruneTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly pace = new Pace(DRAIN_EVERY_MS);
  /** When the last drain delivered rows (ms). */
  private drainedAt = 0;

  constructor(
    private readonly sql: SqlStorage,
    private readonly sinks: OutboxSinks,
    private readonly retryIn: (delayMs: number) => Promise<void>,
  ) {}

  /** Runs the drain until both sinks have every row, or a send fails. */
  async drain(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      if (this.requeue) await this.requeueMarked();
      do {
        // A busy room sends at most every `DRAIN_EVERY_MS`: the rows committed meanwhile go in the same two sends.
        await this.pace.turn();
        this.again = false;
        const rows = this.sql
          .exec<Row>(
            "SELECT id, body, queued, published FROM outbox WHERE id > ? AND (queued = 0 OR published = 0) " +
              "ORDER BY id LIMIT ?",
            this.delivered,
            this.limit,
          )
          .toArray();
        if (rows.length === 0) break;
        const batch = withinBytes(rows, QUEUE_BATCH_BYTES);
        const toQueue = batch.filter((row) => row.queued === 0).map((row) => row.body);
        const toHub = batch.filter((row) => row.published === 0).map((row) => row.body);
        const [queued, published] = await Promise.allSettled([
          toQueue.length > 0 ? this.sinks.queue(toQueue) : Promise.resolve(),
          toHub.length > 0 ? this.sinks.hub(toHub) : Promise.resolve(),
        ]);
        const last = batch[batch.length - 1].id;
        if (queued.status === "fulfilled" && published.status === "fulfilled") {
          this.delivered = last;
          this.pruneWhenQuiet();
        } else {
          if (queued.status === "fulfilled") this.sql.exec("UPDATE outbox SET queued = 1 WHERE id <= ?", last);
          if (published.status === "fulfilled") this.sql.exec("UPDATE outbox SET published = 1 WHERE id <= ?", last);
          const failed = [queued, published].find((r): r is PromiseRejectedResult => r.status === "rejected");
          throw failed!.reason;
        }
        this.failures = 0;
        this.limit = BATCH_ROWS;
        if (batch.length < rows.length || rows.length === BATCH_ROWS) this.again = true;
      } while (this.again);
    } catch (error) {
      this.failures++;
      this.limit = Math.max(1, Math.floor(this.limit / 2));
      const delay = Math.min(2_000 * 2 ** (this.failures - 1), 60_000);
      console.error("room outbox drain failed; retrying", { delay, error: String(error) });
      await this.retryIn(delay);
    } finally {
      this.running = false;
    }
  }

  /**
   * Sends the queue, once per incarnation, the rows an earlier one marked delivered and still keeps: the queue that
   * took them may have lost them with a restart. The hub had them: the drain goes on after them. A failure leaves it
   * for the next drain.
   */
  private async requeueMarked(): Promise<void> {
    const marked = this.sql.exec<{ id: number }>("SELECT id FROM outbox_delivered").one().id;
    const rows = this.sql
      .exec<Row>("SELECT id, body, queued, published FROM outbox WHERE id <= ? ORDER BY id", marked)
      .toArray();
    for (let at = 0; at < rows.length;) {
      const batch = withinBytes(rows.slice(at, at + BATCH_ROWS), QUEUE_BATCH_BYTES);
      await this.sinks.queue(batch.map((row) => row.body));
      at += batch.length;
    }
    this.requeue = false;
    this.delivered = Math.max(this.delivered, marked);
    this.marked = Math.max(this.marked, marked);
    // Kept a while again from now, as if just delivered; deleted by a later prune.
    if (rows.length > 0) {
      this.marks.push({ id: rows[rows.length - 1].id, at: Date.now() });
      this.armPrune();
    }
  }

  /**
   * (Re)arms the next prune for when no drain has come for `PRUNE_AFTER_MS` (and no commit pruned meanwhile), or, with
   * nothing left to mark, for when the oldest mark has been kept long enough. A write of its own holds the room's sends
   * until it is durable, so it waits for a pause.
   */
  private pruneWhenQuiet(): void {
    this.drainedAt = Date.now();
    this.armPrune();
  }

  /** Arms the prune timer (see `pruneWhenQuiet`) unless it is armed or nothing waits for a prune. */
  private armPrune(): void {
    if (this.pruneTimer !== null || (this.delivered <= this.marked && this.marks.length === 0)) return;
    // One timer, not one per drain: when it fires early (drains came meanwhile) it waits for the rest.
    const fire = () => {
      if (this.delivered <= this.marked && this.marks.length === 0) {
        this.pruneTimer = null; // a commit pruned everything meanwhile
        return;
      }
      const now = Date.now();
      const quietFor = now - this.drainedAt;
      const due = this.delivered > this.marked ? PRUNE_AFTER_MS - quietFor : this.marks[0].at + KEEP_DELIVERED_MS - now;
      if (due > 0) {
        this.pruneTimer = setTimeout(fire, due);
        return;
      }
      this.pruneTimer = null;
      this.prune(now);
      this.beforePrune = null;
      this.armPrune();
    };
    this.pruneTimer = setTimeout(fire, PRUNE_AFTER_MS);
  }

  /**
   * Marks delivered the rows both sinks have, and deletes those marked `KEEP_DELIVERED_MS` ago; the room calls it
   * inside its commits.
   */
  prune(now = Date.now()): void {
    this.beforePrune = { marked: this.marked, pruned: this.pruned, marks: [...this.marks] };
    if (this.delivered > this.marked) {
      this.sql.exec("UPDATE outbox_delivered SET id = ?", this.delivered);
      this.marked = this.delivered;
      this.marks.push({ id: this.delivered, at: now });
    }
    let upTo = this.pruned;
    while (this.marks.length > 0 && this.marks[0].at <= now - KEEP_DELIVERED_MS) upTo = this.marks.shift()!.id;
    if (upTo <= this.pruned) return;
    this.sql.exec("DELETE FROM outbox WHERE id <= ?", upTo);
    this.pruned = upTo;
  }

  /** After a rolled-back commit: its prune did not happen. */
  rolledBack(): void {
    if (this.beforePrune) Object.assign(this, this.beforePrune);
    this.beforePrune = null;
  }

  /** How many rows wait for at least one sink. */
  pending(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM outbox WHERE id > ?", this.delivered).one().n;
  }
}

/** The leading rows whose bodies fit in `maxBytes` (always at least one). */
function withinBytes(rows: Row[], maxBytes: number): Row[] {
  let bytes = 0;
  let count = 0;
  for (const row of rows) {
    bytes += utf8Length(row.body);
    if (count > 0 && bytes > maxBytes) break;
    count++;
  }
  return rows.slice(0, count);
}
