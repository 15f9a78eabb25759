import type { Bindings } from "../env";
import type { Hub } from "./hub";

/** The RPC methods of an org hub, typed as the object declares them (events carry plain JSON). */
export type HubRpc = Pick<Hub, "publish" | "keyRevoked" | "accountDeleted">;

/** The hub of an org. */
export function hubStub(env: Bindings, orgId: string): HubRpc {
  return env.HUBS.get(env.HUBS.idFromName(orgId)) as unknown as HubRpc;
}
