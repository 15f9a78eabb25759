import { env, SELF } from "cloudflare:test";
import { expect } from "vitest";
import { readResponse } from "../helpers/api";

/** The origin tests send requests to; signed URLs are absolute on it. */
export const ORIGIN = "https://parley.test";

/** The PNG signature, and a PNG-looking file: the signature then `size - 8` random bytes. */
export const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** `size` random bytes (optionally starting with `prefix`). */
export function randomBytes(size: number, prefix: number[] | Uint8Array = []): Uint8Array {
  const out = new Uint8Array(size);
  for (let offset = 0; offset < size; offset += 65536) {
    crypto.getRandomValues(out.subarray(offset, Math.min(size, offset + 65536)));
  }
  out.set(prefix.slice(0, size));
  return out;
}

/** A PNG-looking file of `size` bytes. */
export function pngBytes(size = 4096): Uint8Array {
  return randomBytes(size, PNG_SIGNATURE);
}

/** Lower-case hex SHA-256 of bytes. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A stream of `bytes` in chunks of `chunkSize`, with no known length (sent chunked). */
export function chunkedStream(bytes: Uint8Array, chunkSize = 64 * 1024): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.byteLength) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + chunkSize));
      offset += chunkSize;
    },
  });
}

/** Uploads a raw body. `chunked` sends it as a stream without Content-Length. */
export async function uploadRaw(
  token: string,
  bytes: Uint8Array,
  options: { type?: string; name?: string; chunked?: boolean; query?: string } = {},
) {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (options.type !== undefined) headers["content-type"] = options.type;
  const params = new URLSearchParams(options.query ?? "");
  if (options.name !== undefined) params.set("name", options.name);
  const qs = params.toString() ? `?${params}` : "";
  return readResponse(
    await SELF.fetch(`${ORIGIN}/v1/attachments${qs}`, {
      method: "POST",
      headers,
      body: options.chunked ? chunkedStream(bytes) : bytes,
    }),
  );
}

/** Builds a multipart/form-data body by hand: parts in order, each `{ name, filename?, type?, body }`. */
export function multipartBody(
  parts: { name: string; filename?: string; type?: string; body: Uint8Array | string }[],
  boundary = `----parley${crypto.randomUUID().replace(/-/g, "")}`,
) {
  const encoder = new TextEncoder();
  const pieces: Uint8Array[] = [];
  for (const part of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"`;
    if (part.filename !== undefined) head += `; filename="${part.filename}"`;
    head += "\r\n";
    if (part.type) head += `Content-Type: ${part.type}\r\n`;
    head += "\r\n";
    pieces.push(encoder.encode(head), typeof part.body === "string" ? encoder.encode(part.body) : part.body);
    pieces.push(encoder.encode("\r\n"));
  }
  pieces.push(encoder.encode(`--${boundary}--\r\n`));
  const total = pieces.reduce((n, p) => n + p.byteLength, 0);
  const body = new Uint8Array(total);
  let offset = 0;
  for (const piece of pieces) {
    body.set(piece, offset);
    offset += piece.byteLength;
  }
  return { body, contentType: `multipart/form-data; boundary=${boundary}` };
}

/** Uploads with `multipart/form-data` as a browser or `fetch(FormData)` would. */
export async function uploadForm(token: string, form: FormData, query = "") {
  return readResponse(
    await SELF.fetch(`${ORIGIN}/v1/attachments${query}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: form,
    }),
  );
}

/** Fetches a URL (a signed download) with optional headers and method; answers the response and its bytes. */
export async function download(url: string, init: RequestInit = {}) {
  const response = await SELF.fetch(url, init);
  const bytes = new Uint8Array(await response.arrayBuffer());
  return { status: response.status, headers: response.headers, bytes };
}

/** Asserts an upload answered 201 with the contract's shape; answers its body. */
export function expectUploaded(response: { status: number; body: any }) {
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  expect(response.body).toEqual({
    id: expect.stringMatching(/^att_[0-9a-z]+$/),
    name: expect.any(String),
    contentType: expect.any(String),
    size: expect.any(Number),
    sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
    url: expect.stringMatching(
      new RegExp(`^${ORIGIN}/v1/attachments/att_[0-9a-z]+/content\\?exp=\\d+&sig=[A-Za-z0-9_-]{43}$`),
    ),
    urlExpiresAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
    createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
  });
  return response.body;
}

/** Every R2 key and every attachment row, to prove a failed upload left nothing behind. */
export async function storedState() {
  const listed = await env.ATTACHMENTS.list({ prefix: "attachments/" });
  const rows = await env.DB.prepare("SELECT id FROM attachments").all<{ id: string }>();
  return { keys: listed.objects.map((o) => o.key).sort(), rows: rows.results.map((r) => r.id).sort() };
}
