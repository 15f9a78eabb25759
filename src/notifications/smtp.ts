import { connect } from "cloudflare:sockets";

/**
 * A small SMTP client (RFC 5321) over `cloudflare:sockets`: EHLO, STARTTLS when offered (or implicit TLS on port
 * 465), AUTH PLAIN or LOGIN, one message to one recipient. Every reply is awaited with a timeout, and a connection
 * the server closes is an error, never a wait.
 */

/** A reply that was not the one expected; `code` is the SMTP reply code (0 when the connection failed). */
export class SmtpError extends Error {
  readonly code: number;
  /** The server had the whole message but its reply never came: whether it took the message is unknown. */
  readonly unconfirmed: boolean;

  constructor(code: number, message: string, unconfirmed = false) {
    super(message);
    this.name = "SmtpError";
    this.code = code;
    this.unconfirmed = unconfirmed;
  }
}

/** Where and how to connect. */
export interface SmtpServerOptions {
  host: string;
  port: number;
  user?: string;
  password?: string;
  /** How long to wait for the connection and for each reply. */
  timeoutMs?: number;
}

/** One message: the envelope addresses and the message itself (headers, blank line, body; CRLF line ends). */
export interface SmtpMessage {
  from: string;
  to: string;
  data: string;
}

const encoder = new TextEncoder();

/** Sends one message; throws `SmtpError` when the server refuses or the connection fails. */
export async function sendSmtp(server: SmtpServerOptions, message: SmtpMessage): Promise<void> {
  const timeoutMs = server.timeoutMs ?? 15_000;
  const implicitTls = server.port === 465;
  let socket: Socket;
  try {
    socket = connect(
      { hostname: server.host, port: server.port },
      { secureTransport: implicitTls ? "on" : "starttls", allowHalfOpen: false },
    );
    await withTimeout(socket.opened, timeoutMs, "connecting");
  } catch (error) {
    throw error instanceof SmtpError ? error : new SmtpError(0, `cannot connect: ${String(error)}`);
  }
  let session = new Session(socket, timeoutMs);
  try {
    await session.expect([220], "greeting");
    let capabilities = await session.ehlo();
    if (!implicitTls && capabilities.some((line) => /^STARTTLS\b/i.test(line))) {
      await session.command("STARTTLS", [220]);
      session.release();
      socket = socket.startTls();
      session = new Session(socket, timeoutMs);
      capabilities = await session.ehlo();
    }
    if (server.user) await session.authenticate(capabilities, server.user, server.password ?? "");
    await session.command(`MAIL FROM:<${message.from}>`, [250]);
    await session.command(`RCPT TO:<${message.to}>`, [250, 251]);
    await session.command("DATA", [354]);
    await session.write(`${dotStuff(message.data)}\r\n.\r\n`);
    await session.expect([250], "message").catch((error: unknown) => {
      // No reply (a timeout, a closed connection) after the end of data: the server may have queued it.
      if (error instanceof SmtpError && error.code === 0) throw new SmtpError(0, error.message, true);
      throw error;
    });
    await session.command("QUIT", [221]).catch(() => undefined);
  } finally {
    session.release();
    await socket.close().catch(() => undefined);
  }
}

/** RFC 5321 section 4.5.2: a line starting with "." gets another. */
function dotStuff(data: string): string {
  return data.replace(/\r?\n/g, "\r\n").replace(/^\./gm, "..");
}

class Session {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = "";

  constructor(
    socket: Socket,
    private readonly timeoutMs: number,
  ) {
    this.reader = socket.readable.getReader();
    this.writer = socket.writable.getWriter();
  }

  /** Releases the stream locks (before STARTTLS or close). */
  release(): void {
    try {
      this.reader.releaseLock();
      this.writer.releaseLock();
    } catch {
      // Already released, or a read is still pending on a connection being dropped.
    }
  }

  async write(text: string): Promise<void> {
    await withTimeout(this.writer.write(encoder.encode(text)), this.timeoutMs, "writing");
  }

  /** Sends a command and checks the reply code. */
  async command(line: string, codes: number[]): Promise<string[]> {
    await this.write(`${line}\r\n`);
    return this.expect(codes, line.startsWith("AUTH") ? "AUTH" : line);
  }

  /** Reads one (possibly multi-line) reply and checks its code. */
  async expect(codes: number[], what: string): Promise<string[]> {
    const { code, lines } = await withTimeout(this.reply(), this.timeoutMs, `waiting for the reply to ${what}`);
    if (!codes.includes(code)) throw new SmtpError(code, `${what}: ${code} ${lines.join(" ")}`.slice(0, 300));
    return lines;
  }

  /** EHLO, falling back to HELO; answers the capability lines. */
  async ehlo(): Promise<string[]> {
    await this.write("EHLO parley\r\n");
    const { code, lines } = await withTimeout(this.reply(), this.timeoutMs, "waiting for the reply to EHLO");
    if (code === 250) return lines.slice(1);
    await this.command("HELO parley", [250]);
    return [];
  }

  async authenticate(capabilities: string[], user: string, password: string): Promise<void> {
    const auth = capabilities.find((line) => /^AUTH[ =]/i.test(line))?.toUpperCase() ?? "";
    if (/\bPLAIN\b/.test(auth)) {
      await this.command(`AUTH PLAIN ${base64(`\0${user}\0${password}`)}`, [235]);
    } else if (/\bLOGIN\b/.test(auth)) {
      await this.command("AUTH LOGIN", [334]);
      await this.command(base64(user), [334]);
      await this.command(base64(password), [235]);
    } else {
      throw new SmtpError(530, "the server offers neither AUTH PLAIN nor AUTH LOGIN");
    }
  }

  private async reply(): Promise<{ code: number; lines: string[] }> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.line();
      const match = /^(\d{3})([ -]?)(.*)$/.exec(line);
      if (!match) throw new SmtpError(0, `malformed reply: ${line.slice(0, 100)}`);
      lines.push(match[3]);
      if (match[2] !== "-") return { code: Number(match[1]), lines };
    }
  }

  private async line(): Promise<string> {
    for (;;) {
      const end = this.buffer.indexOf("\n");
      if (end >= 0) {
        const line = this.buffer.slice(0, end).replace(/\r$/, "");
        this.buffer = this.buffer.slice(end + 1);
        return line;
      }
      const { done, value } = await this.reader.read();
      if (done) throw new SmtpError(0, "the server closed the connection");
      this.buffer += this.decoder.decode(value, { stream: true });
      if (this.buffer.length > 64 * 1024) throw new SmtpError(0, "reply too long");
    }
  }
}

function base64(text: string): string {
  let binary = "";
  for (const byte of encoder.encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new SmtpError(0, `timed out ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
