import { ApiError } from "../errors";
import { toHex } from "../lib/crypto";
import { resolveContentType, SNIFF_BYTES } from "./sniff";

/** A pull source of byte chunks: `null` at the end. Request bodies and multipart file parts are both one. */
export interface ChunkSource {
  read(): Promise<Uint8Array | null>;
  cancel(reason?: unknown): Promise<void>;
}

/** A stream as a ChunkSource. */
export function streamSource(stream: ReadableStream<Uint8Array>): ChunkSource {
  const reader = stream.getReader();
  return {
    async read() {
      const { done, value } = await reader.read();
      return done ? null : value;
    },
    async cancel(reason) {
      await reader.cancel(reason).catch(() => undefined);
    },
  };
}

/** What an upload stored: its size, SHA-256 (lower-case hex) and the content type checked against its bytes. */
export interface StoredObject {
  size: number;
  sha256: string;
  contentType: string;
}

/** What to store and how: the exact length when the request says it, the size limit, the declared type and the name. */
export interface StoreOptions {
  length: number | null;
  maxBytes: number;
  declaredType: string | null;
  name: string;
}

/**
 * R2 parts of uploads whose length is unknown (multipart bodies, chunked requests). R2 wants every part but the last
 * at least 5 MiB and all of one size; one part is the most an upload holds in memory.
 */
export const PART_BYTES = 5 * 1024 * 1024;

function tooLarge(maxBytes: number): ApiError {
  return new ApiError("PAYLOAD_TOO_LARGE", `the file is larger than ${maxBytes} bytes (MAX_ATTACHMENT_BYTES)`);
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/**
 * Streams a source into R2 under `key` without holding the file: its leading bytes decide the content type (415 on a
 * mismatch, before anything is written), every byte is counted against the limit (413 as soon as it is passed) and
 * hashed on the way. A known length streams through a `FixedLengthStream` into one `put`; an unknown one goes up in
 * parts (one `put` when it fits in one). On any failure nothing is left in R2.
 */
export async function storeObject(
  bucket: R2Bucket,
  key: string,
  source: ChunkSource,
  options: StoreOptions,
): Promise<StoredObject> {
  const { length, maxBytes } = options;
  let size = 0;
  const digest = new crypto.DigestStream("SHA-256");
  const hasher = digest.getWriter();
  const take = async (): Promise<Uint8Array | null> => {
    const chunk = await source.read();
    if (chunk === null) return null;
    size += chunk.byteLength;
    if (size > maxBytes) throw tooLarge(maxBytes);
    await hasher.write(chunk);
    return chunk;
  };

  let contentType: string;
  const head: Uint8Array[] = [];
  let ended = false;
  try {
    while (size < SNIFF_BYTES) {
      const chunk = await take();
      if (chunk === null) {
        ended = true;
        break;
      }
      if (chunk.byteLength > 0) head.push(chunk);
    }
    if (size === 0)
      throw new ApiError("BAD_REQUEST", "the file is empty", [{ path: "(body)", message: "send at least one byte" }]);
    contentType = resolveContentType(options.declaredType, concat(head, size));
  } catch (error) {
    await source.cancel(error);
    throw error;
  }

  const metadata: R2PutOptions = { httpMetadata: { contentType }, customMetadata: { name: options.name } };
  const chunks = async function* () {
    yield* head;
    if (ended) return;
    for (;;) {
      const chunk = await take();
      if (chunk === null) return;
      yield chunk;
    }
  };

  try {
    if (length !== null) await putFixed(bucket, key, length, chunks(), metadata);
    else await putInParts(bucket, key, chunks(), metadata);
  } catch (error) {
    await source.cancel(error);
    throw error;
  }
  await hasher.close();
  return { size, sha256: toHex(await digest.digest), contentType };
}

/** One `put` of a stream of known length: the chunks are written into a `FixedLengthStream` as R2 reads it. */
async function putFixed(
  bucket: R2Bucket,
  key: string,
  length: number,
  chunks: AsyncIterable<Uint8Array>,
  metadata: R2PutOptions,
): Promise<void> {
  const fixed = new FixedLengthStream(length);
  const writer = fixed.writable.getWriter();
  const put = bucket.put(key, fixed.readable, metadata);
  try {
    for await (const chunk of chunks) await writer.write(chunk);
    await writer.close();
  } catch (error) {
    await writer.abort(error).catch(() => undefined);
    await put.catch(() => undefined);
    throw error;
  }
  await put;
}

/** Uploads chunks of unknown total length: one `put` when they fit in a part, else an R2 multipart upload. */
async function putInParts(
  bucket: R2Bucket,
  key: string,
  chunks: AsyncIterable<Uint8Array>,
  metadata: R2PutOptions,
): Promise<void> {
  let upload: R2MultipartUpload | null = null;
  const parts: R2UploadedPart[] = [];
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  try {
    for await (const chunk of chunks) {
      pending.push(chunk);
      pendingBytes += chunk.byteLength;
      while (pendingBytes >= PART_BYTES) {
        const all = concat(pending, pendingBytes);
        upload ??= await bucket.createMultipartUpload(key, metadata);
        parts.push(await upload.uploadPart(parts.length + 1, all.subarray(0, PART_BYTES)));
        pending = pendingBytes > PART_BYTES ? [all.subarray(PART_BYTES)] : [];
        pendingBytes -= PART_BYTES;
      }
    }
    const rest = concat(pending, pendingBytes);
    if (!upload) {
      await bucket.put(key, rest, metadata);
      return;
    }
    if (pendingBytes > 0) parts.push(await upload.uploadPart(parts.length + 1, rest));
    await upload.complete(parts);
  } catch (error) {
    if (upload) await upload.abort().catch(() => undefined);
    throw error;
  }
}
