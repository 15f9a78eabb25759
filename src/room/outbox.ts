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

/** How long a room must be quiet before rows both sinks have are deleted by a write of their own. */
const PRUNE_AFTER_MS = 1_000;

/**
 * Drains a room's transactional outbox to both sinks in one pass: rows go out in id order to the queue and the hub
 * at the same time. A sink that fails keeps its rows (the other marks what it took), the next batch is halved so one
 * bad batch never blocks the rows behind it, and a retry is asked for after a backoff. One drain runs at a time;
 * writes during a drain make it go round again.
 *
 * Rows both sinks accepted are deleted by the room's next write (`prune` inside its transaction, or in the same turn
 * as a stream delta's row), or once no drain has come for `PRUNE_AFTER_MS`: a write of its own after every drain
 * would cost each message a second commit.
 * Until then they are only remembered in memory; an object that restarts meanwhile sends them again, which both
 * sinks already take (the consumer is idempotent, the hub drops what a conversation already had).
 */
export class Outbox {
  private running = false;
  private again = false;
  private failures = 0;
  private limit = BATCH_ROWS;
  /** The last id both sinks have (in this incarnation), and the last id deleted. */
  private delivered = 0;
  private pruned = 0;
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
   * (Re)arms the deletion of delivered rows for when no drain has come for `PRUNE_AFTER_MS` (and no commit deleted
   * them meanwhile). A write of its own holds the room's sends until it is durable, so it waits for a pause.
   */
  private pruneWhenQuiet(): void {
    this.drainedAt = Date.now();
    if (this.delivered <= this.pruned || this.pruneTimer !== null) return;
    // One timer, not one per drain: when it fires early (drains came meanwhile) it waits for the rest.
    const fire = () => {
      const quietFor = Date.now() - this.drainedAt;
      if (quietFor < PRUNE_AFTER_MS) {
        this.pruneTimer = setTimeout(fire, PRUNE_AFTER_MS - quietFor);
        return;
      }
      this.pruneTimer = null;
      this.prune();
    };
    this.pruneTimer = setTimeout(fire, PRUNE_AFTER_MS);
  }

  /** Deletes the rows both sinks have; the room calls it inside its commits. */
  prune(): void {
    if (this.delivered <= this.pruned) return;
    this.sql.exec("DELETE FROM outbox WHERE id <= ?", this.delivered);
    this.pruned = this.delivered;
  }

  /** After a rolled-back commit: its prune did not happen. */
  rolledBack(): void {
    this.pruned = 0;
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
