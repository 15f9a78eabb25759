import { WorkflowEntrypoint, type WorkflowEvent, type WorkflowStep } from "cloudflare:workers";
import type { Bindings } from "../env";

/** Parameters of one flow instance: an agent taking part in one conversation. */
export interface FlowParams {
  orgId: string;
  conversationId: string;
  agentId: string;
}

/**
 * The flow engine's Workflow: one instance per (conversation, agent). Declared with its binding now so every
 * binding of the architecture exists from the start; the steps arrive with the flow engine.
 */
export class FlowWorkflow extends WorkflowEntrypoint<Bindings, FlowParams> {
  /** Runs the agent's flow for one conversation. */
  override async run(_event: WorkflowEvent<FlowParams>, _step: WorkflowStep): Promise<void> {}
}
