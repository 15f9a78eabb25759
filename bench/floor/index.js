// The floor of `npm run bench:realtime`: the least a hibernating Durable Object room can do. It accepts every
// WebSocket upgrade on /rooms/{name} (no auth, no state), and sends each frame it receives, as it is, to every other
// socket of the room. Nothing else: no parsing, no storage, no subscriptions.
import { DurableObject } from "cloudflare:workers";

export class FloorRoom extends DurableObject {
  async fetch() {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  webSocketMessage(ws, message) {
    for (const peer of this.ctx.getWebSockets()) {
      if (peer === ws) continue;
      try {
        peer.send(message);
      } catch {
        // closing
      }
    }
  }

  webSocketClose(ws, code, reason) {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // already closed
    }
  }
}

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    if (pathname === "/healthz") return new Response("ok");
    const match = /^\/rooms\/([A-Za-z0-9_-]{1,64})$/.exec(pathname);
    if (match && request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return env.ROOMS.get(env.ROOMS.idFromName(match[1])).fetch(request);
    }
    return new Response("not found", { status: 404 });
  },
};
