import { env, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call, createOrg, expectBadRequest, expectError, readResponse } from "../helpers/api";
import { download, expectUploaded, ORIGIN, pngBytes, randomBytes, uploadRaw } from "./helpers";

const CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/** Signs a download URL the way the contract describes: HMAC-SHA256 over the id, operation and expiry. */
async function forge(id: string, exp: number, secret = env.URL_SIGNING_SECRET!) {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`parley-attachment-v1\ndownload\n${id}\n${exp}`)),
  );
  const sig = btoa(String.fromCharCode(...mac))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
  return `${ORIGIN}/v1/attachments/${id}/content?exp=${exp}&sig=${sig}`;
}

async function uploadText(apiKey: string, text: string, type: string, name = "file.txt") {
  return expectUploaded(await uploadRaw(apiKey, new TextEncoder().encode(text), { type, name }));
}

describe("signed download URLs", () => {
  it("serve without credentials; a tampered id, expiry or signature is 403", async () => {
    const { apiKey } = await createOrg();
    const a = expectUploaded(await uploadRaw(apiKey, randomBytes(1000), { name: "a.bin" }));
    const b = expectUploaded(await uploadRaw(apiKey, randomBytes(1000), { name: "b.bin" }));
    expect((await download(a.url)).status).toBe(200);

    const url = new URL(a.url);
    const sig = url.searchParams.get("sig")!;
    const exp = url.searchParams.get("exp")!;
    const flipped = (sig[0] === "A" ? "B" : "A") + sig.slice(1);
    const variants = [
      `${ORIGIN}/v1/attachments/${a.id}/content?exp=${exp}&sig=${flipped}`,
      `${ORIGIN}/v1/attachments/${a.id}/content?exp=${Number(exp) + 1}&sig=${sig}`,
      `${ORIGIN}/v1/attachments/${b.id}/content?exp=${exp}&sig=${sig}`,
      `${ORIGIN}/v1/attachments/${a.id}/content?exp=${exp}`,
      `${ORIGIN}/v1/attachments/${a.id}/content?sig=${sig}`,
      `${ORIGIN}/v1/attachments/${a.id}/content?exp=${exp}&sig=${sig}x`,
      `${ORIGIN}/v1/attachments/${a.id}/content`,
    ];
    for (const variant of variants) {
      const response = await readResponse(await SELF.fetch(variant));
      expectError(response, 403, "FORBIDDEN");
    }
    // A signature made with another secret is as good as none.
    const other = await forge(a.id, Math.floor(Date.now() / 1000) + 600, "some-other-secret-0123456789");
    expectError(await readResponse(await SELF.fetch(other)), 403, "FORBIDDEN");
  });

  it("expire: a correctly signed URL past its expiry is 403, and ttlSeconds sets the lifetime", async () => {
    const { apiKey } = await createOrg();
    const a = expectUploaded(await uploadRaw(apiKey, randomBytes(100), { name: "a.bin" }));
    const now = Math.floor(Date.now() / 1000);
    expect((await download(await forge(a.id, now + 60))).status).toBe(200);
    const expired = await readResponse(await SELF.fetch(await forge(a.id, now - 1)));
    expectError(expired, 403, "FORBIDDEN");
    expect(expired.body.error.message).toMatch(/expired/);

    const short = await call("GET", `/v1/attachments/${a.id}?ttlSeconds=1`, { token: apiKey });
    expect(short.status).toBe(200);
    expect(Date.parse(short.body.urlExpiresAt) - Date.now()).toBeLessThanOrEqual(1000);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expectError(await readResponse(await SELF.fetch(short.body.url)), 403, "FORBIDDEN");
    expectBadRequest(await call("GET", `/v1/attachments/${a.id}?ttlSeconds=0`, { token: apiKey }), "ttlSeconds");
    expectBadRequest(await call("GET", `/v1/attachments/${a.id}?ttlSeconds=86401`, { token: apiKey }), "ttlSeconds");
  });

  it("GET /v1/attachments/{id} answers the metadata with a fresh URL", async () => {
    const { apiKey } = await createOrg();
    const a = expectUploaded(await uploadRaw(apiKey, pngBytes(500), { type: "image/png", name: "p.png" }));
    const got = await call("GET", `/v1/attachments/${a.id}`, { token: apiKey });
    expect(got.status).toBe(200);
    expect(got.body).toEqual({ ...a, url: expect.any(String), urlExpiresAt: expect.any(String) });
    expect((await download(got.body.url)).status).toBe(200);
    expectError(await call("GET", `/v1/attachments/att_${"0".repeat(26)}`, { token: apiKey }), 404, "NOT_FOUND");
    expectError(await call("GET", "/v1/attachments/nope", { token: apiKey }), 404, "NOT_FOUND");
    // A bad query parameter is still a 400 naming it.
    expectBadRequest(await call("GET", `/v1/attachments/${a.id}?ttlSeconds=1e3`, { token: apiKey }), "ttlSeconds");
  });
});

