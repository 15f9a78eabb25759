import { DurableObject } from "cloudflare:workers";
import type { Bindings } from "../env";

/**
 * The org Hub object behind `/v1/realtime`: one per org, holding the org-wide sockets and their topic
 * subscriptions. Declared with its binding now; its sockets and fan-out arrive with the realtime work.
 */
export class Hub extends DurableObject<Bindings> {}
