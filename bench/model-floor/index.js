// The floor of `npm run bench:assistant`: the least a Worker can do to relay a model's streamed reply to a socket on
// this runtime. One hibernating Durable Object holds a socket per slot (`GET /sockets/{slot}`, an upgrade);
// `POST /streams/{slot}` with { model, prompt } makes it ask OPENAI_BASE_URL for a streamed chat completion and send
// each content delta to that slot's socket as it comes, as `{"delta"}` frames, then `{"done":true}`. No queue, no
// Workflow, no D1, no storage, no auth, no batching: what is left of a first token's time is the runtime's own.
import { DurableObject } from "cloudflare:workers";

export class FloorRoom extends DurableObject {
  async fetch(request) {
    const { pathname } = new URL(request.url);
    const slot = pathname.split("/").pop();
    if (pathname.startsWith("/sockets/")) {
      const [client, server] = Object.values(new WebSocketPair());
      this.ctx.acceptWebSocket(server, [slot]);
      return new Response(null, { status: 101, webSocket: client });
    }
    const { model, prompt } = await request.json();
    const ws = this.ctx.getWebSockets(slot)[0];
    if (!ws) return new Response("no socket for this slot", { status: 404 });
    this.ctx.waitUntil(this.relay(ws, model, prompt));
    return new Response(null, { status: 202 });
  }

  async relay(ws, model, prompt) {
    const res = await fetch(`${this.env.OPENAI_BASE_URL.replace(/\/+$/, "")}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({ model, stream: true, messages: [{ role: "user", content: prompt }] }),
    });
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk, { stream: true });
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const data = buffer.slice(0, end).replace(/^data: /, "");
        buffer = buffer.slice(end + 2);
        if (data === "[DONE]") continue;
        const delta = JSON.parse(data).choices[0]?.delta?.content;
        if (delta) ws.send(JSON.stringify({ delta }));
      }
    }
    ws.send(JSON.stringify({ done: true }));
  }

  webSocketMessage(ws, message) {
    if (message === '{"type":"ping"}') ws.send('{"type":"pong"}');
  }
}

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    if (pathname === "/healthz") return new Response("ok");
    if (!/^\/(sockets|streams)\/\d{1,4}$/.test(pathname)) return new Response("not found", { status: 404 });
    return env.ROOM.get(env.ROOM.idFromName("floor")).fetch(request);
  },
};
