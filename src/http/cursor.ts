import { ApiError } from "../errors";
import { idPattern, type IdPrefix } from "../lib/ids";

/** Encodes a keyset position (sort value and id) as an opaque cursor. */
export function encodeCursor(sortValue: string, id: string): string {
  return btoa(JSON.stringify([sortValue, id]))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

/**
 * Decodes a cursor made by `encodeCursor` for a list of `prefix` ids; anything else, a cursor of another list among
 * them, is a 400.
 */
export function decodeCursor(cursor: string, prefix: IdPrefix): [string, string] {
  try {
    const value = JSON.parse(atob(cursor.replace(/-/g, "+").replace(/_/g, "/")));
    if (
      Array.isArray(value) &&
      value.length === 2 &&
      value.every((v) => typeof v === "string") &&
      idPattern(prefix).test(value[1])
    ) {
      return value as [string, string];
    }
  } catch {
    // fall through to the error below
  }
  throw new ApiError("BAD_REQUEST", "invalid cursor", [
    { path: "cursor", message: "must be a nextCursor from a previous page of this list" },
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
