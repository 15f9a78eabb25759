import { ApiError } from "../errors";
import { streamSource, type ChunkSource } from "./store";

/** The file of a `multipart/form-data` body, found by streaming: its part's headers and a source of its bytes. */
export interface FilePart {
  filename: string | null;
  contentType: string | null;
  content: ChunkSource;
  /** How many bytes of the body come before the file's content. */
  contentOffset: number;
}

/** The most a part's headers may take, and the most the parts before the file may take together. */
export const MULTIPART_LIMITS = { headerBytes: 16 * 1024, otherPartsBytes: 64 * 1024 } as const;

const encoder = new TextEncoder();
const CRLF = encoder.encode("\r\n");
const HEADERS_END = encoder.encode("\r\n\r\n");

function bad(message: string): ApiError {
  return new ApiError("BAD_REQUEST", `invalid multipart body: ${message}`, [{ path: "(body)", message }]);
}

/** The boundary of a `multipart/form-data` content type (RFC 2046: 1..70 characters), or a 400. */
export function boundaryOf(contentType: string): string {
  const match = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))/i.exec(contentType);
  const boundary = match?.[1] ?? match?.[2];
  if (!boundary) throw bad("the content type has no boundary");
  return boundary;
}

/**
 * The length a multipart file has when it is the last part and the body ends the way browsers, `fetch(FormData)` and
 * curl end it (`\r\n--boundary--\r\n`), from the body's Content-Length: a guess for `storeObject` to verify.
 */
export function likelyFileLength(bodyLength: number, part: FilePart, boundary: string): number {
  return bodyLength - part.contentOffset - encoder.encode(`\r\n--${boundary}--\r\n`).byteLength;
}

/** The first index of `needle` in `haystack` at or after `from`, or -1. */
function indexOf(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  const first = needle[0];
  const last = haystack.byteLength - needle.byteLength;
  for (let i = haystack.indexOf(first, from); i !== -1 && i <= last; i = haystack.indexOf(first, i + 1)) {
    let j = 1;
    while (j < needle.byteLength && haystack[i + j] === needle[j]) j++;
    if (j === needle.byteLength) return i;
  }
  return -1;
}

