import { fromBase64Url, toBase64Url } from "./base64url";
import { pointToJwk } from "./encrypt";

/**
 * VAPID (RFC 8292): the application server identifies itself to push services with an ES256-signed JWT whose `aud`
 * is the push service's origin, `exp` at most 24 hours ahead, and `sub` a contact (mailto: or https:).
 *
 * Keys are configured as `VAPID_PUBLIC_KEY` (base64url of the 65-byte uncompressed P-256 point, what browsers take as
 * `applicationServerKey`) and `VAPID_PRIVATE_KEY` (base64url of the 32-byte private scalar `d`): the format of
 * `web-push generate-vapid-keys` and of `npm run dev`.
 */

const encoder = new TextEncoder();
/** How long a token is valid: 12 hours (RFC 8292 allows at most 24). */
export const VAPID_TTL_SECONDS = 12 * 3600;

/** A configured VAPID key pair. */
export interface VapidKeys {
  publicKey: string;
  privateKey: string;
  subject: string;
}

const signingKeys = new Map<string, Promise<CryptoKey>>();

/** The ECDSA signing key of a VAPID key pair, imported once per isolate. */
function signingKey(keys: VapidKeys): Promise<CryptoKey> {
  const cacheKey = `${keys.publicKey}.${keys.privateKey}`;
  let key = signingKeys.get(cacheKey);
  if (!key) {
    const d = fromBase64Url(keys.privateKey);
    if (d.byteLength !== 32) throw new Error("VAPID_PRIVATE_KEY must be base64url of 32 bytes");
    key = crypto.subtle.importKey(
      "jwk",
      { ...pointToJwk(fromBase64Url(keys.publicKey)), d: toBase64Url(d) },
      { name: "ECDSA", namedCurve: "P-256" },
      false,
      ["sign"],
    );
    key.catch(() => signingKeys.delete(cacheKey));
    signingKeys.set(cacheKey, key);
  }
  return key;
}

/** The VAPID JWT for a push endpoint: `aud` its origin, `exp` 12 hours from `now` (seconds). */
export async function vapidToken(endpoint: string, keys: VapidKeys, now = Math.floor(Date.now() / 1000)) {
  const header = toBase64Url(encoder.encode(JSON.stringify({ typ: "JWT", alg: "ES256" })));
  const claims = { aud: new URL(endpoint).origin, exp: now + VAPID_TTL_SECONDS, sub: keys.subject };
  const payload = toBase64Url(encoder.encode(JSON.stringify(claims)));
  const input = `${header}.${payload}`;
  // Web Crypto's ECDSA signature is r || s (IEEE P1363), exactly the JWS ES256 form.
  const signature = await crypto.subtle.sign(
    { name: "ECDSA", hash: "SHA-256" },
    await signingKey(keys),
    encoder.encode(input),
  );
  return `${input}.${toBase64Url(new Uint8Array(signature))}`;
}

/** The `Authorization` header of a push request: `vapid t=<jwt>, k=<public key>` (RFC 8292 section 3). */
export async function vapidAuthorization(endpoint: string, keys: VapidKeys, now?: number): Promise<string> {
  return `vapid t=${await vapidToken(endpoint, keys, now)}, k=${keys.publicKey}`;
}
