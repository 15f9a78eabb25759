import { concat, fromBase64Url, toBase64Url } from "./base64url";

/**
 * Web Push message encryption (RFC 8291) with the `aes128gcm` content coding (RFC 8188), on Web Crypto.
 *
 * The application server makes an ephemeral ECDH P-256 key pair and a random salt per message, combines the shared
 * secret with the subscription's auth secret (HKDF-SHA-256), and encrypts the payload as one record.
 */

const encoder = new TextEncoder();
/** The record size written in the header; one record carries the whole payload. */
export const RECORD_SIZE = 4096;
/** The largest payload one record holds: 4096 - 86 header bytes - 16 tag - 1 delimiter. */
export const MAX_PAYLOAD_BYTES = RECORD_SIZE - 86 - 16 - 1;

/** What a subscription gives to encrypt for it: `keys.p256dh` and `keys.auth`, base64url. */
export interface SubscriptionKeys {
  p256dh: string;
  auth: string;
}

/** Fixed inputs for reproducible output (tests with the RFC 8291 Appendix A vector); normally random. */
export interface EncryptOptions {
  /** The sender's ECDH key pair; its public key must be exportable as `raw`. */
  senderKeys?: CryptoKeyPair;
  salt?: Uint8Array;
}

/** Whether `p256dh` is a point on P-256 that Web Crypto takes as an ECDH public key (a 65-byte `0x04` form may not be). */
export async function isP256Point(p256dh: string): Promise<boolean> {
  try {
    await crypto.subtle.importKey("raw", fromBase64Url(p256dh), { name: "ECDH", namedCurve: "P-256" }, false, []);
    return true;
  } catch {
    return false;
  }
}

/** Encrypts a payload for one subscription: the body of the push request (header + one record). */
export async function encryptPayload(
  payload: Uint8Array | string,
  keys: SubscriptionKeys,
  options: EncryptOptions = {},
): Promise<Uint8Array> {
  const plaintext = typeof payload === "string" ? encoder.encode(payload) : payload;
  if (plaintext.byteLength > MAX_PAYLOAD_BYTES) throw new Error(`push payload larger than ${MAX_PAYLOAD_BYTES} bytes`);
  const uaPublic = fromBase64Url(keys.p256dh);
  const authSecret = fromBase64Url(keys.auth);
  if (uaPublic.byteLength !== 65 || uaPublic[0] !== 0x04) throw new Error("p256dh is not an uncompressed P-256 point");
  if (authSecret.byteLength !== 16) throw new Error("auth is not 16 bytes");
  const salt = options.salt ?? crypto.getRandomValues(new Uint8Array(16));
  const senderKeys =
    options.senderKeys ??
    ((await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"])) as CryptoKeyPair);
  const asPublic = new Uint8Array((await crypto.subtle.exportKey("raw", senderKeys.publicKey)) as ArrayBuffer);

  const uaKey = await crypto.subtle.importKey("raw", uaPublic, { name: "ECDH", namedCurve: "P-256" }, false, []);
  // workers-types spell the ECDH peer key `$public`; the runtime reads the standard `public`.
  const ecdh = { name: "ECDH", public: uaKey } as SubtleCryptoDeriveKeyAlgorithm;
  const ecdhSecret = new Uint8Array(await crypto.subtle.deriveBits(ecdh, senderKeys.privateKey, 256));
  // RFC 8291 section 3.4: IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" || 0x00 || ua_public || as_public, 32)
  const keyInfo = concat(encoder.encode("WebPush: info\0"), uaPublic, asPublic);
  const ikm = await hkdf(authSecret, ecdhSecret, keyInfo, 32);
  // RFC 8188 section 2.2 and 2.3: the content encryption key and nonce from the salt.
  const cek = await hkdf(salt, ikm, encoder.encode("Content-Encoding: aes128gcm\0"), 16);
  const nonce = await hkdf(salt, ikm, encoder.encode("Content-Encoding: nonce\0"), 12);

  const key = await crypto.subtle.importKey("raw", cek, "AES-GCM", false, ["encrypt"]);
  // One record, the last: the plaintext followed by the delimiter 0x02 and no padding.
  const record = concat(plaintext, new Uint8Array([0x02]));
  const ciphertext = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce }, key, record));

  const header = new Uint8Array(16 + 4 + 1 + asPublic.byteLength);
  header.set(salt, 0);
  new DataView(header.buffer).setUint32(16, RECORD_SIZE);
  header[20] = asPublic.byteLength;
  header.set(asPublic, 21);
  return concat(header, ciphertext);
}

async function hkdf(salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, length * 8));
}

/** Imports an ECDH P-256 key pair from base64url `d` and the uncompressed public point (for fixed test vectors). */
export async function importEcdhKeyPair(privateD: string, publicPoint: string): Promise<CryptoKeyPair> {
  const jwk = pointToJwk(fromBase64Url(publicPoint));
  const privateKey = await crypto.subtle.importKey(
    "jwk",
    { ...jwk, d: privateD },
    { name: "ECDH", namedCurve: "P-256" },
    true,
    ["deriveBits"],
  );
  const publicKey = await crypto.subtle.importKey("jwk", jwk, { name: "ECDH", namedCurve: "P-256" }, true, []);
  return { privateKey, publicKey };
}

/** The JWK (kty, crv, x, y) of an uncompressed P-256 point. */
export function pointToJwk(point: Uint8Array): JsonWebKey {
  if (point.byteLength !== 65 || point[0] !== 0x04) throw new Error("not an uncompressed P-256 point");
  return { kty: "EC", crv: "P-256", x: toBase64Url(point.slice(1, 33)), y: toBase64Url(point.slice(33, 65)) };
}
