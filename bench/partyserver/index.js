// The partyserver room of `npm run bench:realtime`: what a Workers developer writes with partyserver, the usual
// choice for a realtime room. A `Server` subclass with hibernation on, whose onMessage broadcasts the frame to every
// other connection. Clients connect to /parties/bench-room/{name} (routePartykitRequest); `?_pk=` names a connection.
import { routePartykitRequest, Server } from "partyserver";

export class BenchRoom extends Server {
  static options = { hibernate: true };

  onMessage(connection, message) {
    this.broadcast(message, [connection.id]);
  }
}

export default {
  async fetch(request, env) {
    if (new URL(request.url).pathname === "/healthz") return new Response("ok");
    return (await routePartykitRequest(request, env)) || new Response("not found", { status: 404 });
  },
};
