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
  /** The text so far. */
  text: string;
  /** How much of `text` storage has, and whether storage must be rewritten from the start (after a resync). */
  saved: number;
  rewrite: boolean;
  /** When the text was last saved (ms). */
  savedAt: number;
}

/**
 * How often a stream's text is saved while it streams. Each save is a write, and a room commits every write before
 * its later sends go out: saving every delta made one commit per delta, the limit of a room with many streams. An
 * eviction loses at most this much of a stream's text from the room; the assistant step, which has the whole text,
 * puts it back (`resync`), so clients and the posted message lose nothing.
 */
export const SAVE_EVERY_MS = 250;

/**
 * The streams in flight of a room: in memory, saved to SQLite at most every `SAVE_EVERY_MS` per stream (a row per
 * stream, and a row per save holding the text since the save before, keyed by the index of its last delta). After an
 * eviction the saved state is loaded again.
 */
export class StreamLog {
  private readonly cache = new Map<string, StreamState>();

  constructor(private readonly sql: SqlStorage) {}

  /** Opens a stream, or restarts one that is open: its indexes go on, its text starts again. */
  open(streamId: string, conversationId: string, authorId: string): StreamState {
    const current = this.get(streamId);
    if (!current) {
      // Nothing to store before the first delta: a write here would hold that delta's send until it is durable.
      const state: StreamState = {
        streamId,
        conversationId,
        authorId,
        next: 0,
        restarted: false,
        stored: false,
        text: "",
        saved: 0,
        rewrite: false,
        savedAt: 0,
      };
      this.cache.set(streamId, state);
      return state;
    }
    if (!current.stored) return current;
    this.sql.exec("DELETE FROM stream_chunks WHERE stream_id = ?", streamId);
    this.sql.exec(
      "UPDATE streams SET base_index = ?, restarted = 1, updated_at = ? WHERE stream_id = ?",
      current.next,
      new Date().toISOString(),
      streamId,
    );
    Object.assign(current, { restarted: true, text: "", saved: 0, rewrite: false });
    return current;
  }

  /**
   * Puts a stream back in step with its writer, who has sent `text` so far and expects the next delta to get `index`:
   * after an eviction the room may have lost the last unsaved deltas. The next delta carries the whole text.
   */
  resync(state: StreamState, index: number, text: string): void {
    Object.assign(state, { next: index, text, restarted: true, saved: 0, rewrite: true });
  }

  /**
   * Appends a delta (its index is the state's `next`); answers whether it wrote. Call it after the delta's event is
   * sent: the write it may make holds the sends that follow it, not this one.
   */
  append(state: StreamState, delta: string, now = Date.now()): boolean {
    if (!state.stored) {
      this.sql.exec(
        "INSERT INTO streams (stream_id, conversation_id, author_id, updated_at) VALUES (?, ?, ?, ?)",
        state.streamId,
        state.conversationId,
        state.authorId,
        new Date(now).toISOString(),
      );
    }
    const wasRestarted = state.restarted;
    Object.assign(state, { text: state.text + delta, next: state.next + 1, restarted: false });
    if (state.stored && !state.rewrite && now - state.savedAt < SAVE_EVERY_MS) return false;
    if (state.rewrite) this.sql.exec("DELETE FROM stream_chunks WHERE stream_id = ?", state.streamId);
    this.sql.exec(
      "INSERT INTO stream_chunks (stream_id, idx, delta) VALUES (?, ?, ?)",
      state.streamId,
      state.next - 1,
      state.text.slice(state.saved),
    );
    if (wasRestarted || state.rewrite) {
      this.sql.exec("UPDATE streams SET restarted = 0 WHERE stream_id = ?", state.streamId);
    }
    Object.assign(state, { stored: true, saved: state.text.length, rewrite: false, savedAt: now });
    return true;
  }

  /** A stream's state, or null. */
  get(streamId: string): StreamState | null {
    const cached = this.cache.get(streamId);
    if (cached) return cached;
    const row = this.sql.exec<StreamRow>("SELECT * FROM streams WHERE stream_id = ?", streamId).toArray()[0];
    return row ? this.load(row) : null;
  }

  /** Forgets a stream (inside the transaction that closes it). */
  remove(streamId: string): void {
    this.sql.exec("DELETE FROM stream_chunks WHERE stream_id = ?", streamId);
    this.sql.exec("DELETE FROM streams WHERE stream_id = ?", streamId);
    this.cache.delete(streamId);
  }

  /** The streams that have sent at least one delta. */
  active(): StreamState[] {
    return this.sql
      .exec<StreamRow>("SELECT * FROM streams ORDER BY stream_id")
      .toArray()
      .map((row) => this.cache.get(row.stream_id) ?? this.load(row))
      .filter((state) => state.next > 0);
  }

  /** Drops the cache (after a transaction rolled back): what was not saved is put back by `resync`. */
  reset(): void {
    this.cache.clear();
  }

  /** A stream as storage has it, kept in the cache. */
  private load(row: StreamRow): StreamState {
    const chunks = this.sql
      .exec<{ idx: number; delta: string }>(
        "SELECT idx, delta FROM stream_chunks WHERE stream_id = ? ORDER BY idx",
        row.stream_id,
      )
      .toArray();
    const text = chunks.map((chunk) => chunk.delta).join("");
    const state: StreamState = {
      streamId: row.stream_id,
      conversationId: row.conversation_id,
      authorId: row.author_id,
      next: chunks.length === 0 ? row.base_index : chunks[chunks.length - 1].idx + 1,
      restarted: row.restarted === 1,
      stored: true,
      text,
      saved: text.length,
      rewrite: false,
      savedAt: 0,
    };
    this.cache.set(row.stream_id, state);
    return state;
  }
}
