import { ApiError } from "../errors";

/** Encodes a keyset position (sort value and id) as an opaque cursor. */
export function encodeCursor(sortValue: string, id: string): string {
  return btoa(JSON.stringify([sortValue, id]))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

/** Decodes a cursor made by `encodeCursor`; anything else is a 400. */
export function decodeCursor(cursor: string): [string, string] {
  try {
    const value = JSON.parse(atob(cursor.replace(/-/g, "+").replace(/_/g, "/")));
    if (Array.isArray(value) && value.length === 2 && value.every((v) => typeof v === "string")) {
      return value as [string, string];
    }
  } catch {
    // fall through to the error below
  }
  throw new ApiError("BAD_REQUEST", "invalid cursor", [
    { path: "cursor", message: "must be a nextCursor from a previous page" },
  ]);
}

/** The list envelope of a page fetched with one extra row: the extra row only tells that a next page exists. */
export function pageOf<Row, Item>(
  rows: Row[],
  limit: number,
  toItem: (row: Row) => Item,
  position: (row: Row) => [string, string],
) {
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return {
    items: page.map(toItem),
    nextCursor: rows.length > limit && last ? encodeCursor(...position(last)) : null,
  };
}
