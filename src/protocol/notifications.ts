import { z } from "zod";
import { idSchema, nameSchema, pageQuerySchema, timestampSchema } from "./common";

/** Delivery channels of a notification. */
export const ChannelSchema = z.enum(["websocket", "push", "email"]);
export type Channel = z.infer<typeof ChannelSchema>;

/** Priorities: `critical` ignores the recipient's preferences. */
export const PrioritySchema = z.enum(["low", "normal", "high", "critical"]);
export type Priority = z.infer<typeof PrioritySchema>;

/** What a channel reports once it is done; a channel still in flight is absent. */
export const ChannelStatusSchema = z.enum(["sent", "failed", "skipped"]);
export type ChannelStatus = z.infer<typeof ChannelStatusSchema>;

/** A `{{path}}` placeholder: `event.` then dot-separated field names, or `recipient.id` / `recipient.name`. */
const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;
const PATH = /^(event(\.[A-Za-z0-9_-]+)+|recipient\.(id|name))$/;

/** The placeholder paths of a template string, in order. */
export function templatePaths(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].map((match) => match[1]);
}

const templateString = (min: number, max: number) =>
  z
    .string()
    .min(min)
    .max(max)
    .superRefine((value, ctx) => {
      for (const path of templatePaths(value)) {
        if (!PATH.test(path)) {
          ctx.addIssue({
            code: "custom",
            message: `'{{${path}}}' is not a template path: use {{event.<field>...}}, {{recipient.id}} or {{recipient.name}}`,
          });
        }
      }
    });

/** A rule's template: rendered from the event's fields for each recipient. */
export const TemplateSchema = z.strictObject({ title: templateString(1, 200), body: templateString(0, 2000) });

/** Who a rule notifies: the participants of the event's room, or listed accounts (never the author of a message). */
export const RecipientsSchema = z.union(
  [z.literal("participants"), z.strictObject({ accountIds: z.array(idSchema("acc")).min(1).max(100) })],
  { error: 'must be "participants" or { "accountIds": [1 to 100 account ids] }' },
);
export type Recipients = z.infer<typeof RecipientsSchema>;

const channelsSchema = z
  .array(ChannelSchema)
  .min(1)
  .max(3)
  .refine((channels) => new Set(channels).size === channels.length, { message: "must not repeat a channel" })
  .meta({ uniqueItems: true });

/** Body of `POST /v1/notification-rules`; `topic` is checked against the grammar of section 8 by the route. */
export const CreateRuleSchema = z.strictObject({
  name: nameSchema,
  topic: z.string().min(1).max(512),
  channels: channelsSchema,
  recipients: RecipientsSchema,
  priority: PrioritySchema.default("normal"),
  template: TemplateSchema,
});

/** Body of `PATCH /v1/notification-rules/{id}`. */
export const UpdateRuleSchema = z.strictObject({
  name: nameSchema.optional(),
  topic: z.string().min(1).max(512).optional(),
  channels: channelsSchema.optional(),
  recipients: RecipientsSchema.optional(),
  priority: PrioritySchema.optional(),
  template: TemplateSchema.optional(),
});

/** A notification rule. */
export const RuleSchema = z
  .object({
    id: z.string(),
    orgId: z.string(),
    name: z.string(),
    topic: z.string(),
    channels: z.array(ChannelSchema),
    recipients: RecipientsSchema,
    priority: PrioritySchema,
    template: z.object({ title: z.string(), body: z.string() }),
    createdAt: timestampSchema,
    updatedAt: timestampSchema,
  })
  .meta({ id: "NotificationRule" });
export type Rule = z.infer<typeof RuleSchema>;

/** Body of `PUT /v1/accounts/{id}/notification-preferences`: what is given replaces, what is missing stays. */
export const PutPreferencesSchema = z.strictObject({
  channels: z
    .strictObject({ push: z.boolean().optional(), email: z.boolean().optional(), websocket: z.boolean().optional() })
    .optional(),
  mutedRoomIds: z.array(idSchema("room")).max(500).optional(),
});

/** An account's notification preferences. */
export const PreferencesSchema = z
  .object({
    accountId: z.string(),
    channels: z.object({ push: z.boolean(), email: z.boolean(), websocket: z.boolean() }),
    mutedRoomIds: z.array(z.string()),
    updatedAt: timestampSchema.nullable(),
  })
  .meta({ id: "NotificationPreferences" });
export type Preferences = z.infer<typeof PreferencesSchema>;

const base64url = (bytes: number, what: string) =>
  z
    .string()
    .max(200)
    .regex(/^[A-Za-z0-9_-]+={0,2}$/, { message: `must be base64url` })
    .refine((value) => decodedLength(value) === bytes, { message: `must be ${what} (${bytes} bytes, base64url)` });

function decodedLength(value: string): number {
  const body = value.replace(/=+$/, "");
  return body.length % 4 === 1 ? -1 : Math.floor((body.length * 3) / 4);
}

/**
 * A push endpoint: https, or http on a loopback host (local push services in development and tests). Push services
 * are always https; the worker only ever POSTs encrypted payloads there.
 */
export const PushEndpointSchema = z
  .string()
  .max(2048)
  .url()
  .refine(
    (value) => {
      if (!URL.canParse(value)) return false;
      const url = new URL(value);
      return (
        url.protocol === "https:" ||
        (url.protocol === "http:" && ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname))
      );
    },
    { message: "must be an https URL" },
  );

/** Body of `POST /v1/accounts/{id}/push-subscriptions`: a browser's `PushSubscription.toJSON()`. */
export const CreatePushSubscriptionSchema = z.object({
  endpoint: PushEndpointSchema,
  expirationTime: z.number().nullable().optional(),
  keys: z.object({
    p256dh: base64url(65, "an uncompressed P-256 point").refine((value) => value.startsWith("B"), {
      message: "must be an uncompressed P-256 point (0x04...)",
    }),
    auth: base64url(16, "the 16-byte auth secret"),
  }),
});

/** A stored push subscription (its keys are not returned). */
export const PushSubscriptionSchema = z
  .object({ id: z.string(), accountId: z.string(), endpoint: z.string(), createdAt: timestampSchema })
  .meta({ id: "PushSubscription" });
export type PushSubscriptionInfo = z.infer<typeof PushSubscriptionSchema>;

/** A notification as its recipient sees it. */
export const NotificationSchema = z
  .object({
    id: z.string(),
    ruleId: z.string(),
    accountId: z.string(),
    eventId: z.string(),
    title: z.string(),
    body: z.string(),
    priority: PrioritySchema,
    channels: z.object({
      websocket: ChannelStatusSchema.optional(),
      push: ChannelStatusSchema.optional(),
      email: ChannelStatusSchema.optional(),
    }),
    readAt: timestampSchema.nullable(),
    createdAt: timestampSchema,
  })
  .meta({ id: "Notification" });
export type Notification = z.infer<typeof NotificationSchema>;

/** Query of `GET /v1/notifications`: an API key names the account; an account token may omit it (its own). */
export const ListNotificationsQuerySchema = z
  .object({
    accountId: idSchema("acc").optional(),
    unread: z.enum(["true", "false"]).optional(),
  })
  .extend(pageQuerySchema.shape);

/** `GET /v1/push/vapid-public-key`. */
export const VapidPublicKeySchema = z.object({ publicKey: z.string() }).meta({ id: "VapidPublicKey" });

/** A job on the notifications queue: deliver one notification on one channel. */
export const NotificationJobSchema = z.object({
  notificationId: idSchema("ntf"),
  channel: z.enum(["push", "email"]),
});
export type NotificationJob = z.infer<typeof NotificationJobSchema>;
