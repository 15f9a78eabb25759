import type { Actor } from "../room/room";

/**
 * Who a request acts as, resolved from its credential before anything else happens. A token's `keyId` is the API key
 * that issued it (tokens issued before keys were recorded have none).
 */
export type Principal =
  | { kind: "admin" }
  | { kind: "apiKey"; orgId: string; keyId: string }
  | { kind: "account"; orgId: string; accountId: string; expiresAt: number; keyId?: string }
  | { kind: "session"; orgId: string; accountId: string; conversationId: string; expiresAt: number; keyId?: string };

/** Principal kinds that belong to an org. */
export type OrgPrincipal = Exclude<Principal, { kind: "admin" }>;

/** What the room object needs to know of a principal to apply its access rules. */
export function actorOf(principal: OrgPrincipal): Actor {
  switch (principal.kind) {
    case "apiKey":
      return { orgId: principal.orgId };
    case "account":
      return { orgId: principal.orgId, accountId: principal.accountId };
    case "session":
      return { orgId: principal.orgId, accountId: principal.accountId, conversationId: principal.conversationId };
  }
}
