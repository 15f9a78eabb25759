import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Outbox } from "../../src/room/outbox";
import { createFixture } from "../helpers/api";

describe("the outbox drain", () => {
  it("sends a quiet room's row at once, and what a busy room commits meanwhile together, each row once in order", async () => {
    const f = await createFixture();
    const stub = env.ROOMS.get(env.ROOMS.idFromName(f.room.id));
    await runInDurableObject(stub, async (_instance: unknown, state: DurableObjectState) => {
      const sql = state.storage.sql;
      // The room's own rows (its creation events) are not this test's: once its own drain has sent them (so it has
      // nothing under way that could take a test row), an outbox of test rows only.
      const unsent = () =>
        sql.exec<{ n: number }>("SELECT count(*) AS n FROM outbox WHERE queued = 0 OR published = 0");
      for (let i = 0; i < 200 && unsent().one().n > 0; i++) await scheduler.wait(10);
      expect(unsent().one().n).toBe(0);
      sql.exec("DELETE FROM outbox");
      const queued: string[][] = [];
      const published: string[][] = [];
      const outbox = new Outbox(
        sql,
        {
          queue: async (bodies) => void queued.push(bodies),
          hub: async (bodies) => void published.push(bodies),
        },
        async () => {},
      );
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