describe("download responses", () => {
  it("carry ETag, nosniff, the sandbox CSP and answer If-None-Match with 304; HEAD reads no body", async () => {
    const { apiKey } = await createOrg();
    const bytes = pngBytes(2000);
    const a = expectUploaded(await uploadRaw(apiKey, bytes, { type: "image/png", name: "p.png" }));
    const got = await download(a.url);
    expect(got.status).toBe(200);
    const etag = got.headers.get("etag")!;
    expect(etag).toMatch(/^"[^"]+"$/);
    expect(got.headers.get("x-content-type-options")).toBe("nosniff");
    expect(got.headers.get("content-security-policy")).toBe(CSP);
    expect(got.headers.get("accept-ranges")).toBe("bytes");
    expect(got.headers.get("content-disposition")).toBe(`inline; filename="p.png"; filename*=UTF-8''p.png`);

    const cached = await download(a.url, { headers: { "if-none-match": etag } });
    expect(cached.status).toBe(304);
    expect(cached.bytes.byteLength).toBe(0);
    expect(cached.headers.get("etag")).toBe(etag);
    expect((await download(a.url, { headers: { "if-none-match": '"other"' } })).status).toBe(200);

    const head = await download(a.url, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.bytes.byteLength).toBe(0);
    expect(head.headers.get("etag")).toBe(etag);
    expect(head.headers.get("content-type")).toBe("image/png");
    expect(head.headers.get("x-content-type-options")).toBe("nosniff");
    expect((await download(a.url, { method: "HEAD", headers: { "if-none-match": etag } })).status).toBe(304);
  });

  it("serve single byte ranges with 206 and Content-Range; 416 past the end; several ranges get the whole file", async () => {
    const { apiKey } = await createOrg();
    const bytes = randomBytes(10_000);
    const a = expectUploaded(await uploadRaw(apiKey, bytes, { name: "r.bin" }));
    const cases: [string, number, number][] = [
      ["bytes=0-99", 0, 99],
      ["bytes=9990-", 9990, 9999],
      ["bytes=-10", 9990, 9999],
      ["bytes=5000-20000", 5000, 9999],
      ["bytes=-20000", 0, 9999],
    ];
    for (const [range, first, last] of cases) {
      const got = await download(a.url, { headers: { range } });
      expect(got.status, range).toBe(206);
      expect(got.headers.get("content-range"), range).toBe(`bytes ${first}-${last}/10000`);
      expect(got.headers.get("content-length"), range).toBe(String(last - first + 1));
      expect(got.bytes, range).toEqual(bytes.slice(first, last + 1));
    }
    for (const range of ["bytes=10000-", "bytes=20000-20010", "bytes=-0"]) {
      const got = await download(a.url, { headers: { range } });
      expect(got.status, range).toBe(416);
      expect(got.headers.get("content-range"), range).toBe("bytes */10000");
    }
    for (const range of ["bytes=0-1,5-6", "items=0-5", "bytes=9-3"]) {
      const got = await download(a.url, { headers: { range } });
      expect(got.status, range).toBe(200);
      expect(got.bytes, range).toEqual(bytes);
    }
  });

  it("never serve HTML, SVG or unchecked types inline: Content-Disposition attachment with the name", async () => {
    const { apiKey } = await createOrg();
    const html = await uploadText(apiKey, "<!doctype html><script>alert(1)</script>", "text/html", "page.html");
    const svg = await uploadText(
      apiKey,
      `<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`,
      "image/svg+xml",
      "pic.svg",
    );
    const text = await uploadText(apiKey, "hello", "text/plain; charset=UTF-8", 'résumé "final".txt');
    expect(text.contentType).toBe("text/plain; charset=utf-8");
    for (const [a, type] of [
      [html, "text/html"],
      [svg, "image/svg+xml"],
      [text, "text/plain; charset=utf-8"],
    ] as const) {
      const got = await download(a.url);
      expect(got.status).toBe(200);
      expect(got.headers.get("content-type")).toBe(type);
      expect(got.headers.get("content-disposition")).toMatch(/^attachment; filename="/);
      expect(got.headers.get("x-content-type-options")).toBe("nosniff");
      expect(got.headers.get("content-security-policy")).toBe(CSP);
    }
    expect((await download(text.url)).headers.get("content-disposition")).toBe(
      `attachment; filename="r_sum_ _final_.txt"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt`,
    );
  });
});
