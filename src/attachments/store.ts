import { ApiError } from "../errors";
import { toHex } from "../lib/crypto";
import { resolveContentType, SNIFF_BYTES } from "./sniff";
import { concatBytes } from "../lib/bytes";

/** A pull source of byte chunks: `null` at the end. Request bodies and multipart file parts are both one. */
export interface ChunkSource {
  read(): Promise<Uint8Array | null>;
  cancel(reason?: unknown): Promise<void>;
}

/** How much one read of a request body asks for: fewer, larger chunks cost less JavaScript per byte. */
const READ_BYTES = 256 * 1024;

/**
 * A stream as a ChunkSource. Byte streams (request bodies) are read with a BYOB reader into buffers of `READ_BYTES`:
 * the runtime fills them as data arrives, so a file crosses into JavaScript in a few large pieces.
 */
export function streamSource(stream: ReadableStream<Uint8Array>): ChunkSource {
  let read: () => Promise<ReadableStreamReadResult<Uint8Array>>;
  let reader: ReadableStreamBYOBReader | ReadableStreamDefaultReader<Uint8Array>;
  try {
    const byob = stream.getReader({ mode: "byob" });
    reader = byob;
    read = () => byob.read(new Uint8Array(READ_BYTES)) as Promise<ReadableStreamReadResult<Uint8Array>>;
  } catch {
    const plain = stream.getReader();
    reader = plain;
    read = () => plain.read();
  }
  return {
    async read() {
      const { done, value } = await read();
      if (done || !value) return null;
      // A read that filled little of its buffer is copied out, so held chunks never pin much more than their bytes.
      return value.byteLength * 2 < value.buffer.byteLength ? value.slice() : value;
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

/** What to store and how: the size limit, the declared type and the name. */
export interface StoreOptions {
  maxBytes: number;
  declaredType: string | null;
  name: string;
  /**
   * The length the source most likely has (a multipart file's, from the body's Content-Length). When it is past one
   * part, the source streams into one `put` of that length instead of R2 parts; a wrong guess costs a copy, never bytes.
   */
  likelyLength?: number;
  /**
   * Records the upload (its row in D1) as soon as every byte is hashed and handed to R2, while R2 finishes storing
   * it. When either fails the object is deleted and the error thrown; the caller undoes a record that succeeded.
   */
  record?: (stored: StoredObject) => Promise<unknown>;
}

/**
 * R2 parts of uploads whose length is unknown (multipart bodies, chunked requests). R2 wants every part but the last
 * at least 5 MiB and all of one size; one part is the most an upload holds in memory.
 */
export const PART_BYTES = 5 * 1024 * 1024;

function tooLarge(maxBytes: number): ApiError {
  return new ApiError("PAYLOAD_TOO_LARGE", `the file is larger than ${maxBytes} bytes (MAX_ATTACHMENT_BYTES)`);
}

/**
 * Streams a source of unknown length (a multipart file, a chunked body) into R2 under `key`, holding at most one part:
 * its leading bytes decide the content type (415 on a mismatch, before anything is written), every byte is counted
 * against the limit (413 as soon as it is passed) and hashed on the way. It goes up in R2 parts, or in one `put` when
 * it fits in one. On any failure nothing is left in R2.
 */
export async function storeObject(
  bucket: R2Bucket,
  key: string,
  source: ChunkSource,
  options: StoreOptions,
): Promise<StoredObject> {
  const { maxBytes } = options;
  const reader = hashedReader(source, maxBytes, () => tooLarge(maxBytes));
  const { head, ended, contentType } = await readHead(reader, options.declaredType);
  const metadata: R2PutOptions = { httpMetadata: { contentType }, customMetadata: { name: options.name } };
  let stored: StoredObject | undefined;
  let recording: Promise<unknown> | undefined;
  const chunks = async function* () {
    yield* head;
    if (!ended) {
      for (let chunk = await reader.take(); chunk !== null; chunk = await reader.take()) yield chunk;
    }
    // Every byte is hashed and handed over: the record is written while R2 completes the object.
    stored = { size: reader.size, sha256: await reader.sha256(), contentType };
    recording = options.record?.(stored);
    recording?.catch(() => undefined);
  };

  const { likelyLength } = options;
  try {
    if (!ended && likelyLength !== undefined && likelyLength > PART_BYTES && likelyLength <= maxBytes) {
      await putGuessingLength(bucket, key, chunks(), likelyLength, metadata);
    } else {
      await putInParts(bucket, key, chunks(), metadata);
    }
  } catch (error) {
    await source.cancel(error);
    await recording?.catch(() => undefined);
    throw error;
  }
  await settle(bucket, key, Promise.resolve(), recording);
  return stored!;
}

/**
 * A raw body whose Content-Length is known (and within the limit): its leading bytes are read to check the content
 * type, then it streams in large reads into the hash and into a `FixedLengthStream` R2 reads, in one `put`. The fixed
 * length rejects a body shorter or longer than announced; on any failure nothing is left in R2.
 */
export async function storeBody(
  bucket: R2Bucket,
  key: string,
  body: ReadableStream<Uint8Array>,
  options: StoreOptions & { length: number },
): Promise<StoredObject> {
  const { length } = options;
  const source = streamSource(body);
  const reader = hashedReader(
    source,
    length,
    () => new ApiError("BAD_REQUEST", "the body is longer than its Content-Length"),
  );
  const { head, ended, contentType } = await readHead(reader, options.declaredType);

  const fixed = new FixedLengthStream(length);
  const writer = fixed.writable.getWriter();
  const put = bucket.put(key, fixed.readable, {
    httpMetadata: { contentType },
    customMetadata: { name: options.name },
  });
  try {
    for (const chunk of head) await writer.write(chunk);
    if (!ended) {
      for (let chunk = await reader.take(); chunk !== null; chunk = await reader.take()) await writer.write(chunk);
    }
    await writer.close();
  } catch (error) {
    await writer.abort(error).catch(() => undefined);
    await source.cancel(error);
    await put.catch(() => undefined);
    await bucket.delete(key).catch(() => undefined);
    if (error instanceof ApiError) throw error;
    throw new ApiError("BAD_REQUEST", "the body ended before its Content-Length");
  }
  // Every byte is hashed and handed over: the record is written while R2 completes the object.
  const stored = { size: reader.size, sha256: await reader.sha256(), contentType };
  await settle(bucket, key, put, options.record?.(stored));
  return stored;
}

/** A source read through SHA-256 and counted: past `limit` bytes, `take` throws `overLimit()`. */
interface HashedReader {
  source: ChunkSource;
  /** The bytes taken so far. */
  readonly size: number;
  take(): Promise<Uint8Array | null>;
  /** The hex SHA-256 of every byte taken (once the source has ended). */
  sha256(): Promise<string>;
}

function hashedReader(source: ChunkSource, limit: number, overLimit: () => ApiError): HashedReader {
  const digest = new crypto.DigestStream("SHA-256");
  const hasher = digest.getWriter();
  let size = 0;
  return {
    source,
    get size() {
      return size;
    },
    async take() {
      const chunk = await source.read();
      if (chunk === null) return null;
      size += chunk.byteLength;
      if (size > limit) throw overLimit();
      await hasher.write(chunk);
      return chunk;
    },
    async sha256() {
      await hasher.close();
      return toHex(await digest.digest);
    },
  };
}

/**
 * Reads a source's leading bytes (`SNIFF_BYTES`, or all of a shorter file) and checks the content type against them:
 * 400 for an empty file, 415 for a mismatch. On any failure the source is cancelled.
 */
async function readHead(
  reader: HashedReader,
  declaredType: string | null,
): Promise<{ head: Uint8Array[]; ended: boolean; contentType: string }> {
  const head: Uint8Array[] = [];
  let ended = false;
  try {
    while (reader.size < SNIFF_BYTES) {
      const chunk = await reader.take();
      if (chunk === null) {
        ended = true;
        break;
      }
      if (chunk.byteLength > 0) head.push(chunk);
    }
    if (reader.size === 0) {
      throw new ApiError("BAD_REQUEST", "the file is empty", [{ path: "(body)", message: "send at least one byte" }]);
    }
    return { head, ended, contentType: resolveContentType(declaredType, concatBytes(head, reader.size)) };
  } catch (error) {
    await reader.source.cancel(error);
    throw error;
  }
}

/** Waits for R2 to complete the object and for its record; when either fails, deletes the object and throws. */
async function settle(
  bucket: R2Bucket,
  key: string,
  put: Promise<unknown>,
  recording: Promise<unknown> | undefined,
): Promise<void> {
  const [written, recorded] = await Promise.allSettled([put, recording]);
  if (written.status === "fulfilled" && recorded.status === "fulfilled") return;
  await bucket.delete(key).catch(() => undefined);
  throw written.status === "rejected" ? written.reason : (recorded as PromiseRejectedResult).reason;
}

/**
 * Uploads chunks whose total length is most likely `length` in one `put` of that length, streaming. When the guess was
 * wrong, the object is completed anyway (padded with zeros, or holding the first `length` bytes with the rest kept
 * aside) and then rewritten from its real prefix: correct in every case, one put in the usual one.
 */
async function putGuessingLength(
  bucket: R2Bucket,
  key: string,
  chunks: AsyncIterable<Uint8Array>,
  length: number,
  metadata: R2PutOptions,
): Promise<void> {
  const fixed = new FixedLengthStream(length);
  const writer = fixed.writable.getWriter();
  const put = bucket.put(key, fixed.readable, metadata);
  let written = 0;
  const rest: Uint8Array[] = [];
  let restBytes = 0;
  try {
    for await (const chunk of chunks) {
      const fits = Math.min(chunk.byteLength, length - written);
      if (fits > 0) await writer.write(fits === chunk.byteLength ? chunk : chunk.subarray(0, fits));
      written += fits;
      if (fits < chunk.byteLength) {
        rest.push(chunk.subarray(fits));
        restBytes += chunk.byteLength - fits;
      }
    }
    const exact = written === length && restBytes === 0;
    for (let pad = length - written; pad > 0; pad -= Math.min(pad, PAD.byteLength)) {
      await writer.write(PAD.subarray(0, Math.min(pad, PAD.byteLength)));
    }
    await writer.close();
    await put;
    if (!exact) await rewriteFromPrefix(bucket, key, written, concatBytes(rest, restBytes), metadata);
  } catch (error) {
    await writer.abort(error).catch(() => undefined);
    await put.catch(() => undefined);
    await bucket.delete([key, `${key}.partial`]).catch(() => undefined);
    throw error;
  }
}

/** Zeros that pad a guessed-length put whose source ended early. */
const PAD = new Uint8Array(256 * 1024);

/** Replaces the object at `key` by its first `prefix` bytes followed by `tail`, through a copy at `key.partial`. */
async function rewriteFromPrefix(
  bucket: R2Bucket,
  key: string,
  prefix: number,
  tail: Uint8Array,
  metadata: R2PutOptions,
): Promise<void> {
  const partial = `${key}.partial`;
  const copy = async (from: string, to: string, bytes: number, extra: Uint8Array) => {
    const source = await bucket.get(from, { range: { offset: 0, length: bytes } });
    if (!source) throw new Error(`R2 object ${from} vanished while it was rewritten`);
    const fixed = new FixedLengthStream(bytes + extra.byteLength);
    const put = bucket.put(to, fixed.readable, metadata);
    await source.body.pipeTo(fixed.writable, { preventClose: true });
    const writer = fixed.writable.getWriter();
    if (extra.byteLength > 0) await writer.write(extra);
    await writer.close();
    await put;
  };
  await copy(key, partial, prefix, tail);
  await copy(partial, key, prefix + tail.byteLength, new Uint8Array(0));
  await bucket.delete(partial);
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
        const all = concatBytes(pending, pendingBytes);
        upload ??= await bucket.createMultipartUpload(key, metadata);
        parts.push(await upload.uploadPart(parts.length + 1, all.subarray(0, PART_BYTES)));
        pending = pendingBytes > PART_BYTES ? [all.subarray(PART_BYTES)] : [];
        pendingBytes -= PART_BYTES;
      }
    }
    const rest = concatBytes(pending, pendingBytes);
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
