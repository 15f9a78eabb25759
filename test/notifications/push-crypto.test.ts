import { describe, expect, it } from "vitest";
import { fromBase64Url, toBase64Url } from "../../src/notifications/push/base64url";
import { encryptPayload, importEcdhKeyPair, MAX_PAYLOAD_BYTES } from "../../src/notifications/push/encrypt";
import { buildPushRequest, PUSH_POLICY } from "../../src/notifications/push/send";
import { vapidAuthorization, VAPID_TTL_SECONDS } from "../../src/notifications/push/vapid";

// RFC 8291 (Message Encryption for Web Push), Appendix A: every input fixed, so the output is known byte for byte.
const RFC8291 = {
  plaintext: "When I grow up, I want to be a watermelon",
  asPrivate: "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw",
  asPublic: "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8",
  uaPrivate: "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
  uaPublic: "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
  salt: "DGv6ra1nlYgDCS1FRnbzlw",
  auth: "BTBZMqHH6r4Tts7J_aSIgg",
  body: "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
};

const encoder = new TextEncoder();

/** The browser's side of RFC 8291, with Web Crypto: decrypts one aes128gcm record. */
async function decryptAsBrowser(body: Uint8Array, uaPrivate: string, uaPublic: string, auth: string) {
  const salt = body.slice(0, 16);
  const idlen = body[20];
  const asPublic = body.slice(21, 21 + idlen);
  const ua = await importEcdhKeyPair(uaPrivate, uaPublic);
  const peer = await crypto.subtle.importKey("raw", asPublic, { name: "ECDH", namedCurve: "P-256" }, false, []);
  const secret = await crypto.subtle.deriveBits(
    { name: "ECDH", public: peer } as SubtleCryptoDeriveKeyAlgorithm,
    ua.privateKey,
    256,
  );
  const hkdf = async (salt: Uint8Array, ikm: ArrayBuffer | Uint8Array, info: Uint8Array, bytes: number) =>
    new Uint8Array(
      await crypto.subtle.deriveBits(
        { name: "HKDF", hash: "SHA-256", salt, info },
        await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]),
        bytes * 8,
      ),
    );
  const info = new Uint8Array([...encoder.encode("WebPush: info\0"), ...fromBase64Url(uaPublic), ...asPublic]);
  const ikm = await hkdf(fromBase64Url(auth), secret, info, 32);
  const cek = await hkdf(salt, ikm, encoder.encode("Content-Encoding: aes128gcm\0"), 16);
  const nonce = await hkdf(salt, ikm, encoder.encode("Content-Encoding: nonce\0"), 12);
  const key = await crypto.subtle.importKey("raw", cek, "AES-GCM", false, ["decrypt"]);
  const padded = new Uint8Array(
    await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce }, key, body.slice(21 + idlen)),
  );
  expect(padded[padded.length - 1]).toBe(2);
  return new TextDecoder().decode(padded.slice(0, -1));
}

describe("RFC 8291 aes128gcm payload encryption", () => {
  it("reproduces the Appendix A test vector byte for byte", async () => {
    const body = await encryptPayload(
      RFC8291.plaintext,
      { p256dh: RFC8291.uaPublic, auth: RFC8291.auth },
      { senderKeys: await importEcdhKeyPair(RFC8291.asPrivate, RFC8291.asPublic), salt: fromBase64Url(RFC8291.salt) },
    );
    expect(toBase64Url(body)).toBe(RFC8291.body);
  });

  it("decrypts the Appendix A vector with the user agent's private key", async () => {
    const text = await decryptAsBrowser(fromBase64Url(RFC8291.body), RFC8291.uaPrivate, RFC8291.uaPublic, RFC8291.auth);
    expect(text).toBe(RFC8291.plaintext);
  });

  it("uses a fresh salt and sender key for every message, and the header RFC 8188 describes", async () => {
    const keys = { p256dh: RFC8291.uaPublic, auth: RFC8291.auth };
    const [a, b] = await Promise.all([encryptPayload("hello", keys), encryptPayload("hello", keys)]);
    expect(toBase64Url(a.slice(0, 16))).not.toBe(toBase64Url(b.slice(0, 16)));
    expect(toBase64Url(a.slice(21, 86))).not.toBe(toBase64Url(b.slice(21, 86)));
    expect(new DataView(a.buffer, a.byteOffset).getUint32(16)).toBe(4096);
    expect(a[20]).toBe(65);
    expect(a.byteLength).toBe(86 + 5 + 1 + 16);
    expect(await decryptAsBrowser(a, RFC8291.uaPrivate, RFC8291.uaPublic, RFC8291.auth)).toBe("hello");
  });

  it("refuses payloads that do not fit one record, and malformed subscription keys", async () => {
    const keys = { p256dh: RFC8291.uaPublic, auth: RFC8291.auth };
    await expect(encryptPayload("x".repeat(MAX_PAYLOAD_BYTES + 1), keys)).rejects.toThrow(/larger/);
    await expect(encryptPayload("x".repeat(MAX_PAYLOAD_BYTES), keys)).resolves.toHaveLength(4096);
    await expect(encryptPayload("x", { p256dh: RFC8291.auth, auth: RFC8291.auth })).rejects.toThrow(/P-256/);
    await expect(encryptPayload("x", { p256dh: RFC8291.uaPublic, auth: RFC8291.salt + "AA" })).rejects.toThrow(/16/);
  });
});

