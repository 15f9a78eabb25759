import { createServer, type AddressInfo, type Socket } from "node:net";

/** One message as the SMTP server received it: the envelope, the login used, and the parsed content. */
export interface ReceivedEmail {
  mailFrom: string;
  rcptTo: string[];
  auth: { user: string; password: string } | null;
  raw: string;
  headers: [string, string][];
  text: string | null;
  html: string | null;
}

/** A running SMTP server and what it recorded. */
export interface SmtpServer {
  port: number;
  messages: ReceivedEmail[];
  /** Every RCPT TO the server answered, with its reply code. */
  recipients: { address: string; code: number }[];
  close(): Promise<void>;
}

/**
 * A minimal real SMTP server (RFC 5321 dialogue: EHLO/HELO, AUTH PLAIN/LOGIN, MAIL FROM, RCPT TO, DATA, RSET, NOOP,
 * QUIT) that records each message. Recipients whose local part starts with `tempfail` get a 451 the first time they
 * are tried (a transient failure), those starting with `reject` always get a 550 (a permanent one), and for those
 * starting with `drop` the server closes the connection without a reply the first time. For those starting with
 * `silent` the server takes the whole message the first time and never replies to its end.
 */
export function startSmtpServer(): Promise<SmtpServer> {
  const messages: ReceivedEmail[] = [];
  const recipients: { address: string; code: number }[] = [];
  const tempfailed = new Set<string>();
  const sockets = new Set<Socket>();

  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    let buffer = "";
    let mode: "command" | "data" | "auth-login-user" | "auth-login-password" = "command";
    let envelope: { mailFrom: string; rcptTo: string[] } = { mailFrom: "", rcptTo: [] };
    let auth: { user: string; password: string } | null = null;
    let loginUser = "";
    const reply = (line: string) => socket.write(`${line}\r\n`);
    reply("220 parley-test ESMTP ready");

    const command = (line: string) => {
      const verb = line.split(" ")[0].toUpperCase();
      if (mode === "auth-login-user") {
        loginUser = Buffer.from(line, "base64").toString("utf8");
        mode = "auth-login-password";
        return reply("334 UGFzc3dvcmQ6");
      }
      if (mode === "auth-login-password") {
        auth = { user: loginUser, password: Buffer.from(line, "base64").toString("utf8") };
        mode = "command";
        return reply("235 2.7.0 Authentication successful");
      }
      switch (verb) {
        case "EHLO":
          return socket.write("250-parley-test\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n");
        case "HELO":
          return reply("250 parley-test");
        case "AUTH": {
          const [, mechanism, initial] = line.split(" ");
          if (mechanism?.toUpperCase() === "PLAIN" && initial) {
            const [, user, password] = Buffer.from(initial, "base64").toString("utf8").split("\0");
            auth = { user, password };
            return reply("235 2.7.0 Authentication successful");
          }
          if (mechanism?.toUpperCase() === "LOGIN") {
            mode = "auth-login-user";
            return reply("334 VXNlcm5hbWU6");
          }
          return reply("504 5.5.4 mechanism not supported");
        }
        case "MAIL":
          envelope = { mailFrom: /<([^>]*)>/.exec(line)?.[1] ?? "", rcptTo: [] };
          return reply("250 2.1.0 OK");
        case "RCPT": {
          const address = /<([^>]*)>/.exec(line)?.[1] ?? "";
          const local = address.split("@")[0];
          let code = 250;
          if (local.startsWith("drop") && !tempfailed.has(address)) {
            tempfailed.add(address);
            recipients.push({ address, code: 0 });
            return socket.destroy();
          }
          if (local.startsWith("reject")) code = 550;
          else if (local.startsWith("tempfail") && !tempfailed.has(address)) {
            tempfailed.add(address);
            code = 451;
          }
          recipients.push({ address, code });
          if (code !== 250) return reply(`${code} ${code === 550 ? "5.1.1 no such user" : "4.3.0 try again later"}`);
          envelope.rcptTo.push(address);
          return reply("250 2.1.5 OK");
        }
        case "DATA":
          if (envelope.rcptTo.length === 0) return reply("554 5.5.1 no valid recipients");
          mode = "data";
          return reply("354 end data with <CR><LF>.<CR><LF>");
        case "RSET":
          envelope = { mailFrom: "", rcptTo: [] };
          return reply("250 2.0.0 OK");
        case "NOOP":
          return reply("250 2.0.0 OK");
        case "QUIT":
          reply("221 2.0.0 bye");
          return socket.end();
        default:
          return reply("502 5.5.2 command not recognized");
      }
    };

    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      for (;;) {
        if (mode === "data") {
          const end = buffer.indexOf("\r\n.\r\n");
          if (end < 0) return;
          const raw = buffer.slice(0, end + 2).replace(/^\.\./gm, ".");
          buffer = buffer.slice(end + 5);
          mode = "command";
          messages.push({ ...envelope, auth, raw, ...parseMessage(raw) });
          const silent = envelope.rcptTo.find((a) => a.split("@")[0].startsWith("silent") && !tempfailed.has(a));
          envelope = { mailFrom: "", rcptTo: [] };
          if (silent) {
            tempfailed.add(silent);
            return;
          }
          reply("250 2.0.0 queued");
          continue;
        }
        const newline = buffer.indexOf("\r\n");
        if (newline < 0) return;
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 2);
        command(line);
      }
    });
  });

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        messages,
        recipients,
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

