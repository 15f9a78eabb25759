import { z } from "zod";
import { metaSchema, nameSchema, timestampSchema } from "./common";

/** `provider:model`, e.g. `local:echo`, `openai:gpt-4o-mini`, `workers-ai:@cf/meta/llama-3.1-8b-instruct`. */
export const ModelSchema = z
  .string()
  .max(200)
  .regex(/^(local|openai|workers-ai):[^\s]+$/, {
    message: "must be provider:model with provider local, openai or workers-ai",
  });

/** One step of an agent's flow. */
export const StepSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("reply"), text: z.string().min(1).max(32768) }),
  z.strictObject({
    type: z.literal("assistant"),
    instructions: z.string().max(32768).optional(),
    model: ModelSchema.optional(),
  }),
  z.strictObject({
    type: z.literal("webhook"),
    url: z
      .string()
      .max(2048)
      .url()
      .refine((u) => /^https?:\/\//i.test(u), { message: "must be an http or https URL" }),
  }),
]);
export type Step = z.infer<typeof StepSchema>;

/** An agent's flow: steps run on the conversation's start and on each message. */
export const FlowSchema = z.strictObject({
  onStart: z.array(StepSchema).max(20).optional(),
  onMessage: z.array(StepSchema).max(20).optional(),
  /** Whether `onMessage` also runs for other agents' messages (never for the agent's own); default false. */
  replyToAgents: z.boolean().optional(),
});
export type Flow = z.infer<typeof FlowSchema>;

/** Settings of an agent account. */
export const AgentSettingsSchema = z
  .strictObject({
    instructions: z.string().max(32768).optional(),
    model: ModelSchema.optional(),
    flow: FlowSchema.optional(),
  })
  .meta({ id: "AgentSettings" });
export type AgentSettings = z.infer<typeof AgentSettingsSchema>;

/** The flow an agent without `flow` runs. */
export const DEFAULT_FLOW: Flow = { onMessage: [{ type: "assistant" }] };

/** Account kinds. */
export const AccountTypeSchema = z.enum(["user", "agent"]);
export type AccountType = z.infer<typeof AccountTypeSchema>;

const emailSchema = z.string().trim().max(320).email();

/** Body of `POST /v1/accounts`. */
export const CreateAccountSchema = z
  .strictObject({
    type: AccountTypeSchema,
    name: nameSchema,
    email: emailSchema.nullable().optional(),
    meta: metaSchema.optional(),
    agent: AgentSettingsSchema.optional(),
  })
  .superRefine((value, ctx) => {
    if (value.agent && value.type !== "agent") {
      ctx.addIssue({ code: "custom", path: ["agent"], message: "only agent accounts have agent settings" });
    }
  });

/** An agent's settings in a PATCH: the keys given replace those settings, `null` removes one (back to its default). */
export const AgentSettingsPatchSchema = z.strictObject({
  instructions: AgentSettingsSchema.shape.instructions.unwrap().nullable().optional(),
  model: ModelSchema.nullable().optional(),
  flow: FlowSchema.nullable().optional(),
});
export type AgentSettingsPatch = z.infer<typeof AgentSettingsPatchSchema>;

/** Body of `PATCH /v1/accounts/{id}`. */
export const UpdateAccountSchema = z.strictObject({
  name: nameSchema.optional(),
  email: emailSchema.nullable().optional(),
  meta: metaSchema.optional(),
  agent: AgentSettingsPatchSchema.optional(),
});

/** Query of `GET /v1/accounts`. */
export const ListAccountsQuerySchema = z.object({ type: AccountTypeSchema.optional() });

/** A user or agent. */
export const AccountSchema = z
  .object({
    id: z.string(),
    orgId: z.string(),
    type: AccountTypeSchema,
    name: z.string(),
    email: z.string().nullable(),
    meta: z.record(z.string(), z.unknown()),
    agent: AgentSettingsSchema.nullable(),
    createdAt: timestampSchema,
  })
  .meta({ id: "Account" });
export type Account = z.infer<typeof AccountSchema>;
