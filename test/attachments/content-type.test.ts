import { describe, expect, it } from "vitest";
import { resolveContentType, sniff } from "../../src/attachments/sniff";
import { createOrg, expectError } from "../helpers/api";
import { download, expectUploaded, PNG_SIGNATURE, storedState, uploadForm, uploadRaw } from "./helpers";

const ascii = (text: string) => [...text].map((c) => c.charCodeAt(0));
const file = (...parts: (number[] | string)[]) => {
  const bytes = parts.flatMap((p) => (typeof p === "string" ? ascii(p) : p));
  return new Uint8Array([...bytes, ...new Array(600).fill(0x41)]);
};
const HTML = new TextEncoder().encode(
  "  \n<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>",
);

describe("content types are checked against the leading bytes", () => {
  it("recognises the common formats", () => {
    const tar = new Uint8Array(1024);
    tar.set(ascii("ustar"), 257);
    const cases: [Uint8Array, string][] = [
      [file(PNG_SIGNATURE), "image/png"],
      [file([0xff, 0xd8, 0xff, 0xe0]), "image/jpeg"],
      [file("GIF89a"), "image/gif"],
      [file("RIFF", [1, 2, 3, 4], "WEBP"), "image/webp"],
      [file("%PDF-1.7"), "application/pdf"],
      [file([0, 0, 0, 0x20], "ftypisom"), "video/mp4"],
      [file([0, 0, 0, 0x20], "ftypqt  "), "video/quicktime"],
      [file([0, 0, 0, 0x20], "ftypM4A "), "audio/mp4"],
      [file([0, 0, 0, 0x20], "ftypavif"), "image/avif"],
      [file([0x1a, 0x45, 0xdf, 0xa3]), "video/webm"],
      [file("RIFF", [1, 2, 3, 4], "WAVE"), "audio/wav"],
      [file("OggS"), "audio/ogg"],
      [file("fLaC"), "audio/flac"],
      [file("ID3", [4, 0]), "audio/mpeg"],
      [file([0xff, 0xfb, 0x90]), "audio/mpeg"],
      [file("PK", [3, 4]), "application/zip"],
      [file([0x1f, 0x8b, 8]), "application/gzip"],
      [file([0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]), "application/x-7z-compressed"],
      [file("Rar!", [0x1a, 0x07, 0]), "application/vnd.rar"],
      [tar, "application/x-tar"],
    ];
    for (const [bytes, type] of cases) expect(sniff(bytes), type).toBe(type);
    expect(sniff(HTML)).toBeNull();
    expect(sniff(new TextEncoder().encode("just some text"))).toBeNull();
  });

  it("corrects a declared type the bytes contradict, keeps a compatible one, refuses a missing signature", () => {
    const zip = file("PK", [3, 4]);
    const docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    expect(resolveContentType(docx, zip)).toBe(docx);
    expect(resolveContentType("application/pdf", zip)).toBe("application/zip");
    expect(resolveContentType(null, file("%PDF-1.4"))).toBe("application/pdf");
    expect(resolveContentType("application/octet-stream", file(PNG_SIGNATURE))).toBe("image/png");
    expect(resolveContentType("text/html", file(PNG_SIGNATURE))).toBe("image/png");
    expect(resolveContentType("image/png", file([0xff, 0xd8, 0xff]))).toBe("image/jpeg");
    expect(resolveContentType("audio/x-wav", file("RIFF", [0, 0, 0, 0], "WAVE"))).toBe("audio/x-wav");
    expect(resolveContentType("text/plain", new TextEncoder().encode("hello"))).toBe("text/plain");
    expect(resolveContentType(null, new TextEncoder().encode("hello"))).toBe("application/octet-stream");
    expect(resolveContentType("image/svg+xml", new TextEncoder().encode("<svg/>"))).toBe("image/svg+xml");
    expect(() => resolveContentType("image/png", HTML)).toThrow(/not image\/png/);
    expect(() => resolveContentType("application/pdf", new TextEncoder().encode("hello"))).toThrow(
      /not application\/pdf/,
    );
    expect(() => resolveContentType("image/x-custom", HTML)).toThrow(/markup/);
    expect(() => resolveContentType("video/x-custom", HTML)).toThrow(/markup/);
  });

  it("refuses HTML declared as an image with 415 and stores nothing, raw or multipart", async () => {
    const { apiKey } = await createOrg();
    const before = await storedState();
    expectError(await uploadRaw(apiKey, HTML, { type: "image/png", name: "cat.png" }), 415, "UNSUPPORTED_MEDIA_TYPE");
    expectError(await uploadRaw(apiKey, HTML, { type: "image/gif", chunked: true }), 415, "UNSUPPORTED_MEDIA_TYPE");
    expectError(await uploadRaw(apiKey, HTML, { type: "image/x-anything" }), 415, "UNSUPPORTED_MEDIA_TYPE");
    const form = new FormData();
    form.append("file", new File([HTML], "cat.jpg", { type: "image/jpeg" }));
    expectError(await uploadForm(apiKey, form), 415, "UNSUPPORTED_MEDIA_TYPE");
    expect(await storedState()).toEqual(before);
  });

  it("stores an image declared as HTML as the image it is, served inline only because its bytes are that image", async () => {
    const { apiKey } = await createOrg();
    const png = file(PNG_SIGNATURE);
    const uploaded = expectUploaded(await uploadRaw(apiKey, png, { type: "text/html", name: "x.html" }));
    expect(uploaded.contentType).toBe("image/png");
    const got = await download(uploaded.url);
    expect(got.headers.get("content-type")).toBe("image/png");
    expect(got.headers.get("content-disposition")).toMatch(/^inline;/);

    // HTML declared as HTML is kept, and downloaded as an attachment, never rendered.
    const html = expectUploaded(await uploadRaw(apiKey, HTML, { type: "text/html", name: "page.html" }));
    expect(html.contentType).toBe("text/html");
    const page = await download(html.url);
    expect(page.headers.get("content-type")).toBe("text/html");
    expect(page.headers.get("content-disposition")).toMatch(/^attachment;/);
  });
});
