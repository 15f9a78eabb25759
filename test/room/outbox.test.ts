import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { KEEP_DELIVERED_MS, Outbox } from "../../src/room/outbox";
import { createFixture } from "../helpers/api";

/** Runs `test` in a fixture room's object with an outbox of test rows only (the room's own rows sent and deleted). */
async function withTestOutbox(test: (sql: SqlStorage) => Promise<void>) {
  const f = await createFixture();
  const stub = env.ROOMS.get(env.ROOMS.idFromName(f.room.id));
  await runInDurableObject(stub, async (instance: any, state: DurableObjectState) => {
    const sql = state.storage.sql;
    // The room's own rows (its creation events) are not this test's: once its own drain has sent them (so it has
    // nothing under way that could take a test row), an outbox of test rows only.
    for (let i = 0; i < 200 && (await instance.pendingEvents()) > 0; i++) await scheduler.wait(10);
    expect(await instance.pendingEvents()).toBe(0);
    sql.exec("DELETE FROM outbox");
    await test(sql);
  });
}

/** An outbox over `sql` whose sinks record what they are sent. */
function recordingOutbox(sql: SqlStorage) {
  const queued: string[][] = [];
  const published: string[][] = [];
  const outbox = new Outbox(
    sql,
    { queue: async (bodies) => void queued.push(bodies), hub: async (bodies) => void published.push(bodies) },
    async () => {},
  );
  return { outbox, queued, published };
}

describe("the outbox drain", () => {
  it("sends a quiet room's row at once, and what a busy room commits meanwhile together, each row once in order", async () => {
    await withTestOutbox(async (sql) => {
      const { outbox, queued, published } = recordingOutbox(sql);
      const add = (body: string) => sql.exec("INSERT INTO outbox (body) VALUES (?)", body);

      add("a");
      await outbox.drain();
      expect(queued).toEqual([["a"]]);

      // Right after a send: the next drain waits a moment, and the rows committed meanwhile go with it.
      add("b");
      const first = outbox.drain();
      add("c");
      add("d");
      const second = outbox.drain(); // under way: it goes round again
      await Promise.all([first, second]);
      expect(queued).toEqual([["a"], ["b", "c", "d"]]);
      expect(published).toEqual(queued);
      expect(outbox.pending()).toBe(0);
    });
  });
});

describe("delivered outbox rows", () => {
  it("are kept, marked, for a while: a restarted object sends them to the queue again (not the hub), then deletes them", async () => {
    await withTestOutbox(async (sql) => {
      const add = (body: string) => sql.exec("INSERT INTO outbox (body) VALUES (?)", body);
      const rows = () => sql.exec<{ body: string }>("SELECT body FROM outbox ORDER BY id").toArray();
      const marked = () => sql.exec<{ id: number }>("SELECT id FROM outbox_delivered").one().id;
      const first = recordingOutbox(sql);
      add("a");
      add("b");
      await first.outbox.drain();
      // A commit marks what both sinks have: kept, not deleted.
      first.outbox.prune();
      expect(rows().map((row) => row.body)).toEqual(["a", "b"]);
      const lastId = sql.exec<{ id: number }>("SELECT max(id) AS id FROM outbox").one().id;
      expect(marked()).toBe(lastId);

      // The object restarts (a new outbox over the same storage), and commits one more row.
      const second = recordingOutbox(sql);
      add("c");
      await second.outbox.drain();
      expect(second.queued).toEqual([["a", "b"], ["c"]]);
      expect(second.published).toEqual([["c"]]);

      // Kept long enough: deleted by a later commit.
      second.outbox.prune();
      expect(rows().map((row) => row.body)).toEqual(["a", "b", "c"]);
      second.outbox.prune(Date.now() + KEEP_DELIVERED_MS + 1);
      expect(rows()).toEqual([]);
      expect(second.outbox.pending()).toBe(0);
    });
  });
});
