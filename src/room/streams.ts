import type { StreamRow } from "./storage";

/** An assistant reply in flight, as the room tracks it. */
export interface StreamState {
  streamId: string;
  conversationId: string;
  authorId: string;
  /** The index the next delta gets. */
  next: number;
  /** Whether the stream restarted and its next delta must carry the whole text. */
  restarted: boolean;
  /** Whether the stream has its row in storage (a new stream is written with its first delta). */
  stored: boolean;
}

/**
 * The streams in flight of a room, in its SQLite storage: one row per stream and one per delta, so appending costs
 * the delta's size whatever the length of the text. States are cached; the storage is the truth after an eviction.
 */
export class StreamLog {
  private readonly cache = new Map<string, StreamState>();

  constructor(private readonly sql: SqlStorage) {}

  /** Opens a stream, or restarts one that is open: its indexes go on, its text starts again. */
  open(streamId: string, conversationId: string, authorId: string): void {
    const current = this.get(streamId);
    const now = new Date().toISOString();
    if (!current) {
      // Nothing to store before the first delta: a write here would hold that delta's send until it is durable.
      this.cache.set(streamId, { streamId, conversationId, authorId, next: 0, restarted: false, stored: false });
      return;
    }
    if (!current.stored) return;
    this.sql.exec("DELETE FROM stream_chunks WHERE stream_id = ?", streamId);
    this.sql.exec(
      "UPDATE streams SET base_index = ?, restarted = 1, updated_at = ? WHERE stream_id = ?",
      current.next,
      now,
      streamId,
    );
    this.cache.set(streamId, { ...current, restarted: true });
  }

  /** Appends a delta to an open stream (its index is the state's `next`). */
  append(streamId: string, delta: string): void {
    const state = this.get(streamId);
    if (!state) return;
    if (!state.stored) {
      this.sql.exec(
        "INSERT INTO streams (stream_id, conversation_id, author_id, updated_at) VALUES (?, ?, ?, ?)",
        streamId,
        state.conversationId,
        state.authorId,
        new Date().toISOString(),
      );
    }
    this.sql.exec("INSERT INTO stream_chunks (stream_id, idx, delta) VALUES (?, ?, ?)", streamId, state.next, delta);
    if (state.restarted) this.sql.exec("UPDATE streams SET restarted = 0 WHERE stream_id = ?", streamId);
    this.cache.set(streamId, { ...state, next: state.next + 1, restarted: false, stored: true });
  }

  /** A stream's state, or null. */
  get(streamId: string): StreamState | null {
    const cached = this.cache.get(streamId);
    if (cached) return cached;
    const row = this.sql.exec<StreamRow>("SELECT * FROM streams WHERE stream_id = ?", streamId).toArray()[0];
    if (!row) return null;
    const state = this.fromRow(row);
    this.cache.set(streamId, state);
    return state;
  }

  /** The text of a stream so far. */
  text(streamId: string): string {
    return this.sql
      .exec<{ delta: string }>("SELECT delta FROM stream_chunks WHERE stream_id = ? ORDER BY idx", streamId)
      .toArray()
      .map((row) => row.delta)
      .join("");
  }

  /** Forgets a stream (inside the transaction that closes it). */
  remove(streamId: string): void {
    this.sql.exec("DELETE FROM stream_chunks WHERE stream_id = ?", streamId);
    this.sql.exec("DELETE FROM streams WHERE stream_id = ?", streamId);
    this.cache.delete(streamId);
  }

  /** The streams that have sent at least one delta, with their text so far. */
  active(): { state: StreamState; text: string }[] {
    return this.sql
      .exec<StreamRow>("SELECT * FROM streams ORDER BY stream_id")
      .toArray()
      .map((row) => this.cache.get(row.stream_id) ?? this.fromRow(row))
      .filter((state) => state.next > 0)
      .map((state) => ({ state, text: this.text(state.streamId) }));
  }

  /** Drops the cache (after a transaction rolled back). */
  reset(): void {
    this.cache.clear();
  }

  private fromRow(row: StreamRow): StreamState {
    const last = this.sql
      .exec<{ idx: number | null }>("SELECT max(idx) AS idx FROM stream_chunks WHERE stream_id = ?", row.stream_id)
      .one().idx;
    return {
      streamId: row.stream_id,
      conversationId: row.conversation_id,
      authorId: row.author_id,
      next: last === null ? row.base_index : last + 1,
      restarted: row.restarted === 1,
      stored: true,
    };
  }
}