/** The parameters of a `Content-Disposition` header value (quoted strings unescaped, `filename*` decoded). */
function dispositionParams(value: string): Map<string, string> {
  const params = new Map<string, string>();
  const pattern = /;\s*([A-Za-z0-9!#$&+.^_`|~-]+\*?)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))/g;
  for (const match of value.matchAll(pattern)) {
    const name = match[1].toLowerCase();
    let param = match[2] !== undefined ? match[2].replace(/\\(.)/g, "$1") : match[3];
    if (name.endsWith("*")) {
      const extended = /^([A-Za-z0-9_-]+)'[^']*'(.*)$/.exec(param);
      if (!extended || extended[1].toLowerCase() !== "utf-8") continue;
      try {
        param = decodeURIComponent(extended[2]);
      } catch {
        continue;
      }
    }
    params.set(name, param);
  }
  return params;
}

/**
 * Reads a `multipart/form-data` body up to the part named `field` and answers that part with a source of its content,
 * which ends at the part's closing delimiter. Nothing is buffered beyond one read chunk and a delimiter's length; parts
 * before the file are skipped (at most `MULTIPART_LIMITS.otherPartsBytes`), anything after it is never read.
 */
export async function openFilePart(
  body: ReadableStream<Uint8Array>,
  boundary: string,
  field = "file",
): Promise<FilePart> {
  const reader = streamSource(body);
  const delimiter = encoder.encode(`\r\n--${boundary}`);
  const keep = delimiter.byteLength - 1;
  // A virtual CRLF before the body: the first delimiter may then be found like every other one.
  let buffer: Uint8Array = CRLF;
  let ended = false;
  let skipped = 0;
  let bytesRead = 0;
  const cancel = (reason?: unknown) => reader.cancel(reason);

  /** Appends the next chunk to the buffer; false at the end of the body. */
  const more = async (): Promise<boolean> => {
    if (ended) return false;
    const value = await reader.read();
    if (value === null) {
      ended = true;
      return false;
    }
    bytesRead += value.byteLength;
    if (buffer.byteLength === 0) buffer = value;
    else {
      const joined = new Uint8Array(buffer.byteLength + value.byteLength);
      joined.set(buffer);
      joined.set(value, buffer.byteLength);
      buffer = joined;
    }
    return true;
  };

  /** The next piece of the current part's content; null once its delimiter has been consumed. */
  let partOpen = true;
  const nextContent = async (): Promise<Uint8Array | null> => {
    for (;;) {
      if (!partOpen) return null;
      const at = indexOf(buffer, delimiter);
      if (at !== -1) {
        const piece = buffer.subarray(0, at);
        buffer = buffer.subarray(at + delimiter.byteLength);
        partOpen = false;
        if (piece.byteLength > 0) return piece;
        return null;
      }
      if (buffer.byteLength > keep) {
        const piece = buffer.subarray(0, buffer.byteLength - keep);
        buffer = buffer.subarray(buffer.byteLength - keep);
        return piece;
      }
      if (!(await more())) throw bad("the body ended inside a part");
    }
  };

  const need = async (bytes: number) => {
    while (buffer.byteLength < bytes) if (!(await more())) throw bad("the body ended inside a part's headers");
  };

  try {
    // The preamble, then each part until the file.
    for (;;) {
      for (let piece = await nextContent(); piece !== null; piece = await nextContent()) {
        skipped += piece.byteLength;
        if (skipped > MULTIPART_LIMITS.otherPartsBytes) {
          throw new ApiError(
            "PAYLOAD_TOO_LARGE",
            `the parts before '${field}' exceed ${MULTIPART_LIMITS.otherPartsBytes} bytes`,
          );
        }
      }
      await need(2);
      if (buffer[0] === 0x2d && buffer[1] === 0x2d) throw bad(`no '${field}' part`);
      // Transport padding, then the CRLF that ends the delimiter line.
      let lineEnd = indexOf(buffer, CRLF);
      while (lineEnd === -1 && buffer.byteLength <= MULTIPART_LIMITS.headerBytes) {
        if (!(await more())) throw bad("the body ended inside a delimiter line");
        lineEnd = indexOf(buffer, CRLF);
      }
      if (lineEnd === -1 || !/^[ \t]*$/.test(new TextDecoder().decode(buffer.subarray(0, lineEnd)))) {
        throw bad("a delimiter line is malformed");
      }
      buffer = buffer.subarray(lineEnd);
      // From the CRLF before the first header line: headers end at the first empty line.
      let end = indexOf(buffer, HEADERS_END);
      while (end === -1) {
        if (buffer.byteLength > MULTIPART_LIMITS.headerBytes) throw bad("a part's headers are too large");
        if (!(await more())) throw bad("the body ended inside a part's headers");
        end = indexOf(buffer, HEADERS_END);
      }
      const headerText = new TextDecoder().decode(buffer.subarray(CRLF.byteLength, end));
      buffer = buffer.subarray(end + HEADERS_END.byteLength);
      partOpen = true;
      const headers = new Map<string, string>();
      for (const line of headerText.split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
      const disposition = headers.get("content-disposition") ?? "";
      if (!/^form-data\s*(;|$)/i.test(disposition)) throw bad("a part is not form-data");
      const params = dispositionParams(disposition);
      if (params.get("name") !== field) continue;
      return {
        filename: params.get("filename*") ?? params.get("filename") ?? null,
        contentType: headers.get("content-type") ?? null,
        content: { read: nextContent, cancel },
        contentOffset: bytesRead - buffer.byteLength,
      };
    }
  } catch (error) {
    await cancel(error);
    throw error;
  }
}
