import type { OutboxRow } from "./storage";

/** Which delivery an outbox drain marks: the events queue, or the org hub. */
export type OutboxSink = "queued" | "published";

const BATCH_ROWS = 100;
const utf8 = new TextEncoder();

/**
 * Drains one sink of a room's transactional outbox: rows go out in id order, in batches within a byte budget, and
 * are marked once the sink accepted them; rows both sinks have are deleted. One drain runs at a time; a failure
 * halves the next batch (so one bad batch never blocks the rows behind it) and asks for a retry after a backoff.
 */
export class OutboxDrain {
  private running = false;
  private again = false;
  private failures = 0;
  private limit = BATCH_ROWS;

  constructor(
    private readonly sql: SqlStorage,
    private readonly sink: OutboxSink,
    private readonly maxBytes: number,
    private readonly send: (bodies: string[]) => Promise<void>,
    private readonly retryIn: (delayMs: number) => Promise<void>,
  ) {}

  /** Runs the drain until the sink has every row, or a send fails. */
  async run(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      do {
        this.again = false;
        const rows = this.sql
          .exec<OutboxRow>(`SELECT id, body FROM outbox WHERE ${this.sink} = 0 ORDER BY id LIMIT ?`, this.limit)
          .toArray();
        if (rows.length === 0) break;
        const batch: OutboxRow[] = [];
        let bytes = 0;
        for (const row of rows) {
          const size = utf8.encode(row.body).byteLength;
          if (batch.length > 0 && bytes + size > this.maxBytes) break;
          batch.push(row);
          bytes += size;
        }
        await this.send(batch.map((row) => row.body));
        const last = batch[batch.length - 1].id;
        this.sql.exec(`UPDATE outbox SET ${this.sink} = 1 WHERE ${this.sink} = 0 AND id <= ?`, last);
        this.sql.exec("DELETE FROM outbox WHERE queued = 1 AND published = 1 AND id <= ?", last);
        this.failures = 0;
        this.limit = BATCH_ROWS;
        if (batch.length < rows.length || rows.length === BATCH_ROWS) this.again = true;
      } while (this.again);
    } catch (error) {
      this.failures++;
      this.limit = Math.max(1, Math.floor(this.limit / 2));
      const delay = Math.min(2_000 * 2 ** (this.failures - 1), 60_000);
      console.error(`room outbox (${this.sink}) drain failed; retrying`, { delay, error: String(error) });
      await this.retryIn(delay);
    } finally {
      this.running = false;
    }
  }

  /** Whether rows are waiting for this sink. */
  pending(): number {
    return this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM outbox WHERE ${this.sink} = 0`).one().n;
  }
}
