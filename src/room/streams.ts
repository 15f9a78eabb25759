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
  /** Whether the stream has its row in storage (written with the stream's first save). */
  stored: boolean;
  /** Whether the stored row says the stream restarted (its next delta, after a reset, carries the whole text). */
  storedRestarted: boolean;
  /** The text so far. */
  text: string;
  /** How much of `text` storage has, and whether storage must be rewritten from the start (after a resync). */
  saved: number;
  rewrite: boolean;
}

/**
 * How often the text of a room's streams is saved while they stream. Each save is a write, and a room commits every
 * write before its later sends go out: saving every delta made one commit per delta, the limit of a room with many
 * streams. A save writes every stream that changed since the one before, in one commit, and the first comes this long
 * after a delta (not with a stream's first delta: 50 replies starting at once made 50 commits just as their first
 * tokens went out). Only a reset loses what was not saved (an eviction waits for the reply's call to end): the reset
 * fails that call, and the step's retry restarts the stream (or opens it again past the indexes it may have sent,
 * when it was reset before its first save) and asks the model again; its first delta carries the whole new text.
 */
export const SAVE_EVERY_MS = 250;

/**
 * How far a stream read back from storage moves its next index past its last saved delta: the deltas sent since that
 * save (the reply sends at most one every 30 ms, and a save follows the first unsaved delta within 250 ms) were lost
 * with the room's memory, and their indexes are never given again. The next delta carries the whole text.
 */
export const UNSAVED_INDEXES = 32;

/**
 * The streams in flight of a room: in memory, saved to SQLite at most every `SAVE_EVERY_MS` (a row per stream, and a
 * row per save holding the text since the save before, keyed by the index of its last delta). After a reset the saved
 * state is loaded again.
 */
export class StreamLog {
  private readonly cache = new Map<string, StreamState>();
  /** The streams with deltas not saved yet, and when the next save is due (ms). */
  private readonly unsaved = new Set<StreamState>();
  private saveAt = Infinity;

  constructor(private readonly sql: SqlStorage) {}

  /**
   * Opens a stream, or restarts one that is open: its indexes go on, its text starts again. A stream opened again
   * after its room forgot it (`retried`: a reset before its first save) may have sent indexes already: it starts
   * past them, as one read back from storage does, its first delta carrying the whole text.
   */
  open(streamId: string, conversationId: string, authorId: string, retried = false): StreamState {
    const current = this.get(streamId);
    if (!current) {
      // Nothing to store yet: a write here would hold the sends that follow until it is durable.
      const state: StreamState = {
        streamId,
        conversationId,
        authorId,
        next: retried ? UNSAVED_INDEXES : 0,
        restarted: retried,
        stored: false,
        storedRestarted: false,
        text: "",
        saved: 0,
        rewrite: false,
      };
      this.cache.set(streamId, state);
      return state;
    }
    if (current.stored) {
      this.sql.exec("DELETE FROM stream_chunks WHERE stream_id = ?", streamId);
      this.sql.exec(
        "UPDATE streams SET base_index = ?, restarted = 1, updated_at = ? WHERE stream_id = ?",
        current.next,
        new Date().toISOString(),
        streamId,
      );
      current.storedRestarted = true;
    }
    // A stream that sent nothing has nothing to restart.
    if (current.next > 0) Object.assign(current, { restarted: true, text: "", saved: 0, rewrite: false });
    return current;
  }

  /**
   * Puts a stream back in step with the reply in flight, which has sent `text` so far and expects the next delta to
   * get `index`: a stream read back from storage lacks its deltas since the last save. The next delta carries the
   * whole text.
   */
  resync(state: StreamState, index: number, text: string): void {
    Object.assign(state, { next: index, text, restarted: true, saved: 0, rewrite: true });
  }

  /**
   * Appends a delta (its index is the state's `next`); saves the room's streams when a save is due, and answers
   * whether it wrote. Call it after the delta's event is sent: the write it may make holds the sends that follow it,
   * not this one.
   */
  append(state: StreamState, delta: string, now = Date.now()): boolean {
    Object.assign(state, { text: state.text + delta, next: state.next + 1, restarted: false });
    if (!this.unsaved.has(state)) {
      this.unsaved.add(state);
      this.saveAt = Math.min(this.saveAt, now + SAVE_EVERY_MS);
    }
    if (now < this.saveAt) return false;
    for (const unsaved of this.unsaved) this.save(unsaved, now);
    this.unsaved.clear();
    this.saveAt = Infinity;
    return true;
  }

  /** Writes what storage does not have of a stream: its row, the text since its last save, its restart flag. */
  private save(state: StreamState, now: number): void {
    if (!state.stored) {
      this.sql.exec(
        "INSERT INTO streams (stream_id, conversation_id, author_id, updated_at) VALUES (?, ?, ?, ?)",
        state.streamId,
        state.conversationId,
        state.authorId,
        new Date(now).toISOString(),
      );
    }
    if (state.rewrite) this.sql.exec("DELETE FROM stream_chunks WHERE stream_id = ?", state.streamId);
    this.sql.exec(
      "INSERT INTO stream_chunks (stream_id, idx, delta) VALUES (?, ?, ?)",
      state.streamId,
      state.next - 1,
      state.text.slice(state.saved),
    );
    if (state.storedRestarted && !state.restarted) {
      this.sql.exec("UPDATE streams SET restarted = 0 WHERE stream_id = ?", state.streamId);
    }
    Object.assign(state, { stored: true, storedRestarted: state.restarted, saved: state.text.length, rewrite: false });
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
    const state = this.cache.get(streamId);
    if (state) this.unsaved.delete(state);
    this.sql.exec("DELETE FROM stream_chunks WHERE stream_id = ?", streamId);
    this.sql.exec("DELETE FROM streams WHERE stream_id = ?", streamId);
    this.cache.delete(streamId);
  }

  /** The streams that have sent at least one delta, saved or not. */
  active(): StreamState[] {
    for (const row of this.sql.exec<StreamRow>("SELECT * FROM streams").toArray()) {
      if (!this.cache.has(row.stream_id)) this.load(row);
    }
    return [...this.cache.values()]
      .filter((state) => state.next > 0)
      .sort((a, b) => (a.streamId < b.streamId ? -1 : a.streamId > b.streamId ? 1 : 0));
  }

  /**
   * After a transaction rolled back: drops what storage has (it is read again; the reply in flight puts back the
   * deltas not saved with `resync`), and keeps the streams not saved yet, which no transaction wrote.
   */
  reset(): void {
    for (const [streamId, state] of this.cache) {
      if (!state.stored) continue;
      this.cache.delete(streamId);
      this.unsaved.delete(state);
    }
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
      next: (chunks.length === 0 ? row.base_index : chunks[chunks.length - 1].idx + 1) + UNSAVED_INDEXES,
      // Its clients may have had deltas that storage lacks: the next delta carries the whole text.
      restarted: true,
      stored: true,
      storedRestarted: row.restarted === 1,
      text,
      saved: text.length,
      rewrite: false,
    };
    this.cache.set(row.stream_id, state);
    return state;
  }
}