describe("RFC 8292 VAPID", () => {
  async function vapidKeys() {
    const pair = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as CryptoKeyPair;
    const jwk = (await crypto.subtle.exportKey("jwk", pair.privateKey)) as JsonWebKey;
    const publicKey = toBase64Url(
      new Uint8Array((await crypto.subtle.exportKey("raw", pair.publicKey)) as ArrayBuffer),
    );
    return { publicKey, privateKey: jwk.d!, subject: "mailto:ops@parley.test", verifyKey: pair.publicKey };
  }

  it("signs an ES256 JWT for the push service's origin that expires within 24 hours", async () => {
    const keys = await vapidKeys();
    const now = Math.floor(Date.now() / 1000);
    const header = await vapidAuthorization("https://push.example.net:8443/wpush/v2/abc?x=1", keys, now);
    const match = /^vapid t=([\w-]+)\.([\w-]+)\.([\w-]+), k=([\w-]+)$/.exec(header);
    expect(match, header).not.toBeNull();
    const [, head, payload, signature, k] = match!;
    expect(k).toBe(keys.publicKey);
    expect(JSON.parse(new TextDecoder().decode(fromBase64Url(head)))).toEqual({ typ: "JWT", alg: "ES256" });
    const claims = JSON.parse(new TextDecoder().decode(fromBase64Url(payload)));
    expect(claims).toEqual({ aud: "https://push.example.net:8443", exp: now + VAPID_TTL_SECONDS, sub: keys.subject });
    expect(claims.exp - now).toBeLessThanOrEqual(24 * 3600);
    const valid = await crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      keys.verifyKey,
      fromBase64Url(signature),
      encoder.encode(`${head}.${payload}`),
    );
    expect(valid).toBe(true);
    const tampered = await crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      keys.verifyKey,
      fromBase64Url(signature),
      encoder.encode(`${head}.${payload}x`),
    );
    expect(tampered).toBe(false);
  });

  it("builds the push request: aes128gcm body, VAPID, TTL and Urgency from the priority, and its Topic", async () => {
    const keys = await vapidKeys();
    const target = {
      endpoint: "https://push.example.net/send/1",
      keys: { p256dh: RFC8291.uaPublic, auth: RFC8291.auth },
    };
    for (const priority of ["low", "normal", "high", "critical"] as const) {
      const request = await buildPushRequest(target, { payload: '{"title":"Hi"}', priority, topic: "ntf_1" }, keys);
      expect(request.method).toBe("POST");
      expect(request.headers.get("topic")).toBe("ntf_1");
      expect(request.headers.get("content-encoding")).toBe("aes128gcm");
      expect(request.headers.get("ttl")).toBe(String(PUSH_POLICY[priority].ttl));
      expect(request.headers.get("urgency")).toBe(PUSH_POLICY[priority].urgency);
      expect(request.headers.get("authorization")).toMatch(/^vapid t=.+, k=/);
      const body = new Uint8Array(await request.arrayBuffer());
      expect(await decryptAsBrowser(body, RFC8291.uaPrivate, RFC8291.uaPublic, RFC8291.auth)).toBe('{"title":"Hi"}');
    }
    expect(PUSH_POLICY.critical.urgency).toBe("high");
    expect(PUSH_POLICY.low.ttl).toBeLessThan(PUSH_POLICY.normal.ttl);
  });
});
