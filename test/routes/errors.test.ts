import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import {
  ADMIN_TOKEN,
  call,
  createAccount,
  createOrg,
  expectBadRequest,
  expectError,
  readResponse,
} from "../helpers/api";

const GENERATED_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Asserts the contract's error shape in full: exactly `code`, `message`, `requestId` and optional `details`. */
function expectErrorShape(response: { status: number; headers: Headers; body: any }, status: number, code: string) {
  expectError(response, status, code);
  expect(Object.keys(response.body)).toEqual(["error"]);
  for (const key of Object.keys(response.body.error)) {
    expect(["code", "message", "requestId", "details"]).toContain(key);
  }
  expect(response.body.error.message.length).toBeGreaterThan(0);
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  expect(response.headers.get("x-request-id")).toBe(response.body.error.requestId);
}

/** Asserts a 400 in the full error shape (request id header included) whose details name `path`. */
function expectDetail(response: { status: number; headers: Headers; body: any }, path: string) {
  expectErrorShape(response, 400, "BAD_REQUEST");
  expectBadRequest(response, path);
}

/** Sends a raw request to the worker, with a body exactly as given. */
async function raw(method: string, path: string, init: { headers?: Record<string, string>; body?: BodyInit } = {}) {
  return readResponse(
    await SELF.fetch(`https://parley.test${path}`, { method, headers: init.headers, body: init.body }),
  );
}

describe("unknown routes", () => {
  it("answer 404 NOT_FOUND in the error shape without credentials", async () => {
    for (const path of ["/nope", "/v1", "/v1/nope", "/v1/accounts/acc_0123456789abcdef/nope", "/v2/orgs"]) {
      const response = await call("GET", path);
      expectErrorShape(response, 404, "NOT_FOUND");
    }
    const posted = await call("POST", "/v1/nope", { body: { a: 1 } });
    expectErrorShape(posted, 404, "NOT_FOUND");
  });

  it("answer 404 NOT_FOUND with every kind of credential, never 401 or 403", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const token = (await call("POST", "/v1/tokens", { token: org.apiKey, body: { accountId: account.id } })).body.token;
    for (const credential of [org.apiKey, ADMIN_TOKEN, token, "sk_not-a-real-key", "garbage"]) {
      const get = await call("GET", "/v1/does-not-exist", { token: credential });
      expectErrorShape(get, 404, "NOT_FOUND");
      const deep = await call("DELETE", `/v1/accounts/${account.id}/extra/segments`, { token: credential });
      expectErrorShape(deep, 404, "NOT_FOUND");
    }
  });
});

describe("wrong methods", () => {
  it("are unknown routes: 404 NOT_FOUND, with an Allow header listing the path's methods", async () => {
    const cases: [string, string, string[]][] = [
      ["DELETE", "/v1/orgs", ["POST"]],
      ["GET", "/v1/orgs", ["POST"]],
      ["PUT", "/v1/accounts", ["GET", "POST"]],
      ["PUT", "/v1/accounts/acc_0123456789abcdef", ["GET", "PATCH", "DELETE"]],
      ["POST", "/v1/accounts/acc_0123456789abcdef", ["GET", "PATCH", "DELETE"]],
      ["GET", "/v1/tokens", ["POST"]],
      ["PATCH", "/v1/api-keys", ["GET", "POST"]],
      ["PUT", "/v1/conversations/conv_0123456789abcdef/messages", ["GET", "POST"]],
      ["POST", "/v1/openapi.json", ["GET"]],
    ];
    for (const [method, path, allowed] of cases) {
      const response = await call(method, path);
      expectErrorShape(response, 404, "NOT_FOUND");
      expect(response.body.error.message).toContain(allowed[0]);
      const allow = (response.headers.get("allow") ?? "").split(",").map((m) => m.trim());
      for (const m of allowed) expect(allow, `${method} ${path}`).toContain(m);
      expect(allow, `${method} ${path}`).not.toContain(method);
    }
  });

  it("answer 404 before authentication, with or without credentials", async () => {
    const org = await createOrg();
    const withKey = await call("PUT", "/v1/accounts", { token: org.apiKey, body: { type: "user", name: "X" } });
    expectErrorShape(withKey, 404, "NOT_FOUND");
    expect(withKey.headers.get("allow")).toMatch(/POST/);
    // Nothing was created by the rejected request.
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items).toEqual([]);
  });
});

