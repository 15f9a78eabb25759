// The durable floor of `npm run bench:realtime` (opt-in): the floor (index.js), except that each frame is first
// written as one row to the object's SQLite storage. The runtime holds the broadcast (its output gate) until that
// write is durable, as it holds any room's sends that follow a write: the least a room that commits each message
// before broadcasting it can cost.
import worker, { FloorRoom } from "./index.js";

export class DurableFloorRoom extends FloorRoom {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, body TEXT NOT NULL)");
  }

  webSocketMessage(ws, message) {
    this.ctx.storage.sql.exec("INSERT INTO messages (body) VALUES (?)", message);
    super.webSocketMessage(ws, message);
  }
}

export default worker;
