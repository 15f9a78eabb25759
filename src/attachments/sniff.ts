import { ApiError } from "../errors";

/** How many leading bytes the content-type check looks at (a tar header's `ustar` ends at byte 262). */
export const SNIFF_BYTES = 512;

/** Image types served inline: their bytes were checked to be that format. Never SVG. */
export const SAFE_INLINE_TYPES: ReadonlySet<string> = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

/** A format recognised by its leading bytes: the type stored for it, and the declared types that are the same format. */
interface Signature {
  type: string;
  accepts: readonly string[];
  matches(head: Uint8Array): boolean;
  /** For containers whose brand decides the exact type (ISO BMFF). */
  refine?(head: Uint8Array): string;
}

const ascii = (head: Uint8Array, offset: number, text: string) => {
  if (head.length < offset + text.length) return false;
  for (let i = 0; i < text.length; i++) if (head[offset + i] !== text.charCodeAt(i)) return false;
  return true;
};
const bytes = (head: Uint8Array, offset: number, expected: number[]) =>
  head.length >= offset + expected.length && expected.every((b, i) => head[offset + i] === b);
const riff = (head: Uint8Array, form: string) => ascii(head, 0, "RIFF") && ascii(head, 8, form);

const OOXML = [
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  "application/vnd.openxmlformats-officedocument.presentationml.presentation",
  "application/vnd.oasis.opendocument.text",
  "application/vnd.oasis.opendocument.spreadsheet",
  "application/vnd.oasis.opendocument.presentation",
  "application/epub+zip",
  "application/java-archive",
  "application/vnd.android.package-archive",
];
const BMFF = [
  "video/mp4",
  "audio/mp4",
  "audio/x-m4a",
  "audio/m4a",
  "video/x-m4v",
  "application/mp4",
  "video/quicktime",
  "video/3gpp",
  "video/3gpp2",
  "audio/3gpp",
  "image/avif",
  "image/heic",
  "image/heif",
];

