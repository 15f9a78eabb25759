import { z } from "zod";
import { idSchema, nameSchema, timestampSchema, ttlSecondsSchema } from "./common";

/** Body of `POST /v1/orgs`. */
export const CreateOrgSchema = z.strictObject({ name: nameSchema });

/** An organisation. */
export const OrgSchema = z.object({ id: z.string(), name: z.string(), createdAt: timestampSchema }).meta({ id: "Org" });
export type Org = z.infer<typeof OrgSchema>;

/** Answer of `POST /v1/orgs`. */
export const CreateOrgResponseSchema = z.object({ org: OrgSchema, apiKey: z.string() });

/** Body of `POST /v1/api-keys`. */
export const CreateApiKeySchema = z.strictObject({ name: nameSchema.optional() });

/** Answer of `POST /v1/api-keys`: the only time the secret is shown. */
export const CreateApiKeyResponseSchema = z.object({
  id: z.string(),
  name: z.string().nullable(),
  apiKey: z.string(),
  createdAt: timestampSchema,
});

/** An API key as `GET /v1/api-keys` lists it: never its secret. */
export const ApiKeySchema = z
  .object({ id: z.string(), name: z.string().nullable(), createdAt: timestampSchema })
  .meta({ id: "ApiKey" });

/** Body of `POST /v1/tokens`. */
export const CreateTokenSchema = z.strictObject({ accountId: idSchema("acc"), ttlSeconds: ttlSecondsSchema });

/** An issued account or session token. */
export const TokenResponseSchema = z.object({ token: z.string(), expiresAt: timestampSchema }).meta({ id: "Token" });