/** Headers (unfolded, encoded words decoded) and the text and HTML parts of a MIME message. */
export function parseMessage(raw: string): Pick<ReceivedEmail, "headers" | "text" | "html"> {
  const { headers, body } = splitEntity(raw);
  const parts: { type: string; body: string }[] = [];
  collectParts(headers, body, parts);
  return {
    headers: headers.map(([name, value]) => [name, decodeWords(value)]),
    text: parts.find((p) => p.type === "text/plain")?.body ?? null,
    html: parts.find((p) => p.type === "text/html")?.body ?? null,
  };
}

function splitEntity(raw: string): { headers: [string, string][]; body: string } {
  const split = raw.indexOf("\r\n\r\n");
  const head = split < 0 ? raw : raw.slice(0, split);
  const body = split < 0 ? "" : raw.slice(split + 4);
  const headers: [string, string][] = [];
  for (const line of head.split("\r\n")) {
    if (/^[ \t]/.test(line) && headers.length > 0) headers[headers.length - 1][1] += ` ${line.trim()}`;
    else if (line.includes(":"))
      headers.push([line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 1).trim()]);
  }
  return { headers, body };
}

function header(headers: [string, string][], name: string): string {
  return headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1] ?? "";
}

function collectParts(headers: [string, string][], body: string, out: { type: string; body: string }[]) {
  const type = header(headers, "content-type") || "text/plain";
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (type.toLowerCase().startsWith("multipart/") && boundary) {
    const sections = body.split(`--${boundary}`).slice(1);
    for (const section of sections) {
      if (section.startsWith("--")) break;
      const entity = splitEntity(section.replace(/^\r\n/, ""));
      collectParts(entity.headers, entity.body.replace(/\r\n$/, ""), out);
    }
    return;
  }
  const encoding = header(headers, "content-transfer-encoding").toLowerCase();
  let decoded = body;
  if (encoding === "quoted-printable") decoded = decodeQuotedPrintable(body);
  else if (encoding === "base64") decoded = Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8");
  out.push({ type: type.split(";")[0].trim().toLowerCase(), body: decoded.replace(/\r\n$/, "") });
}

function decodeQuotedPrintable(text: string): string {
  const bytes: number[] = [];
  const source = text.replace(/=\r\n/g, "");
  for (let i = 0; i < source.length; i++) {
    if (source[i] === "=" && /^[0-9A-F]{2}$/i.test(source.slice(i + 1, i + 3))) {
      bytes.push(parseInt(source.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(source[i], "utf8"));
    }
  }
  return Buffer.from(bytes).toString("utf8");
}

/** Decodes RFC 2047 encoded words (`=?UTF-8?Q?...?=` and `=?UTF-8?B?...?=`). */
function decodeWords(value: string): string {
  return value
    .replace(/\?=\s+=\?/g, "?==?")
    .replace(/=\?([^?]+)\?([QqBb])\?([^?]*)\?=/g, (_m, _charset, kind: string, text: string) =>
      kind.toUpperCase() === "B"
        ? Buffer.from(text, "base64").toString("utf8")
        : decodeQuotedPrintable(text.replace(/_/g, " ")),
    );
}
