import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call, createFixture, post } from "../helpers/api";
import { KEEP_DELIVERED_MS } from "../../src/room/outbox";

describe("room storage migrations", () => {
  it("brings a room stored by older code (single-sink outbox, no schema version) up to date on start", async () => {
    const f = await createFixture();
    await post(f.apiKey, f.conversation.id, { text: "before", authorId: f.alice.id });
    const stub = env.ROOMS.get(env.ROOMS.idFromName(f.room.id));
    // Put the storage back in the shape the first release wrote: the outbox without its sink columns, participants
    // without their deleted flag, no version.
    await runInDurableObject(stub, (_instance: unknown, state: DurableObjectState) => {
      state.storage.sql.exec(`DROP TABLE schema_version;
        DROP TABLE outbox;
        CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
        ALTER TABLE participants DROP COLUMN deleted;`);
    });
    await evictDurableObject(stub);

    const posted = await post(f.apiKey, f.conversation.id, { text: "after", authorId: f.alice.id });
    expect(posted.status, JSON.stringify(posted.body)).toBe(201);
    expect(posted.body.seq).toBe(2);
    const history = await call("GET", `/v1/conversations/${f.conversation.id}/messages`, { token: f.apiKey });
    expect(history.body.items.map((m: { text: string }) => m.text)).toEqual(["before", "after"]);
    const columns = await runInDurableObject(stub, (_instance: unknown, state: DurableObjectState) =>
      state.storage.sql
        .exec<{ name: string }>("SELECT name FROM pragma_table_info('outbox')")
        .toArray()
        .map((c) => c.name),
    );
    expect(columns).toEqual(expect.arrayContaining(["queued", "published"]));
    const participantColumns = await runInDurableObject(stub, (_instance: unknown, state: DurableObjectState) =>
      state.storage.sql
        .exec<{ name: string }>("SELECT name FROM pragma_table_info('participants')")
        .toArray()
        .map((c) => c.name),
    );
    expect(participantColumns).toContain("deleted");
    // The indexes of unsent rows that a later migration dropped are gone too.
    const indexes = await runInDurableObject(stub, (_instance: unknown, state: DurableObjectState) =>
      state.storage.sql
        .exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'")
        .toArray(),
    );
    expect(indexes).toEqual([]);
  });
});

describe("unknown rooms", () => {
  it("answers 404 for a room id never created, without giving its object any storage", async () => {
    const f = await createFixture();
    const unknown = "room_01m7zzzzzzzzzzzzzzzzzzzzzz";
    const response = await call("GET", `/v1/rooms/${unknown}`, { token: f.apiKey });
    expect(response.status).toBe(404);
    expect(
      (await call("GET", `/v1/conversations/conv_01m7zzzzzzzzzzzzzzzzzzzzzz0123456789/messages`, { token: f.apiKey }))
        .status,
    ).toBe(404);
    const stub = env.ROOMS.get(env.ROOMS.idFromName(unknown));
    const tables = await runInDurableObject(stub, (_instance: unknown, state: DurableObjectState) =>
      state.storage.sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'").toArray(),
    );
    expect(tables).toEqual([]);
  });
});

describe("the room's outbox", () => {
  it("marks what both sinks have with the next commit (or within about a second), and deletes it once kept", async () => {
    const f = await createFixture();
    const stub = env.ROOMS.get(env.ROOMS.idFromName(f.room.id));
    const rows = () =>
      runInDurableObject(stub, (_instance: unknown, state: DurableObjectState) =>
        state.storage.sql
          .exec<{ marked: number; unmarked: number }>(
            "SELECT count(*) FILTER (WHERE o.id <= d.id) AS marked, count(*) FILTER (WHERE o.id > d.id) AS unmarked " +
              "FROM outbox AS o, outbox_delivered AS d",
          )
          .one(),
      );
    const drained = async () => {
      for (let i = 0; i < 100 && (await (stub as any).pendingEvents()) > 0; i++) await scheduler.wait(20);
      expect(await (stub as any).pendingEvents()).toBe(0);
    };
    await post(f.apiKey, f.conversation.id, { text: "one", authorId: f.alice.id });
    await drained();
    // The next commit marks the delivered rows in its own transaction: kept, not deleted.
    await post(f.apiKey, f.conversation.id, { text: "two", authorId: f.alice.id });
    const after = await rows();
    expect(after.marked).toBeGreaterThan(0);
    expect(after.unmarked).toBe(1);
    await drained();
    const start = Date.now();
    let left = await rows();
    while (left.marked + left.unmarked > 0 && Date.now() - start < KEEP_DELIVERED_MS + 5_000) {
      await scheduler.wait(200);
      left = await rows();
    }
    expect(left).toEqual({ marked: 0, unmarked: 0 });
    // Not before it was kept its while.
    expect(Date.now() - start).toBeGreaterThan(KEEP_DELIVERED_MS - 1_000);
  });
});