describe("request bodies", () => {
  it("malformed JSON is 400 BAD_REQUEST", async () => {
    const org = await createOrg();
    for (const body of ["{not json", '{"type": "user", "name": "x"', "nul", "{'a': 1}"]) {
      const response = await raw("POST", "/v1/accounts", {
        headers: { authorization: `Bearer ${org.apiKey}`, "content-type": "application/json" },
        body,
      });
      expectErrorShape(response, 400, "BAD_REQUEST");
      // like every 400 of validation, it names what is wrong in `details`
      expect((response.body as any).error.details).toEqual([{ path: "(body)", message: expect.any(String) }]);
    }
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items).toEqual([]);
  });

  it("no body reads as {}: a route whose fields are all optional takes it, others answer 400 naming the fields", async () => {
    const org = await createOrg();
    const auth = { authorization: `Bearer ${org.apiKey}` };
    for (const headers of [auth, { ...auth, "content-type": "application/json" }]) {
      const key = await raw("POST", "/v1/api-keys", { headers });
      expect(key.status, JSON.stringify(key.body)).toBe(201);
      expect(key.body.apiKey).toMatch(/^sk_/);
      const account = await raw("POST", "/v1/accounts", { headers, body: "" });
      expectDetail(account, "type");
    }
    expect((await call("GET", "/v1/accounts", { token: org.apiKey })).body.items).toEqual([]);
  });

  it("whole-number query parameters take digits only", async () => {
    const org = await createOrg();
    expect((await call("GET", "/v1/accounts?limit=5", { token: org.apiKey })).status).toBe(200);
    for (const limit of ["0x5", "+5", "5.0", "1e1", "", " 5", "-1"]) {
      expectDetail(
        await call("GET", `/v1/accounts?limit=${encodeURIComponent(limit)}`, { token: org.apiKey }),
        "limit",
      );
    }
  });

  it("well-formed JSON that fails validation is 400 with details naming each field", async () => {
    const org = await createOrg();
    const wrongTypes = await call("POST", "/v1/accounts", { token: org.apiKey, body: { type: "robot", name: "" } });
    expectDetail(wrongTypes, "type");
    expect(wrongTypes.body.error.details.map((d: any) => d.path)).toContain("name");

    for (const body of ["[]", "null", "42", '"text"']) {
      const response = await call("POST", "/v1/accounts", { token: org.apiKey, body });
      expectErrorShape(response, 400, "BAD_REQUEST");
      expect(response.body.error.details?.length, body).toBeGreaterThan(0);
    }

    const unknownField = await call("POST", "/v1/accounts", {
      token: org.apiKey,
      body: { type: "user", name: "Ada", colour: "blue" },
    });
    expectErrorShape(unknownField, 400, "BAD_REQUEST");
    expect(unknownField.body.error.details.length).toBeGreaterThan(0);
  });

  it("a non-JSON content type is 415 UNSUPPORTED_MEDIA_TYPE", async () => {
    const org = await createOrg();
    const json = JSON.stringify({ type: "user", name: "Ada" });
    for (const type of [
      "text/plain",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "application/jsonp",
      "text/json-ish",
    ]) {
      const response = await raw("POST", "/v1/accounts", {
        headers: { authorization: `Bearer ${org.apiKey}`, "content-type": type },
        body: json,
      });
      expectErrorShape(response, 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items).toEqual([]);
  });

  it("a missing content type is 415 UNSUPPORTED_MEDIA_TYPE", async () => {
    const org = await createOrg();
    const body = new TextEncoder().encode(JSON.stringify({ type: "user", name: "Ada" }));
    const response = await raw("POST", "/v1/accounts", { headers: { authorization: `Bearer ${org.apiKey}` }, body });
    expectErrorShape(response, 415, "UNSUPPORTED_MEDIA_TYPE");
  });

  it("a JSON body in another charset, or with a Content-Encoding, is 415 and changes nothing", async () => {
    const org = await createOrg();
    const json = JSON.stringify({ type: "user", name: "Café" });
    const variants: Record<string, string>[] = [
      { "content-type": "application/json; charset=iso-8859-1" },
      { "content-type": 'application/json; charset="utf-16"' },
      { "content-type": "application/json", "content-encoding": "gzip" },
      { "content-type": "application/json", "content-encoding": "br" },
    ];
    for (const headers of variants) {
      const response = await raw("POST", "/v1/accounts", {
        headers: { authorization: `Bearer ${org.apiKey}`, ...headers },
        body: json,
      });
      expectErrorShape(response, 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    const upload = await raw("POST", "/v1/attachments?name=a.txt", {
      headers: { authorization: `Bearer ${org.apiKey}`, "content-type": "text/plain", "content-encoding": "gzip" },
      body: "hello",
    });
    expectErrorShape(upload, 415, "UNSUPPORTED_MEDIA_TYPE");
    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items).toEqual([]);
  });

  it("JSON content types with parameters or a +json suffix are accepted", async () => {
    const org = await createOrg();
    for (const type of [
      "application/json; charset=utf-8",
      "application/json;charset=UTF8",
      "Application/JSON",
      "application/merge-patch+json",
    ]) {
      const response = await raw("POST", "/v1/accounts", {
        headers: { authorization: `Bearer ${org.apiKey}`, "content-type": type },
        body: JSON.stringify({ type: "user", name: "Ada" }),
      });
      expect(response.status, `${type}: ${JSON.stringify(response.body)}`).toBe(201);
    }
  });

  it("an oversize body is 413 PAYLOAD_TOO_LARGE", async () => {
    const org = await createOrg();
    const big = JSON.stringify({ type: "user", name: "Ada", meta: { blob: "x".repeat(600 * 1024) } });
    const response = await call("POST", "/v1/accounts", { token: org.apiKey, body: big });
    expectErrorShape(response, 413, "PAYLOAD_TOO_LARGE");

    const adminBig = await call("POST", "/v1/orgs", { token: ADMIN_TOKEN, body: { name: "x".repeat(1024 * 1024) } });
    expectErrorShape(adminBig, 413, "PAYLOAD_TOO_LARGE");

    const list = await call("GET", "/v1/accounts", { token: org.apiKey });
    expect(list.body.items).toEqual([]);
  });

  it("an oversize body streamed without Content-Length is 413 PAYLOAD_TOO_LARGE", async () => {
    const org = await createOrg();
    const chunk = new TextEncoder().encode("x".repeat(64 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"type":"user","name":"Ada","meta":{"blob":"'));
      },
      pull(controller) {
        if (sent >= 12) {
          controller.enqueue(new TextEncoder().encode('"}}'));
          controller.close();
          return;
        }
        sent++;
        controller.enqueue(chunk);
      },
    });
    const response = await raw("POST", "/v1/accounts", {
      headers: { authorization: `Bearer ${org.apiKey}`, "content-type": "application/json" },
      body: stream,
    });
    expectErrorShape(response, 413, "PAYLOAD_TOO_LARGE");
  });
});

describe("x-request-id", () => {
  it("is on every response, success and error, and matches the error body's requestId", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const responses = [
      await call("GET", "/healthz"),
      await call("GET", "/v1/openapi.json"),
      await call("GET", "/docs"),
      await call("POST", "/v1/orgs", { token: ADMIN_TOKEN, body: { name: "Other" } }),
      await call("GET", "/v1/accounts", { token: org.apiKey }),
      await call("DELETE", `/v1/accounts/${account.id}`, { token: org.apiKey }),
      await call("GET", "/v1/nope"),
      await call("PUT", "/v1/orgs"),
      await call("GET", "/v1/accounts"),
      await call("GET", "/v1/accounts", { token: ADMIN_TOKEN }),
      await call("POST", "/v1/accounts", { token: org.apiKey, body: { type: "nope" } }),
    ];
    const statuses = responses.map((r) => r.status);
    expect(statuses).toEqual([200, 200, 200, 201, 200, 204, 404, 404, 401, 403, 400]);
    const ids = responses.map((r) => r.headers.get("x-request-id"));
    for (const [i, id] of ids.entries()) {
      expect(id, `response ${i}`).toBeTruthy();
      expect(id!).toMatch(GENERATED_REQUEST_ID);
      const body = responses[i].body;
      if (body && typeof body === "object" && body.error) expect(body.error.requestId).toBe(id);
    }
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("echoes a valid client request id, on success and on error", async () => {
    const org = await createOrg();
    const id = "client-req_01:abc.DEF";
    const ok = await call("GET", "/v1/accounts", { token: org.apiKey, headers: { "x-request-id": id } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("x-request-id")).toBe(id);

    const notFound = await call("GET", "/v1/nope", { headers: { "x-request-id": id } });
    expectErrorShape(notFound, 404, "NOT_FOUND");
    expect(notFound.body.error.requestId).toBe(id);

    const unauthorized = await call("GET", "/v1/accounts", { headers: { "x-request-id": id } });
    expectErrorShape(unauthorized, 401, "UNAUTHORIZED");
    expect(unauthorized.body.error.requestId).toBe(id);
    expect(unauthorized.headers.get("www-authenticate")).toBe('Bearer realm="parley"');

    const invalid = await call("POST", "/v1/accounts", {
      token: org.apiKey,
      body: { type: "nope" },
      headers: { "x-request-id": id },
    });
    expectErrorShape(invalid, 400, "BAD_REQUEST");
    expect(invalid.body.error.requestId).toBe(id);

    const methodNotAllowed = await call("PUT", "/v1/orgs", { headers: { "x-request-id": id } });
    expect(methodNotAllowed.status).toBe(404);
    expect(methodNotAllowed.headers.get("x-request-id")).toBe(id);
    expect(methodNotAllowed.body.error.requestId).toBe(id);
  });

  it("replaces an invalid client request id with a generated one", async () => {
    for (const bad of ["has spaces in it", "x".repeat(129), "<script>", "a/b"]) {
      const response = await call("GET", "/v1/nope", { headers: { "x-request-id": bad } });
      expectErrorShape(response, 404, "NOT_FOUND");
      const id = response.headers.get("x-request-id")!;
      expect(id).not.toBe(bad);
      expect(id).toMatch(GENERATED_REQUEST_ID);
      expect(response.body.error.requestId).toBe(id);
    }
  });
});

describe("path ids that cannot be ours", () => {
  it("answer 404 NOT_FOUND like unknown ones: ids are opaque to clients", async () => {
    const org = await createOrg();
    const account = await createAccount(org.apiKey);
    const room = await call("POST", "/v1/rooms", {
      token: org.apiKey,
      body: { type: "standard", participants: [{ accountId: account.id }] },
    });
    expect(room.status, JSON.stringify(room.body)).toBe(201);

    const cases: [string, string, string, unknown?][] = [
      ["GET", "/v1/accounts/not-an-id", "id"],
      ["GET", "/v1/accounts/room_0123456789abcdef", "id"],
      ["GET", "/v1/accounts/acc_UPPERCASE0123", "id"],
      ["GET", "/v1/accounts/acc_nope", "id"],
      ["PATCH", "/v1/accounts/acc_missing", "id", { name: "x" }],
      ["DELETE", "/v1/accounts/acc_", "id"],
      ["PATCH", "/v1/accounts/123", "id", { name: "x" }],
      ["DELETE", "/v1/api-keys/acc_0123456789abcdef", "id"],
      ["GET", "/v1/rooms/nope", "id"],
      ["GET", "/v1/conversations/nope", "id"],
      ["GET", "/v1/conversations/nope/messages", "id"],
      ["DELETE", `/v1/rooms/${room.body.id}/participants/nope`, "accountId"],
    ];
    for (const [method, path, , body] of cases) {
      const response = await call(method, path, { token: org.apiKey, body });
      expectErrorShape(response, 404, "NOT_FOUND");
    }
  });
});

describe("OpenAPI document", () => {
  it("is a valid-looking OpenAPI 3.1 document listing the main paths", async () => {
    const response = await call("GET", "/v1/openapi.json");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    const doc = response.body;
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    expect(typeof doc.info.title).toBe("string");
    expect(typeof doc.info.version).toBe("string");
    expect(typeof doc.paths).toBe("object");

    const paths = Object.keys(doc.paths);
    for (const path of [
      "/v1/orgs",
      "/v1/api-keys",
      "/v1/api-keys/{id}",
      "/v1/tokens",
      "/v1/accounts",
      "/v1/accounts/{id}",
      "/v1/rooms",
      "/v1/rooms/{id}",
      "/v1/rooms/{id}/participants",
      "/v1/rooms/{id}/participants/{accountId}",
      "/v1/rooms/{roomId}/conversations",
      "/v1/conversations",
      "/v1/conversations/{id}",
      "/v1/conversations/{id}/sessions",
      "/v1/conversations/{id}/messages",
    ]) {
      expect(paths, path).toContain(path);
    }
    // Paths use OpenAPI templates, never Hono's `:param` syntax, and every template is a declared path parameter.
    for (const path of paths) {
      expect(path).toMatch(/^\//);
      expect(path).not.toMatch(/:/);
      const templated = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      for (const [method, op] of Object.entries<any>(doc.paths[path])) {
        expect(["get", "head", "post", "put", "patch", "delete"]).toContain(method);
        const declared = (op.parameters ?? []).filter((p: any) => p.in === "path").map((p: any) => p.name);
        expect(declared.sort(), `${method} ${path}`).toEqual([...templated].sort());
        expect(Object.keys(op.responses ?? {}).length, `${method} ${path}`).toBeGreaterThan(0);
      }
    }

    // The main operations are there with their methods.
    expect(Object.keys(doc.paths["/v1/accounts/{id}"]).sort()).toEqual(["delete", "get", "patch"]);
    expect(doc.paths["/v1/conversations/{id}/messages"].get).toBeTruthy();
    expect(doc.paths["/v1/rooms/{id}/participants/{accountId}"].delete).toBeTruthy();
  });

  it("names every operation once and lists the statuses the server answers", async () => {
    const doc = (await call("GET", "/v1/openapi.json")).body;
    const operations = Object.entries<any>(doc.paths).flatMap(([path, item]) =>
      Object.entries<any>(item).map(([method, op]) => ({ path, method, op })),
    );
    const ids = operations.map(({ op }) => op.operationId);
    expect(
      ids.every((id) => typeof id === "string" && /^[a-z]+[A-Za-z]*$/.test(id)),
      String(ids),
    ).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(doc.paths["/v1/rooms/{id}/participants"].post.operationId).toBe("postRoomsByIdParticipants");
    for (const { path, method, op } of operations) {
      const statuses = Object.keys(op.responses);
      expect(statuses, `${method} ${path}`).toEqual(expect.arrayContaining(["401", "404", "500"]));
      // Every JSON body may be too large or not JSON.
      if (op.requestBody?.content?.["application/json"]) {
        expect(statuses, `${method} ${path}`).toEqual(expect.arrayContaining(["413", "415"]));
      }
    }
    // The conflicts of the contract where they happen.
    expect(Object.keys(doc.paths["/v1/rooms/{id}/participants"].post.responses)).toContain("409");
    expect(Object.keys(doc.paths["/v1/rooms/{id}/participants/{accountId}"].delete.responses)).toContain("409");
    // A body whose fields are all optional may be left out; one with required fields may not.
    expect(doc.paths["/v1/api-keys"].post.requestBody.required).toBe(false);
    expect(doc.paths["/v1/rooms/{roomId}/conversations"].post.requestBody.required).toBe(false);
    expect(doc.paths["/v1/conversations/{id}/messages"].post.requestBody.required).toBe(true);
    // Lists answer their page; the upgrades answer 101 and take `?token=`; downloads answer HEAD.
    const keys = resolve(doc, doc.paths["/v1/api-keys"].get.responses["200"].content["application/json"].schema);
    expect(Object.keys(keys.properties).sort()).toEqual(["items", "nextCursor"]);
    for (const path of ["/v1/realtime", "/v1/rooms/{roomId}/realtime"]) {
      expect(Object.keys(doc.paths[path].get.responses)).toContain("101");
      expect(doc.paths[path].get.parameters.map((p: any) => `${p.in}:${p.name}`)).toContain("query:token");
    }
    // What the validation checks beyond types is said too.
    const history = doc.paths["/v1/conversations/{id}/messages"].get.parameters;
    expect(history.find((p: any) => p.name === "limit").schema.description).toBe("1..100 (default 20)");
    const message = resolve(
      doc,
      doc.paths["/v1/conversations/{id}/messages"].post.requestBody.content["application/json"].schema,
    );
    expect(message.description).toMatch(/At least one of/);
    const rule = resolve(doc, doc.paths["/v1/notification-rules"].post.requestBody.content["application/json"].schema);
    expect(resolve(doc, rule.properties.channels).uniqueItems).toBe(true);
    expect(Object.keys(doc.paths["/v1/attachments/{id}/content"].head.responses)).toEqual(
      expect.arrayContaining(["200", "206", "304", "403"]),
    );
  });

  it("describes request bodies with JSON schemas", async () => {
    const doc = (await call("GET", "/v1/openapi.json")).body;
    const bodyOf = (path: string, method: string) => {
      const schema = doc.paths[path][method].requestBody?.content?.["application/json"]?.schema;
      expect(schema, `${method} ${path}`).toBeTruthy();
      return resolve(doc, schema);
    };
    expect(Object.keys(bodyOf("/v1/orgs", "post").properties)).toContain("name");
    expect(bodyOf("/v1/orgs", "post").required).toContain("name");
    expect(Object.keys(bodyOf("/v1/tokens", "post").properties)).toEqual(
      expect.arrayContaining(["accountId", "ttlSeconds"]),
    );
    const account = bodyOf("/v1/accounts", "post");
    expect(Object.keys(account.properties)).toEqual(expect.arrayContaining(["type", "name", "email", "meta", "agent"]));
    expect(account.required).toEqual(expect.arrayContaining(["type", "name"]));
    expect(Object.keys(bodyOf("/v1/rooms/{id}/participants", "post").properties)).toEqual(
      expect.arrayContaining(["accountId", "role", "autoRespond"]),
    );
    expect(Object.keys(bodyOf("/v1/conversations/{id}/messages", "post").properties)).toEqual(
      expect.arrayContaining(["text", "data", "attachmentIds", "clientMessageId", "authorId"]),
    );
    expect(Object.keys(bodyOf("/v1/accounts/{id}", "patch").properties)).toContain("name");
    // meta and data are JSON objects, described as such.
    expect(bodyOf("/v1/conversations/{id}/messages", "post").properties.data.type).toBe("object");
    // Reads carry no body.
    expect(doc.paths["/v1/accounts/{id}"].get.requestBody).toBeUndefined();

    // Uploads: a raw body or a multipart file, and their 413 and 415; downloads: the signed query and the answers.
    const upload = doc.paths["/v1/attachments"].post;
    expect(Object.keys(upload.requestBody.content).sort()).toEqual(["*/*", "multipart/form-data"]);
    expect(upload.requestBody.content["multipart/form-data"].schema.required).toEqual(["file"]);
    expect(Object.keys(upload.responses)).toEqual(expect.arrayContaining(["201", "413", "415"]));
    const download = doc.paths["/v1/attachments/{id}/content"].get;
    expect(download.parameters.filter((p: any) => p.in === "query").map((p: any) => p.name)).toEqual(["exp", "sig"]);
    expect(Object.keys(download.responses)).toEqual(expect.arrayContaining(["200", "206", "304", "403", "416"]));
    expect(download.responses["200"].content["*/*"].schema.format).toBe("binary");
  });

  it("every $ref resolves inside the document", async () => {
    const doc = (await call("GET", "/v1/openapi.json")).body;
    const refs: string[] = [];
    const walk = (value: unknown) => {
      if (Array.isArray(value)) value.forEach(walk);
      else if (value && typeof value === "object") {
        for (const [key, child] of Object.entries(value)) {
          if (key === "$ref" && typeof child === "string") refs.push(child);
          else walk(child);
        }
      }
    };
    walk(doc);
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of new Set(refs)) {
      expect(ref).toMatch(/^#\//);
      expect(pointer(doc, ref), ref).toBeTruthy();
    }
    expect(doc.components.schemas.Error).toBeTruthy();
  });
});

describe("GET /docs", () => {
  it("answers an HTML page that points at the OpenAPI document", async () => {
    const response = await call("GET", "/docs");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/html/);
    expect(typeof response.body).toBe("string");
    expect(response.body).toMatch(/<html/i);
    expect(response.body).toContain("/v1/openapi.json");
  });
});

/** The value a JSON pointer (`#/a/b`) names in a document. */
function pointer(doc: any, ref: string): any {
  return ref
    .slice(2)
    .split("/")
    .map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce((node, part) => (node == null ? undefined : node[part]), doc);
}

/** A schema with its top-level `$ref` followed. */
function resolve(doc: any, schema: any): any {
  let current = schema;
  for (let i = 0; i < 10 && current?.$ref; i++) current = pointer(doc, current.$ref);
  return current;
}
