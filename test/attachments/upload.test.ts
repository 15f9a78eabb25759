import { env, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { createOrg, expectBadRequest, expectError, readResponse } from "../helpers/api";
import {
  download,
  expectUploaded,
  multipartBody,
  ORIGIN,
  pngBytes,
  randomBytes,
  sha256Hex,
  storedState,
  uploadForm,
  uploadRaw,
} from "./helpers";

const MAX = Number(env.MAX_ATTACHMENT_BYTES);
const MiB = 1024 * 1024;

/** A body stream that would produce `total` bytes, counting what the server actually pulls. */
function countingStream(total: number, chunk = 64 * 1024) {
  const state = { pulled: 0 };
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (state.pulled >= total) return controller.close();
      const size = Math.min(chunk, total - state.pulled);
      state.pulled += size;
      controller.enqueue(new Uint8Array(size));
    },
  });
  return { stream, state };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}

async function postBody(token: string, body: BodyInit, headers: Record<string, string> = {}, query = "") {
  return readResponse(
    await SELF.fetch(`${ORIGIN}/v1/attachments${query}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, ...headers },
      body,
    }),
  );
}

describe("POST /v1/attachments: raw bodies", () => {
  it("stores a raw body and downloads it byte for byte", async () => {
    const { apiKey } = await createOrg();
    const bytes = pngBytes(300_000);
    const uploaded = expectUploaded(await uploadRaw(apiKey, bytes, { type: "image/png", name: "photo.png" }));
    expect(uploaded).toMatchObject({ name: "photo.png", contentType: "image/png", size: bytes.byteLength });
    expect(uploaded.sha256).toBe(await sha256Hex(bytes));
    expect(Date.parse(uploaded.urlExpiresAt) - Date.now()).toBeGreaterThan(60_000);
    expect(Date.parse(uploaded.urlExpiresAt) - Date.now()).toBeLessThanOrEqual(900_000);

    const got = await download(uploaded.url);
    expect(got.status).toBe(200);
    expect(got.headers.get("content-type")).toBe("image/png");
    expect(got.headers.get("content-length")).toBe(String(bytes.byteLength));
    expect(got.bytes).toEqual(bytes);

    const row = await env.DB.prepare("SELECT * FROM attachments WHERE id = ?").bind(uploaded.id).first<any>();
    expect(row).toMatchObject({ size: bytes.byteLength, sha256: uploaded.sha256, content_type: "image/png" });
    const object = await env.ATTACHMENTS.head(row.object_key);
    expect(object?.size).toBe(bytes.byteLength);

    // Files shorter than, as long as, and just past the bytes read to check the type, hashed all the same.
    for (const size of [1, 8, 511, 512, 513, 70_000]) {
      const small = randomBytes(size);
      const stored = expectUploaded(await uploadRaw(apiKey, small, { type: "application/x-custom" }));
      expect(stored.size).toBe(size);
      expect(stored.sha256).toBe(await sha256Hex(small));
      expect((await download(stored.url)).bytes).toEqual(small);
    }
  });

  it("streams a body of unknown length, in R2 parts past 5 MiB, byte for byte", async () => {
    const { apiKey } = await createOrg();
    for (const size of [1000, 11 * MiB + 123]) {
      const bytes = randomBytes(size);
      const uploaded = expectUploaded(
        await uploadRaw(apiKey, bytes, { type: "application/octet-stream", name: "blob.bin", chunked: true }),
      );
      expect(uploaded.size).toBe(size);
      expect(uploaded.sha256).toBe(await sha256Hex(bytes));
      const got = await download(uploaded.url);
      expect(got.status).toBe(200);
      expect(got.bytes.byteLength).toBe(size);
      expect(await sha256Hex(got.bytes)).toBe(uploaded.sha256);
    }
  });

  it("names a raw upload 'attachment' without ?name=, and strips paths and control characters", async () => {
    const { apiKey } = await createOrg();
    const plain = expectUploaded(await uploadRaw(apiKey, new TextEncoder().encode("hi"), { type: "text/plain" }));
    expect(plain.name).toBe("attachment");
    expect(plain.contentType).toBe("text/plain");
    const odd = expectUploaded(
      await uploadRaw(apiKey, new TextEncoder().encode("hi"), {
        type: "text/plain",
        name: "../../etc/pa\u0000ss\u202ewd.txt",
      }),
    );
    expect(odd.name).toBe("passwd.txt");
    expectBadRequest(await uploadRaw(apiKey, new Uint8Array(3), { name: "x".repeat(256) }), "name");
  });

  it("refuses an empty body and a malformed content type with 400, storing nothing", async () => {
    const { apiKey } = await createOrg();
    const before = await storedState();
    expectBadRequest(await uploadRaw(apiKey, new Uint8Array(0), { type: "text/plain" }));
    expectBadRequest(await uploadRaw(apiKey, new Uint8Array(0), { type: "text/plain", chunked: true }));
    expectBadRequest(await uploadRaw(apiKey, new Uint8Array(10), { type: "not a type" }), "content-type");
    expect(await storedState()).toEqual(before);
  });

  it("needs credentials: 401 without, and the admin token is refused", async () => {
    const response = await readResponse(
      await SELF.fetch(`${ORIGIN}/v1/attachments`, { method: "POST", body: new Uint8Array(10) }),
    );
    expectError(response, 401, "UNAUTHORIZED");
    expectError(await uploadRaw("test-admin-token", new Uint8Array(10)), 403, "FORBIDDEN");
  });
});

describe("POST /v1/attachments: a failing database", () => {
  it("leaves no object behind when the row cannot be written, raw or multipart, small or in one guessed put", async () => {
    const { apiKey } = await createOrg();
    await env.DB.prepare(
      "CREATE TRIGGER refuse_attachment BEFORE INSERT ON attachments WHEN NEW.name = 'refused.bin' " +
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    ).run();
    try {
      const before = await storedState();
      for (const size of [1000, 6 * MiB + 3]) {
        const bytes = randomBytes(size);
        const raw = await uploadRaw(apiKey, bytes, { type: "application/octet-stream", name: "refused.bin" });
        expect(raw.status).toBe(500);
        const form = multipartBody([{ name: "file", filename: "refused.bin", body: bytes }]);
        const multipart = await postBody(apiKey, form.body, { "content-type": form.contentType });
        expect(multipart.status).toBe(500);
        const chunked = await uploadRaw(apiKey, bytes, { name: "refused.bin", chunked: true });
        expect(chunked.status).toBe(500);
      }
      expect(await storedState()).toEqual(before);
    } finally {
      await env.DB.prepare("DROP TRIGGER refuse_attachment").run();
    }
    // The same upload under another name is stored.
    expectUploaded(await uploadRaw(apiKey, randomBytes(1000), { type: "application/octet-stream", name: "ok.bin" }));
  });
});

describe("POST /v1/attachments: the size limit", () => {
  it("answers 413 from Content-Length without reading the body", async () => {
    const { apiKey } = await createOrg();
    const before = await storedState();
    const { stream, state } = countingStream(MAX + 1);
    const response = await postBody(apiKey, stream, {
      "content-type": "application/octet-stream",
      "content-length": String(MAX + 1),
    });
    expectError(response, 413, "PAYLOAD_TOO_LARGE");
    // The stream may have been asked for its first chunks by the runtime, never for the whole body.
    expect(state.pulled).toBeLessThan(2 * MiB);
    expect(await storedState()).toEqual(before);
  });

  it("answers 413 while streaming a body of unknown length past the limit, leaving no object and no row", async () => {
    const { apiKey } = await createOrg();
    const before = await storedState();
    const { stream, state } = countingStream(MAX + 10 * MiB, 256 * 1024);
    const response = await postBody(apiKey, stream, { "content-type": "application/octet-stream" });
    expectError(response, 413, "PAYLOAD_TOO_LARGE");
    expect(state.pulled).toBeLessThan(MAX + 10 * MiB);
    expect(await storedState()).toEqual(before);
  });

  it("answers 413 for a multipart file past the limit, before and while reading", async () => {
    const { apiKey } = await createOrg();
    const before = await storedState();
    const { body, contentType } = multipartBody([
      { name: "file", filename: "big.bin", type: "application/octet-stream", body: new Uint8Array(MAX + 1) },
    ]);
    expectError(await postBody(apiKey, body, { "content-type": contentType }), 413, "PAYLOAD_TOO_LARGE");
    // Within the multipart allowance by Content-Length, over the limit by the file's own bytes.
    const overhead = multipartBody([{ name: "file", filename: "f.bin", body: new Uint8Array(MAX + 2) }]);
    expect(overhead.body.byteLength).toBeLessThan(MAX + 64 * 1024);
    expectError(
      await postBody(apiKey, overhead.body, { "content-type": overhead.contentType }),
      413,
      "PAYLOAD_TOO_LARGE",
    );
    expect(await storedState()).toEqual(before);
  });

  it("accepts a file of exactly MAX_ATTACHMENT_BYTES", async () => {
    const { apiKey } = await createOrg();
    const bytes = randomBytes(MAX);
    const uploaded = expectUploaded(await uploadRaw(apiKey, bytes, { type: "application/octet-stream" }));
    expect(uploaded.size).toBe(MAX);
    expect(uploaded.sha256).toBe(await sha256Hex(bytes));
  });
});

describe("POST /v1/attachments: multipart/form-data", () => {
  it("stores the 'file' field of a FormData body, named by its filename", async () => {
    const { apiKey } = await createOrg();
    const bytes = pngBytes(200_000);
    const form = new FormData();
    form.append("note", "ignored");
    form.append("file", new File([bytes], "holiday photo.png", { type: "image/png" }));
    const uploaded = expectUploaded(await uploadForm(apiKey, form));
    expect(uploaded).toMatchObject({ name: "holiday photo.png", contentType: "image/png", size: bytes.byteLength });
    expect(uploaded.sha256).toBe(await sha256Hex(bytes));
    const got = await download(uploaded.url);
    expect(got.bytes).toEqual(bytes);
  });

  it("streams a multipart file larger than one R2 part byte for byte; ?name= overrides the filename", async () => {
    const { apiKey } = await createOrg();
    const bytes = randomBytes(12 * MiB + 7);
    const form = new FormData();
    form.append("file", new File([bytes], "data.bin", { type: "application/octet-stream" }));
    form.append("after", "never read");
    const uploaded = expectUploaded(await uploadForm(apiKey, form, "?name=renamed.bin"));
    expect(uploaded).toMatchObject({ name: "renamed.bin", size: bytes.byteLength });
    expect(uploaded.sha256).toBe(await sha256Hex(bytes));
    const got = await download(uploaded.url);
    expect(await sha256Hex(got.bytes)).toBe(uploaded.sha256);
  });

  it("puts a file of known length in one put when its length is as guessed, and stores the exact bytes when not", async () => {
    const { apiKey } = await createOrg();
    const bytes = randomBytes(6 * MiB + 11);
    const encoder = new TextEncoder();
    const standard = multipartBody([
      { name: "caption", body: "before the file" },
      { name: "file", filename: "big.bin", type: "application/octet-stream", body: bytes },
    ]);
    const withPart = multipartBody([
      { name: "file", filename: "big.bin", body: bytes },
      { name: "after", body: "x".repeat(3000) },
    ]);
    const cases = {
      // The usual ending: the file's length is Content-Length minus what precedes it and the closing delimiter.
      "file last": standard,
      // The guess is too long: another part, or an epilogue, follows; or too short: no CRLF after the delimiter.
      "a part after the file": withPart,
      "an epilogue": { ...standard, body: concat(standard.body, encoder.encode("epilogue\r\n")) },
      "no final CRLF": { ...standard, body: standard.body.slice(0, -2) },
    };
    for (const [label, { body, contentType }] of Object.entries(cases)) {
      const uploaded = expectUploaded(await postBody(apiKey, body, { "content-type": contentType }));
      expect(uploaded.size, label).toBe(bytes.byteLength);
      expect(uploaded.sha256, label).toBe(await sha256Hex(bytes));
      const got = await download(uploaded.url);
      expect(await sha256Hex(got.bytes), label).toBe(uploaded.sha256);
      const object = await env.ATTACHMENTS.head(`attachments/${uploaded.id}`);
      // An R2 multipart upload's ETag ends in -<parts>; a single put's is the MD5 of the bytes.
      expect(object?.etag.includes("-"), label).toBe(false);
    }
    const left = await env.ATTACHMENTS.list({ prefix: "attachments/" });
    expect(left.objects.filter((o) => o.key.endsWith(".partial"))).toEqual([]);

    // A body that ends inside the file is refused, and leaves nothing behind.
    const before = await storedState();
    const cut = standard.body.slice(0, standard.body.byteLength - 100);
    expectBadRequest(await postBody(apiKey, cut, { "content-type": standard.contentType }));
    expect(await storedState()).toEqual(before);
  });

  it("finds delimiters split across chunks and keeps CRLFs and dashes inside the file", async () => {
    const { apiKey } = await createOrg();
    const boundary = "XyZ-boundary-42";
    const content = new TextEncoder().encode(`line 1\r\n--XyZ-boundary-4\r\n--\r\nline 3\r\n`);
    const { body, contentType } = multipartBody(
      [
        { name: "caption", body: "hello" },
        { name: "file", filename: "notes.txt", type: "text/plain", body: content },
      ],
      boundary,
    );
    // Deliver the body in 7-byte chunks, so every delimiter straddles reads.
    let offset = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (offset >= body.byteLength) return controller.close();
        controller.enqueue(body.slice(offset, offset + 7));
        offset += 7;
      },
    });
    const uploaded = expectUploaded(await postBody(apiKey, stream, { "content-type": contentType }));
    expect(uploaded).toMatchObject({ name: "notes.txt", contentType: "text/plain", size: content.byteLength });
    expect((await download(uploaded.url)).bytes).toEqual(content);
  });

  it("refuses a body without a 'file' part, without a boundary, or cut short, with 400", async () => {
    const { apiKey } = await createOrg();
    const before = await storedState();
    const noFile = multipartBody([{ name: "other", filename: "a.txt", body: "x" }]);
    expectBadRequest(await postBody(apiKey, noFile.body, { "content-type": noFile.contentType }));
    expectBadRequest(await postBody(apiKey, noFile.body, { "content-type": "multipart/form-data" }));
    const cut = multipartBody([{ name: "file", filename: "a.bin", body: randomBytes(5000) }]);
    expectBadRequest(
      await postBody(apiKey, cut.body.slice(0, cut.body.byteLength - 40), { "content-type": cut.contentType }),
    );
    expect(await storedState()).toEqual(before);
  });
});
