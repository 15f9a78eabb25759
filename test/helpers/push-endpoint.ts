import { createDecipheriv, createECDH, createPublicKey, hkdfSync, verify } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { SmtpServer } from "./smtp-server";

/** A subscription the push service knows: the browser's private key, and the answers to give, in order. */
interface Subscription {
  privateKey: string;
  publicKey: string;
  auth: string;
  statuses: number[];
}

/** What the push service recorded of one push request. */
export interface ReceivedPush {
  status: number;
  headers: Record<string, string>;
  /** The decrypted payload, or null with `decryptError` when it could not be decrypted. */
  payload: string | null;
  decryptError?: string;
  recordSize?: number;
  vapid: { valid: boolean; error?: string; claims?: Record<string, unknown>; k?: string };
}

/**
 * A local push service (RFC 8030) for the tests, and the control API of the test servers:
 * - `POST /push/{id}`: a push; decrypted with the subscription's private key (RFC 8291, independently of the
 *   worker's code, with Node's crypto), its VAPID token verified (RFC 8292), recorded, and answered with the next
 *   configured status (201 when none is left);
 * - `PUT /control/subscriptions/{id}` `{ privateKey, publicKey, auth, statuses? }`: registers a subscription;
 * - `GET /control/subscriptions/{id}/pushes`: what was received for it;
 * - `GET /control/smtp/messages?to=` and `GET /control/smtp/recipients?address=`: what the SMTP server received.
 */
export function startPushEndpoint(options: { vapidPublicKey: string; smtp: SmtpServer }) {
  const subscriptions = new Map<string, Subscription>();
  const pushes = new Map<string, ReceivedPush[]>();
  let origin = "";

  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const url = new URL(request.url ?? "/", origin);
    const body = await readBody(request);
    const json = (status: number, value: unknown) => {
      response.writeHead(status, { "content-type": "application/json" });
      response.end(JSON.stringify(value));
    };
    const push = /^\/push\/([\w-]+)$/.exec(url.pathname);
    if (push && request.method === "POST") {
      const subscription = subscriptions.get(push[1]);
      if (!subscription) return json(404, { error: "unknown subscription" });
      const status = subscription.statuses.shift() ?? 201;
      const headers = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k, String(v)]));
      const record: ReceivedPush = { status, headers, payload: null, vapid: checkVapid(headers.authorization) };
      try {
        const decrypted = decrypt(body, subscription);
        record.payload = decrypted.payload;
        record.recordSize = decrypted.recordSize;
      } catch (error) {
        record.decryptError = String(error);
      }
      pushes.set(push[1], [...(pushes.get(push[1]) ?? []), record]);
      // 0: the push service takes the request and never answers (dropped after a minute).
      if (status === 0) return void setTimeout(() => response.destroy(), 60_000).unref();
      response.writeHead(status, status === 429 ? { "retry-after": "1" } : {});
      return response.end();
    }
    const control = /^\/control\/subscriptions\/([\w-]+)(\/pushes)?$/.exec(url.pathname);
    if (control && request.method === "PUT" && !control[2]) {
      const value = JSON.parse(body.toString("utf8")) as Subscription;
      subscriptions.set(control[1], { ...value, statuses: [...(value.statuses ?? [])] });
      return json(200, { ok: true });
    }
    if (control && request.method === "GET" && control[2]) return json(200, pushes.get(control[1]) ?? []);
    if (url.pathname === "/control/smtp/messages") {
      const to = url.searchParams.get("to");
      return json(
        200,
        options.smtp.messages.filter((m) => !to || m.rcptTo.includes(to)),
      );
    }
    if (url.pathname === "/control/smtp/recipients") {
      const address = url.searchParams.get("address");
      return json(
        200,
        options.smtp.recipients.filter((r) => !address || r.address === address),
      );
    }
    json(404, { error: "not found" });
  };

  /** RFC 8292: `vapid t=<JWT>, k=<key>`; ES256 over the JWT, `aud` this origin, `exp` within 24 hours, `sub` set. */
  const checkVapid = (authorization: string | undefined): ReceivedPush["vapid"] => {
    const match = /^vapid t=([\w-]+\.[\w-]+\.[\w-]+), k=([\w-]+)$/.exec(authorization ?? "");
    if (!match) return { valid: false, error: `malformed Authorization: ${authorization}` };
    const [, token, k] = match;
    const [header, payload, signature] = token.split(".");
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<string, unknown>;
    const head = JSON.parse(Buffer.from(header, "base64url").toString("utf8")) as Record<string, unknown>;
    const point = Buffer.from(k, "base64url");
    const key = createPublicKey({
      key: {
        kty: "EC",
        crv: "P-256",
        x: point.subarray(1, 33).toString("base64url"),
        y: point.subarray(33, 65).toString("base64url"),
      },
      format: "jwk",
    });
    const signed = verify(
      "sha256",
      Buffer.from(`${header}.${payload}`),
      { key, dsaEncoding: "ieee-p1363" },
      Buffer.from(signature, "base64url"),
    );
    const now = Math.floor(Date.now() / 1000);
    const exp = Number(claims.exp);
    const error = !signed
      ? "bad signature"
      : head.alg !== "ES256"
        ? `alg ${String(head.alg)}`
        : claims.aud !== origin
          ? `aud ${String(claims.aud)} is not ${origin}`
          : !(exp > now && exp <= now + 24 * 3600)
            ? `exp ${exp} is not within 24 h`
            : typeof claims.sub !== "string" || !/^(mailto:|https:)/.test(claims.sub)
              ? "sub must be mailto: or https:"
              : k !== options.vapidPublicKey
                ? "k is not the configured VAPID key"
                : undefined;
    return { valid: error === undefined, ...(error ? { error } : {}), claims, k };
  };

  const server = createServer((request, response) => {
    handle(request, response).catch((error) => {
      response.writeHead(500);
      response.end(String(error));
    });
  });
  return new Promise<{ origin: string; close(): Promise<void> }>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      resolve({
        origin,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}

function readBody(request: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks)));
    request.on("error", reject);
  });
}

/** The user agent's side of RFC 8291: one aes128gcm record decrypted with the subscription's private key. */
export function decrypt(body: Buffer, keys: { privateKey: string; publicKey: string; auth: string }) {
  const salt = body.subarray(0, 16);
  const recordSize = body.readUInt32BE(16);
  const idlen = body[20];
  const senderPublic = body.subarray(21, 21 + idlen);
  const ciphertext = body.subarray(21 + idlen);
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(Buffer.from(keys.privateKey, "base64url"));
  const shared = ecdh.computeSecret(senderPublic);
  const info = Buffer.concat([Buffer.from("WebPush: info\0"), Buffer.from(keys.publicKey, "base64url"), senderPublic]);
  const ikm = Buffer.from(hkdfSync("sha256", shared, Buffer.from(keys.auth, "base64url"), info, 32));
  const cek = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
  const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
  const decipher = createDecipheriv("aes-128-gcm", cek, nonce);
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const padded = Buffer.concat([decipher.update(ciphertext.subarray(0, ciphertext.length - 16)), decipher.final()]);
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (padded[end] !== 0x02) throw new Error(`last record must end with delimiter 0x02, got ${padded[end]}`);
  return { payload: padded.subarray(0, end).toString("utf8"), recordSize };
}
