/**
 * Splits a byte stream's chunks into lines as they come: UTF-8 decoded across chunk boundaries, each line without its
 * `\n`, the unfinished end kept for the next chunk.
 */
export class LineSplitter {
  private readonly decoder = new TextDecoder();
  private rest = "";

  /** The lines this chunk completes. */
  push(chunk: Uint8Array): string[] {
    const text = this.rest + this.decoder.decode(chunk, { stream: true });
    const lines = text.split("\n");
    this.rest = lines.pop()!;
    return lines;
  }

  /** What follows the last newline, once the stream has ended. */
  end(): string {
    return this.rest + this.decoder.decode();
  }
}
