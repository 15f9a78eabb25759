/** The type prefixes of the contract's ids. */
export type IdPrefix =
  | "org"
  | "key"
  | "acc"
  | "room"
  | "conv"
  | "msg"
  | "att"
  | "evt"
  | "run"
  | "rule"
  | "ntf"
  | "ctc"
  | "psub"
  | "tok"
  | "req";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case

/** Encodes bytes as lower-case Crockford base32. */
export function base32(bytes: Uint8Array): string {
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

/** Random bytes drawn ahead, `RANDOM_POOL` at a time: one `getRandomValues` call serves 64 ids. */
const RANDOM_POOL = 640;
const pool = new Uint8Array(RANDOM_POOL);
let poolAt = RANDOM_POOL;

/** The next `n` random bytes of the pool (a view: use them before the next call). */
function randomBytes(n: number): Uint8Array {
  if (poolAt + n > RANDOM_POOL) {
    crypto.getRandomValues(pool);
    poolAt = 0;
  }
  poolAt += n;
  return pool.subarray(poolAt - n, poolAt);
}

/** The time part of the last body made, and its millisecond: ids made in the same millisecond share it. */
let lastTime = { ms: -1, text: "" };
/** The random part of the last body made: the next one in the same millisecond is one more (ULID's monotonic order). */
const lastRandom = new Uint8Array(10);

/**
 * A time-ordered body: 10 characters of milliseconds then 16 characters, random for a millisecond's first id and one
 * more for each id after it in that millisecond (a ULID in lower case, monotonic): ids made in a loop sort in the order
 * they were made.
 */
export function ulidBody(now = Date.now()): string {
  if (lastTime.ms !== now || !increment(lastRandom)) {
    if (lastTime.ms !== now) {
      let text = "";
      let t = now;
      for (let i = 0; i < 10; i++) {
        text = ALPHABET[t % 32] + text;
        t = Math.floor(t / 32);
      }
      lastTime = { ms: now, text };
    }
    lastRandom.set(randomBytes(10));
  }
  return lastTime.text + base32(lastRandom);
}

/** Adds one to a big-endian number; answers false when it overflowed (all bytes were 0xff). */
function increment(bytes: Uint8Array): boolean {
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      bytes[i]++;
      return true;
    }
    bytes[i] = 0;
  }
  return false;
}

/** `length` random characters (of the base32 alphabet), fresh ones each call: unlike `ulidBody`'s random part. */
export function randomText(length: number): string {
  return base32(randomBytes(Math.ceil((length * 5) / 8))).slice(0, length);
}

/** A new id with its type prefix, e.g. `acc_01jd...`; ids sort by creation time. */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${ulidBody()}`;
}

/**
 * The pattern an id of a prefix must match to be looked up: the prefix, then up to 64 letters and digits. Ids are
 * opaque to clients, so any such id is "not found" rather than malformed when nothing has it; only the ones this
 * service makes (`newId`) ever exist.
 */
export function idPattern(prefix: IdPrefix): RegExp {
  return new RegExp(`^${prefix}_[0-9A-Za-z]{1,64}$`);
}
