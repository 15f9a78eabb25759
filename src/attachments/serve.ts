import { ApiError } from "../errors";
import { SAFE_INLINE_TYPES } from "./sniff";

/** The sandbox every download is served in: no scripts, no plugins, no requests, an opaque origin. */
export const DOWNLOAD_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

const R2_RANGE_NOT_SATISFIABLE = /\(10039\)/;

/** One byte range of a `Range` header, as R2 takes it; `unsatisfiable` for `bytes=-0`. */
type ByteRange = { offset: number; length?: number } | { suffix: number } | "unsatisfiable";

/**
 * The single byte range a `Range` header asks for, or null to serve the whole object: no header, another unit, several
 * ranges, or a malformed one (RFC 9110 lets a server ignore those).
 */
export function parseRange(header: string | null): ByteRange | null {
  if (!header) return null;
  const match = /^\s*bytes\s*=\s*(\d{0,15})\s*-\s*(\d{0,15})\s*$/i.exec(header);
  if (!match || (match[1] === "" && match[2] === "")) return null;
  if (match[1] === "") {
    const suffix = Number(match[2]);
    return suffix === 0 ? "unsatisfiable" : { suffix };
  }
  const offset = Number(match[1]);
  if (match[2] === "") return { offset };
  const last = Number(match[2]);
  if (last < offset) return null;
  return { offset, length: last - offset + 1 };
}

/** RFC 8187 encoding of a UTF-8 header parameter value. */
function encodeExtended(value: string): string {
  return encodeURIComponent(value).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** `Content-Disposition`: inline only for the safe image types (checked against their bytes), else attachment. */
export function contentDisposition(contentType: string, name: string): string {
  const kind = SAFE_INLINE_TYPES.has(contentType.split(";")[0].trim().toLowerCase()) ? "inline" : "attachment";
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, "_");
  return `${kind}; filename="${fallback}"; filename*=UTF-8''${encodeExtended(name)}`;
}

/** The headers of every download: type, disposition, validators, caching and the sandbox. */
function downloadHeaders(object: R2Object, expiresAtSeconds: number): Headers {
  const contentType = object.httpMetadata?.contentType ?? "application/octet-stream";
  const name = object.customMetadata?.name ?? object.key;
  const maxAge = Math.max(0, expiresAtSeconds - Math.floor(Date.now() / 1000));
  return new Headers({
    "content-type": contentType,
    "content-disposition": contentDisposition(contentType, name),
    etag: object.httpEtag,
    "last-modified": object.uploaded.toUTCString(),
    "accept-ranges": "bytes",
    "cache-control": `private, max-age=${maxAge}`,
    "x-content-type-options": "nosniff",
    "content-security-policy": DOWNLOAD_CSP,
  });
}

function notModified(object: R2Object, expiresAtSeconds: number): Response {
  const headers = downloadHeaders(object, expiresAtSeconds);
  headers.delete("content-type");
  headers.delete("content-disposition");
  return new Response(null, { status: 304, headers });
}

function etagMatches(header: string, etag: string): boolean {
  if (header.trim() === "*") return true;
  const bare = etag.replace(/^W\//, "");
  return header.split(",").some((tag) => tag.trim().replace(/^W\//, "") === bare);
}

/**
 * Streams an attachment's bytes from R2: a single `Range` as 206 (416 when it starts past the end),
 * `If-None-Match` as 304, HEAD without reading the body. 404 when the object is gone.
 */
export async function serveObject(
  bucket: R2Bucket,
  key: string,
  request: Request,
  expiresAtSeconds: number,
): Promise<Response> {
  const ifNoneMatch = request.headers.get("if-none-match");
  if (request.method === "HEAD") {
    const object = await bucket.head(key);
    if (!object) throw new ApiError("NOT_FOUND", "attachment not found");
    if (ifNoneMatch && etagMatches(ifNoneMatch, object.httpEtag)) return notModified(object, expiresAtSeconds);
    const headers = downloadHeaders(object, expiresAtSeconds);
    headers.set("content-length", String(object.size));
    return new Response(null, { status: 200, headers });
  }

  const range = parseRange(request.headers.get("range"));
  const unsatisfiable = async () => {
    const object = await bucket.head(key);
    if (!object) throw new ApiError("NOT_FOUND", "attachment not found");
    const headers = downloadHeaders(object, expiresAtSeconds);
    headers.set("content-range", `bytes */${object.size}`);
    headers.delete("content-type");
    headers.delete("content-disposition");
    return new Response(null, { status: 416, headers });
  };
  if (range === "unsatisfiable") return unsatisfiable();

  let object: R2Object | R2ObjectBody | null;
  try {
    object = await bucket.get(key, {
      ...(range ? { range } : {}),
      ...(ifNoneMatch ? { onlyIf: new Headers({ "if-none-match": ifNoneMatch }) } : {}),
    });
  } catch (error) {
    if (range && error instanceof Error && R2_RANGE_NOT_SATISFIABLE.test(error.message)) return unsatisfiable();
    throw error;
  }
  if (!object) throw new ApiError("NOT_FOUND", "attachment not found");
  if (!("body" in object)) return notModified(object, expiresAtSeconds);
  const headers = downloadHeaders(object, expiresAtSeconds);
  if (!range) {
    headers.set("content-length", String(object.size));
    return new Response(object.body, { status: 200, headers });
  }
  const served = object.range as { offset: number; length: number } | undefined;
  const offset = served?.offset ?? 0;
  const length = served?.length ?? object.size;
  headers.set("content-range", `bytes ${offset}-${offset + length - 1}/${object.size}`);
  headers.set("content-length", String(length));
  return new Response(object.body, { status: 206, headers });
}
