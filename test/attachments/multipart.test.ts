import { describe, expect, it } from "vitest";
import { boundaryOf, likelyFileLength, openFilePart } from "../../src/attachments/multipart";

const encoder = new TextEncoder();

function streamOf(bytes: Uint8Array, chunkSize: number) {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.byteLength) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + chunkSize));
      offset += chunkSize;
    },
  });
}

async function readAll(body: Uint8Array, boundary: string, chunkSize: number) {
  const part = await openFilePart(streamOf(body, chunkSize), boundary);
  const pieces: number[] = [];
  for (let piece = await part.content.read(); piece !== null; piece = await part.content.read()) pieces.push(...piece);
  return { ...part, bytes: new Uint8Array(pieces) };
}

describe("openFilePart", () => {
  it("finds the file part at every chunking, past a preamble and other fields", async () => {
    const boundary = "b0undary";
    // CRLFs, dashes and the boundary itself, never as a whole delimiter (CRLF, "--", boundary): clients avoid that.
    const content = "x\r\n--b0undar\r\nx--b0undary\r\n\r\n\r--b0undary\n--";
    const body = encoder.encode(
      "preamble text\r\n" +
        `--${boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\nhi there\r\n` +
        `--${boundary}  \r\n\r\nno headers at all\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a \\"b\\".txt"\r\nContent-Type: text/plain\r\n\r\n` +
        `${content}\r\n--${boundary}--\r\nepilogue`,
    );
    // The part without headers is not form-data: refused, whatever the chunking.
    await expect(readAll(body, boundary, 5)).rejects.toThrow(/not form-data/);

    const valid = encoder.encode(
      "preamble text\r\n" +
        `--${boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\nhi there\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a \\"b\\".txt"\r\nContent-Type: text/plain\r\n\r\n` +
        `${content}\r\n--${boundary}--\r\nepilogue`,
    );
    for (let size = 1; size <= 24; size++) {
      const part = await readAll(valid, boundary, size);
      expect(new TextDecoder().decode(part.bytes), `chunk ${size}`).toBe(content);
      expect(part.filename).toBe('a "b".txt');
      expect(part.contentType).toBe("text/plain");
      const offset = valid.byteLength - encoder.encode(`${content}\r\n--${boundary}--\r\nepilogue`).byteLength;
      expect(part.contentOffset, `chunk ${size}`).toBe(offset);
    }
  });

  it("guesses the file's length from the body's length when the file is the last part", async () => {
    const boundary = "----formdata-undici-0123";
    for (const before of ["", `--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n`]) {
      const content = "0123456789\r\n--".repeat(50);
      const body = encoder.encode(
        `${before}--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n` +
          `Content-Type: application/octet-stream\r\n\r\n${content}\r\n--${boundary}--\r\n`,
      );
      for (const size of [1, 7, 64, 4096]) {
        const part = await openFilePart(streamOf(body, size), boundary);
        expect(likelyFileLength(body.byteLength, part, boundary), `chunk ${size}`).toBe(content.length);
      }
    }
  });

  it("reads an empty file, RFC 8187 filenames, and a body that starts with its boundary", async () => {
    const body = encoder.encode(
      `--B\r\nContent-Disposition: form-data; name="file"; filename="fallback.txt"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt\r\n\r\n\r\n--B--`,
    );
    const part = await readAll(body, "B", 3);
    expect(part.bytes.byteLength).toBe(0);
    expect(part.filename).toBe("résumé.txt");
    expect(part.contentType).toBeNull();
  });

  it("refuses bodies without the part, cut short, or without a boundary", async () => {
    await expect(
      readAll(encoder.encode(`--B\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--B--\r\n`), "B", 4),
    ).rejects.toThrow(/no 'file' part/);
    await expect(
      readAll(encoder.encode(`--B\r\nContent-Disposition: form-data; name="file"\r\n\r\n123456`), "B", 4),
    ).rejects.toThrow(/ended inside a part/);
    await expect(readAll(encoder.encode(`--B\r\nContent-Disposition: form-data; name="file"`), "B", 4)).rejects.toThrow(
      /headers/,
    );
    expect(boundaryOf('multipart/form-data; boundary="a b"')).toBe("a b");
    expect(boundaryOf("multipart/form-data; charset=utf-8; boundary=----x")).toBe("----x");
    expect(() => boundaryOf("multipart/form-data")).toThrow(/boundary/);
  });
});
