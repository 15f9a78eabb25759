import type { Bindings } from "../env";
import { ApiError } from "../errors";
import { toBase64Url } from "../lib/crypto";

/** What a signed URL allows. Only downloads are signed today; the operation is part of the MAC all the same. */
export type SignedOperation = "download";

/** Lifetime of a download URL when none is asked for, and the longest one may ask for (seconds). */
export const URL_TTL = { defaultSeconds: 900, maxSeconds: 24 * 3600 } as const;

const encoder = new TextEncoder();
const keys = new Map<string, Promise<CryptoKey>>();

function secretOf(env: Bindings): string {
  const secret = env.URL_SIGNING_SECRET;
  if (!secret || secret.length < 16) {
    console.error("URL_SIGNING_SECRET is missing or shorter than 16 characters");
    throw new ApiError("UNAVAILABLE", "attachment downloads are not configured");
  }
  return secret;
}

/** The HMAC-SHA256 key of a secret, imported once per isolate. */
function keyOf(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    keys.set(secret, key);
  }
  return key;
}

/** The signed message: a version tag, the operation, the attachment id and the expiry, one per line. */
function message(id: string, operation: SignedOperation, exp: number): Uint8Array {
  return encoder.encode(`parley-attachment-v1\n${operation}\n${id}\n${exp}`);
}

/** The path of an attachment's content, the route signed URLs point at. */
export function contentPath(id: string): string {
  return `/v1/attachments/${id}/content`;
}

/** A signed, expiring download URL for an attachment, absolute on `origin`, and when it expires. */
export async function signedUrl(
  env: Bindings,
  origin: string,
  id: string,
  ttlSeconds: number = URL_TTL.defaultSeconds,
) {
  const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
  const mac = await crypto.subtle.sign("HMAC", await keyOf(secretOf(env)), message(id, "download", exp));
  const sig = toBase64Url(new Uint8Array(mac));
  return { url: `${origin}${contentPath(id)}?exp=${exp}&sig=${sig}`, expiresAt: new Date(exp * 1000).toISOString() };
}

function fromBase64Url(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]{43}$/.test(text)) return null;
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=");
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/**
 * Checks a signed URL's `exp` and `sig` for an attachment and operation: 403 when either is missing, malformed,
 * tampered with or expired. The MAC is compared in constant time (`crypto.subtle.verify`).
 */
export async function verifySignature(
  env: Bindings,
  id: string,
  operation: SignedOperation,
  exp: string | undefined,
  sig: string | undefined,
): Promise<void> {
  const expiry = exp !== undefined && /^\d{1,12}$/.test(exp) ? Number(exp) : null;
  const mac = sig === undefined ? null : fromBase64Url(sig);
  const valid =
    expiry !== null &&
    mac !== null &&
    (await crypto.subtle.verify("HMAC", await keyOf(secretOf(env)), mac, message(id, operation, expiry)));
  if (!valid) throw new ApiError("FORBIDDEN", "invalid signature: ask for a fresh URL with GET /v1/attachments/{id}");
  if (expiry! * 1000 <= Date.now()) {
    throw new ApiError("FORBIDDEN", "this URL has expired: ask for a fresh one with GET /v1/attachments/{id}");
  }
}