/** The formats checked against their leading bytes: images, PDF, audio, video, archives and office containers. */
const SIGNATURES: readonly Signature[] = [
  {
    type: "image/png",
    accepts: ["image/png"],
    matches: (h) => bytes(h, 0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  },
  { type: "image/jpeg", accepts: ["image/jpeg"], matches: (h) => bytes(h, 0, [0xff, 0xd8, 0xff]) },
  { type: "image/gif", accepts: ["image/gif"], matches: (h) => ascii(h, 0, "GIF87a") || ascii(h, 0, "GIF89a") },
  { type: "image/webp", accepts: ["image/webp"], matches: (h) => riff(h, "WEBP") },
  {
    type: "image/bmp",
    accepts: ["image/bmp", "image/x-bmp", "image/x-ms-bmp"],
    matches: (h) => ascii(h, 0, "BM") && h.length >= 14 && h[6] === 0 && h[7] === 0 && h[8] === 0 && h[9] === 0,
  },
  {
    type: "image/tiff",
    accepts: ["image/tiff"],
    matches: (h) => bytes(h, 0, [0x49, 0x49, 0x2a, 0x00]) || bytes(h, 0, [0x4d, 0x4d, 0x00, 0x2a]),
  },
  {
    type: "image/x-icon",
    accepts: ["image/x-icon", "image/vnd.microsoft.icon"],
    matches: (h) => bytes(h, 0, [0x00, 0x00, 0x01, 0x00]) && h.length >= 6 && h[4] + h[5] > 0,
  },
  { type: "application/pdf", accepts: ["application/pdf"], matches: (h) => ascii(h, 0, "%PDF-") },
  {
    type: "video/mp4",
    accepts: BMFF,
    matches: (h) => ascii(h, 4, "ftyp"),
    refine: (h) => {
      const brand = String.fromCharCode(...h.subarray(8, 12));
      if (brand === "avif" || brand === "avis") return "image/avif";
      if (["heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1"].includes(brand)) return "image/heic";
      if (brand === "qt  ") return "video/quicktime";
      if (brand === "M4A " || brand === "M4B ") return "audio/mp4";
      if (brand.startsWith("3g")) return "video/3gpp";
      return "video/mp4";
    },
  },
  {
    type: "video/webm",
    accepts: ["video/webm", "audio/webm", "video/x-matroska", "audio/x-matroska"],
    matches: (h) => bytes(h, 0, [0x1a, 0x45, 0xdf, 0xa3]),
  },
  {
    type: "video/x-msvideo",
    accepts: ["video/x-msvideo", "video/avi", "video/msvideo"],
    matches: (h) => riff(h, "AVI "),
  },
  {
    type: "audio/wav",
    accepts: ["audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"],
    matches: (h) => riff(h, "WAVE"),
  },
  {
    type: "audio/ogg",
    accepts: ["audio/ogg", "video/ogg", "application/ogg", "audio/opus"],
    matches: (h) => ascii(h, 0, "OggS"),
  },
  { type: "audio/flac", accepts: ["audio/flac", "audio/x-flac"], matches: (h) => ascii(h, 0, "fLaC") },
  { type: "audio/midi", accepts: ["audio/midi", "audio/x-midi"], matches: (h) => ascii(h, 0, "MThd") },
  {
    type: "audio/mpeg",
    accepts: ["audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg-3"],
    matches: (h) =>
      ascii(h, 0, "ID3") || (h.length >= 2 && h[0] === 0xff && (h[1] & 0xe0) === 0xe0 && (h[1] & 0x06) !== 0),
  },
  {
    type: "audio/aac",
    accepts: ["audio/aac", "audio/x-aac"],
    matches: (h) => h.length >= 2 && h[0] === 0xff && (h[1] & 0xf6) === 0xf0,
  },
  {
    type: "application/zip",
    accepts: ["application/zip", "application/x-zip-compressed", ...OOXML],
    matches: (h) =>
      bytes(h, 0, [0x50, 0x4b, 0x03, 0x04]) ||
      bytes(h, 0, [0x50, 0x4b, 0x05, 0x06]) ||
      bytes(h, 0, [0x50, 0x4b, 0x07, 0x08]),
  },
  {
    type: "application/gzip",
    accepts: ["application/gzip", "application/x-gzip", "application/x-compressed-tar"],
    matches: (h) => bytes(h, 0, [0x1f, 0x8b]),
  },
  {
    type: "application/x-bzip2",
    accepts: ["application/x-bzip2", "application/x-bzip"],
    matches: (h) => ascii(h, 0, "BZh"),
  },
  {
    type: "application/x-xz",
    accepts: ["application/x-xz"],
    matches: (h) => bytes(h, 0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
  },
  { type: "application/zstd", accepts: ["application/zstd"], matches: (h) => bytes(h, 0, [0x28, 0xb5, 0x2f, 0xfd]) },
  {
    type: "application/x-7z-compressed",
    accepts: ["application/x-7z-compressed"],
    matches: (h) => bytes(h, 0, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]),
  },
  {
    type: "application/vnd.rar",
    accepts: ["application/vnd.rar", "application/x-rar-compressed", "application/x-rar"],
    matches: (h) => ascii(h, 0, "Rar!\x1a\x07"),
  },
  { type: "application/x-tar", accepts: ["application/x-tar"], matches: (h) => ascii(h, 257, "ustar") },
  {
    type: "application/x-ole-storage",
    accepts: [
      "application/x-ole-storage",
      "application/msword",
      "application/vnd.ms-excel",
      "application/vnd.ms-powerpoint",
      "application/vnd.ms-outlook",
      "application/x-msi",
    ],
    matches: (h) => bytes(h, 0, [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]),
  },
];

/** Declared types that must carry their signature: declaring one of them for other bytes is refused. */
const SIGNED_TYPES: ReadonlySet<string> = new Set(SIGNATURES.flatMap((s) => [s.type, ...s.accepts]));

/** Types that say nothing about the content: the detected type replaces them, else they stay. */
const GENERIC_TYPES: ReadonlySet<string> = new Set([
  "application/octet-stream",
  "binary/octet-stream",
  "application/unknown",
]);

const MEDIA_TYPE = /^([a-z0-9][a-z0-9!#$&^_.+-]{0,126})\/([a-z0-9][a-z0-9!#$&^_.+-]{0,126})$/;

/** The format of leading bytes, when they carry a known signature. */
export function sniff(head: Uint8Array): string | null {
  for (const signature of SIGNATURES) {
    if (signature.matches(head)) return signature.refine?.(head) ?? signature.type;
  }
  return null;
}

/** Whether bytes start, after a BOM and whitespace, with `<`: HTML, XML, SVG and scripts in markup. */
export function looksLikeMarkup(head: Uint8Array): boolean {
  let i = bytes(head, 0, [0xef, 0xbb, 0xbf]) ? 3 : 0;
  while (i < head.length && (head[i] === 0x20 || head[i] === 0x09 || head[i] === 0x0a || head[i] === 0x0d)) i++;
  return head[i] === 0x3c;
}

/**
 * A declared `Content-Type` reduced to `type/subtype` in lower case (text types keep a `charset`); null when absent.
 * Anything that is not a media type is a 400.
 */
export function normalizeDeclaredType(header: string | null | undefined): string | null {
  if (header === null || header === undefined || header.trim() === "") return null;
  const [essence, ...params] = header.split(";").map((part) => part.trim());
  const type = essence.toLowerCase();
  if (!MEDIA_TYPE.test(type)) {
    throw new ApiError("BAD_REQUEST", "invalid content type", [
      { path: "content-type", message: "must be a media type such as image/png" },
    ]);
  }
  if (type.startsWith("text/")) {
    const charset = params.map((p) => /^charset\s*=\s*"?([A-Za-z0-9._-]{1,40})"?$/i.exec(p)).find(Boolean);
    if (charset) return `${type}; charset=${charset[1].toLowerCase()}`;
  }
  return type;
}

/**
 * The content type to store for an upload, from its declared type and its leading bytes. Bytes with a known
 * signature decide (a declared type of the same format is kept, any other is corrected); a declared type that has a
 * signature the bytes lack is refused with 415, as is markup declared as an image, audio or video. Otherwise the
 * declared type stands (downloads never render it inline), or `application/octet-stream` when none was declared.
 */
export function resolveContentType(declared: string | null, head: Uint8Array): string {
  const essence = declared?.split(";")[0] ?? null;
  const detected = SIGNATURES.find((signature) => signature.matches(head));
  if (detected) {
    if (essence && detected.accepts.includes(essence)) return essence;
    return detected.refine?.(head) ?? detected.type;
  }
  if (!essence || GENERIC_TYPES.has(essence)) return "application/octet-stream";
  if (SIGNED_TYPES.has(essence)) {
    throw new ApiError("UNSUPPORTED_MEDIA_TYPE", `the content is not ${essence}: its leading bytes do not match`);
  }
  if (/^(image|audio|video)\//.test(essence) && essence !== "image/svg+xml" && looksLikeMarkup(head)) {
    throw new ApiError("UNSUPPORTED_MEDIA_TYPE", `the content is markup, not ${essence}`);
  }
  return declared!;
}
