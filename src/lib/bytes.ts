/** Joins byte chunks into one array of `total` bytes. */
export function concatBytes(chunks: Uint8Array[], total: number): Uint8Array {
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
 * Reads a whole body, but never more than `maxBytes`: past that it stops reading, cancels the stream and throws
 * `tooLarge()`.
 */
export async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
  tooLarge: () => Error,
): Promise<Uint8Array> {
  if (!body) return new Uint8Array();
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  return concatBytes(chunks, total);
}

const scratch = { buffer: new Uint8Array(4096) };
const utf8 = new TextEncoder();

/** The UTF-8 length of a text, counted into a reused buffer (no copy of the text is kept). */
export function utf8Length(text: string): number {
  if (scratch.buffer.length < text.length * 3) scratch.buffer = new Uint8Array(text.length * 3);
  return utf8.encodeInto(text, scratch.buffer).written;
}
