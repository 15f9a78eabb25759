// The floor of `npm run bench:attachments`: the least a Worker can do to store and serve a file on R2. PUT
// /objects/{key} puts the request body as it is (its Content-Length makes it a stream R2 accepts); GET /objects/{key}
// streams the object back. No auth, no validation, no hashing, no D1; only a type and a length (without a type,
// `wrangler dev`'s proxy sends the body chunked and several times slower, which would flatter Parley).
export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    if (pathname === "/healthz") return new Response("ok");
    const match = /^\/objects\/([A-Za-z0-9._-]{1,128})$/.exec(pathname);
    if (!match) return new Response("not found", { status: 404 });
    if (request.method === "PUT") {
      const object = await env.BUCKET.put(match[1], request.body);
      return Response.json({ key: object.key, size: object.size }, { status: 201 });
    }
    if (request.method === "GET") {
      const object = await env.BUCKET.get(match[1]);
      if (!object) return new Response("not found", { status: 404 });
      return new Response(object.body, {
        headers: { "content-type": "application/octet-stream", "content-length": String(object.size) },
      });
    }
    return new Response("method not allowed", { status: 405 });
  },
};
