import type { z } from "zod";
import type { Account, CreateAccountSchema, ListAccountsQuerySchema, UpdateAccountSchema } from "../protocol/accounts";
import type { ErrorBodySchema } from "../protocol/common";
import type {
  Conversation,
  CreateConversationSchema,
  CreateSessionSchema,
  ListConversationsQuerySchema,
  UpdateConversationSchema,
} from "../protocol/conversations";
import type { Attachment } from "../attachments/schemas";
import type { FlowRun, ListFlowRunsQuerySchema } from "../protocol/flows";
import type { HistoryPage, Message, PostMessageSchema } from "../protocol/messages";
import type {
  CreateApiKeyResponseSchema,
  CreateApiKeySchema,
  CreateOrgResponseSchema,
  CreateOrgSchema,
  CreateTokenSchema,
  TokenResponseSchema,
} from "../protocol/orgs";
import type {
  CreatePushSubscriptionSchema,
  CreateRuleSchema,
  ListNotificationsQuerySchema,
  Notification,
  Preferences,
  PushSubscriptionInfo,
  PutPreferencesSchema,
  Rule,
  UpdateRuleSchema,
} from "../protocol/notifications";
import type {
  CreateRoomSchema,
  ListRoomsQuerySchema,
  Participant,
  ParticipantInputSchema,
  Room,
  UpdateParticipantSchema,
  UpdateRoomSchema,
} from "../protocol/rooms";

/** One validation problem of a `BAD_REQUEST`: where it is and what is wrong. */
export type ErrorDetail = NonNullable<z.infer<typeof ErrorBodySchema>["error"]["details"]>[number];

/** Body of `POST /v1/orgs`. */
export type CreateOrgInput = z.input<typeof CreateOrgSchema>;
/** Answer of `POST /v1/orgs`: the org and its first API key. */
export type CreateOrgResult = z.infer<typeof CreateOrgResponseSchema>;
/** Body of `POST /v1/api-keys`. */
export type CreateApiKeyInput = z.input<typeof CreateApiKeySchema>;
/** Answer of `POST /v1/api-keys`: the only time the secret is shown. */
export type CreatedApiKey = z.infer<typeof CreateApiKeyResponseSchema>;
/** An API key as `GET /v1/api-keys` lists it (never its secret). */
export type ApiKeySummary = Omit<CreatedApiKey, "apiKey">;
/** Body of `POST /v1/tokens`. */
export type CreateTokenInput = z.input<typeof CreateTokenSchema>;
/** An issued account or session token. */
export type IssuedToken = z.infer<typeof TokenResponseSchema>;
/** Body of `POST /v1/accounts`. */
export type CreateAccountInput = z.input<typeof CreateAccountSchema>;
/** Body of `PATCH /v1/accounts/{id}`. */
export type UpdateAccountInput = z.input<typeof UpdateAccountSchema>;
/** Body of `POST /v1/rooms`. */
export type CreateRoomInput = z.input<typeof CreateRoomSchema>;
/** Body of `PATCH /v1/rooms/{id}`. */
export type UpdateRoomInput = z.input<typeof UpdateRoomSchema>;
/** Body of `POST /v1/rooms/{id}/participants`. */
export type AddParticipantInput = z.input<typeof ParticipantInputSchema>;
/** Body of `PATCH /v1/rooms/{id}/participants/{accountId}`. */
export type UpdateParticipantInput = z.input<typeof UpdateParticipantSchema>;
/** Body of `POST /v1/rooms/{roomId}/conversations`. */
export type CreateConversationInput = z.input<typeof CreateConversationSchema>;
/** Body of `PATCH /v1/conversations/{id}`. */
export type UpdateConversationInput = z.input<typeof UpdateConversationSchema>;
/** Body of `POST /v1/conversations/{id}/sessions`. */
export type CreateSessionInput = z.input<typeof CreateSessionSchema>;
/** Body of `POST /v1/conversations/{id}/messages`. */
export type PostMessageInput = z.input<typeof PostMessageSchema>;
/** Query of `GET /v1/conversations/{id}/messages` (see `HistoryQuerySchema`). */
export interface HistoryQuery {
  afterSeq?: number;
  beforeSeq?: number;
  limit?: number;
}

/** `limit` (1..100, default 20) and `cursor` of every cursor-paged list. */
export interface PageQuery {
  limit?: number;
  cursor?: string;
}
/** Query of `GET /v1/accounts`. */
export type ListAccountsQuery = z.input<typeof ListAccountsQuerySchema> & PageQuery;
/** Query of `GET /v1/rooms`. */
export type ListRoomsQuery = z.input<typeof ListRoomsQuerySchema> & PageQuery;
/** Query of `GET /v1/conversations`. */
export type ListConversationsQuery = z.input<typeof ListConversationsQuerySchema> & PageQuery;
/** Query of `GET /v1/flow-runs`. */
export type ListFlowRunsQuery = z.input<typeof ListFlowRunsQuerySchema> & PageQuery;

/** Body of `POST /v1/notification-rules`. */
export type CreateRuleInput = z.input<typeof CreateRuleSchema>;
/** Body of `PATCH /v1/notification-rules/{id}`. */
export type UpdateRuleInput = z.input<typeof UpdateRuleSchema>;
/** Body of `PUT /v1/accounts/{id}/notification-preferences`. */
export type PutPreferencesInput = z.input<typeof PutPreferencesSchema>;
/** Body of `POST /v1/accounts/{id}/push-subscriptions`: a browser's `PushSubscription` as JSON. */
export type PushSubscriptionInput = z.input<typeof CreatePushSubscriptionSchema>;
/** Query of `GET /v1/notifications` (`unread` as a boolean). */
export type ListNotificationsQuery = Omit<z.input<typeof ListNotificationsQuerySchema>, "unread" | "limit" | "cursor"> &
  PageQuery & { unread?: boolean };
/** How `attachments.upload` names and types a file (a `File` brings its own name and type). */
export interface UploadOptions extends RequestOptions {
  name?: string;
  contentType?: string;
  /** Lifetime of the answer's signed `url` in seconds. */
  ttlSeconds?: number;
}

/** One page of a cursor-paged list; `nextCursor` is null on the last page. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** A list method that takes `cursor` in its query and answers a `Page`, as `paginate` walks it. */
export type PagedList = (query: never, ...rest: never[]) => Promise<Page<unknown>>;

/** The query a list method takes. */
export type QueryOf<L extends PagedList> = NonNullable<Parameters<L>[0]>;

/** The item type of a list method's pages. */
export type ItemOf<L extends PagedList> = Awaited<ReturnType<L>> extends Page<infer T> ? T : never;

/** Options of `messages.iterate`: walk forward from `afterSeq` (default), or backward from `beforeSeq`. */
export interface HistoryIterateOptions {
  /** `forward` yields ascending seq after `afterSeq` (default 0); `backward` yields descending seq before `beforeSeq` (default: the latest). */
  direction?: "forward" | "backward";
  afterSeq?: number;
  beforeSeq?: number;
  /** Page size of each request (1..100, default 100). */
  pageSize?: number;
}

/** A created-or-existing answer: `created` is false when the server answered 200 with an existing resource. */
export interface Upserted<T> {
  value: T;
  created: boolean;
}

/** Per-call options of every method. */
export interface RequestOptions {
  signal?: AbortSignal;
  /** Sent as `x-request-id`, so server logs of this call can be found. */
  requestId?: string;
  headers?: Record<string, string>;
}

/** Options of `ParleyClient`. */
export interface ParleyClientOptions {
  /** The server's origin, e.g. `http://127.0.0.1:8787` (a trailing `/v1` or slash is fine). */
  baseUrl: string;
  /** Admin token, API key, account token or session token; sent as `Authorization: Bearer`. */
  token: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
  /** Headers added to every request. */
  headers?: Record<string, string>;
}

const STATUS_CODES: Record<number, string> = {
  400: "BAD_REQUEST",
  401: "UNAUTHORIZED",
  403: "FORBIDDEN",
  404: "NOT_FOUND",
  405: "METHOD_NOT_ALLOWED",
  409: "CONFLICT",
  413: "PAYLOAD_TOO_LARGE",
  415: "UNSUPPORTED_MEDIA_TYPE",
  429: "RATE_LIMITED",
  500: "INTERNAL",
  503: "UNAVAILABLE",
};

/** An error answer of the API (`status`, `code`, `requestId`, `details`), or `NETWORK_ERROR` (status 0) when no answer came. */
export class ParleyError extends Error {
  readonly status: number;
  readonly code: string;
  readonly requestId: string | null;
  readonly details?: ErrorDetail[];

  constructor(
    init: { status: number; code: string; message: string; requestId?: string | null; details?: ErrorDetail[] },
    options?: { cause?: unknown },
  ) {
    super(init.message, options);
    this.name = "ParleyError";
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId ?? null;
    if (init.details) this.details = init.details;
  }
}

/** Whether a value is a `ParleyError`, optionally with one code. */
export function isParleyError(value: unknown, code?: string): value is ParleyError {
  return value instanceof ParleyError && (code === undefined || value.code === code);
}

/** Walks a cursor-paged list page by page, yielding every item; stops after the page whose `nextCursor` is null. */
export async function* paginate<L extends PagedList>(list: L, query: QueryOf<L>): AsyncGenerator<ItemOf<L>, void> {
  const fetchPage = list as unknown as (query: PageQuery) => Promise<Page<ItemOf<L>>>;
  const base = query as PageQuery;
  let cursor = base.cursor;
  for (;;) {
    const page = await fetchPage({ ...base, cursor });
    yield* page.items;
    if (!page.nextCursor || page.items.length === 0) return;
    cursor = page.nextCursor;
  }
}

type Query = Record<string, string | number | boolean | undefined | null>;

interface Call {
  method: "GET" | "POST" | "PATCH" | "PUT" | "DELETE";
  path: string;
  query?: Query;
  body?: unknown;
  /** A body sent as it is (an upload), with its content type. */
  raw?: { body: Blob | ArrayBuffer | Uint8Array; contentType: string };
  options?: RequestOptions;
}

const seg = encodeURIComponent;

/** A typed client of Parley's REST API (contract sections 2-10). Every method throws `ParleyError` on an error answer. */
export class ParleyClient {
  readonly baseUrl: string;
  readonly token: string;
  readonly #fetch: typeof fetch;
  readonly #headers: Record<string, string>;

  constructor(options: ParleyClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "").replace(/\/v1$/, "");
    this.token = options.token;
    if (!options.fetch && typeof globalThis.fetch !== "function") {
      throw new TypeError("ParleyClient needs a fetch: pass options.fetch");
    }
    // A bare reference to the global fetch throws "Illegal invocation" in browsers when called as a method.
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#headers = { ...options.headers };
  }

  /** The same client acting with another credential, e.g. the API key `orgs.create` answered. */
  withToken(token: string): ParleyClient {
    return new ParleyClient({ baseUrl: this.baseUrl, token, fetch: this.#fetch, headers: this.#headers });
  }

  /** Walks a cursor-paged list method of this client, e.g. `client.paginate(client.accounts.list, { type: "user" })`. */
  paginate<L extends PagedList>(list: L, query: QueryOf<L>): AsyncGenerator<ItemOf<L>, void> {
    return paginate(list, query);
  }

  /** Orgs (admin token). */
  readonly orgs = {
    /** `POST /v1/orgs`: a new org and its first API key. */
    create: (body: CreateOrgInput, options?: RequestOptions) =>
      this.#json<CreateOrgResult>({ method: "POST", path: "/v1/orgs", body, options }),
  };

  /** The org's API keys. */
  readonly apiKeys = {
    /** `POST /v1/api-keys`: a new key; its secret is only in this answer. */
    create: (body: CreateApiKeyInput = {}, options?: RequestOptions) =>
      this.#json<CreatedApiKey>({ method: "POST", path: "/v1/api-keys", body, options }),
    /** `GET /v1/api-keys`: live keys, newest first. */
    list: (query: PageQuery = {}, options?: RequestOptions) =>
      this.#json<Page<ApiKeySummary>>({ method: "GET", path: "/v1/api-keys", query: { ...query }, options }),
    /** `DELETE /v1/api-keys/{id}`: revokes a key. */
    revoke: (id: string, options?: RequestOptions) =>
      this.#json<void>({ method: "DELETE", path: `/v1/api-keys/${seg(id)}`, options }),
  };

  /** Account tokens. */
  readonly tokens = {
    /** `POST /v1/tokens`: an account token (API key). */
    create: (body: CreateTokenInput, options?: RequestOptions) =>
      this.#json<IssuedToken>({ method: "POST", path: "/v1/tokens", body, options }),
  };

  /** Users and agents. */
  readonly accounts = {
    /** `POST /v1/accounts`. */
    create: (body: CreateAccountInput, options?: RequestOptions) =>
      this.#json<Account>({ method: "POST", path: "/v1/accounts", body, options }),
    /** `GET /v1/accounts?type=`: newest first. */
    list: (query: ListAccountsQuery = {}, options?: RequestOptions) =>
      this.#json<Page<Account>>({ method: "GET", path: "/v1/accounts", query: { ...query }, options }),
    /** `GET /v1/accounts/{id}`. */
    get: (id: string, options?: RequestOptions) =>
      this.#json<Account>({ method: "GET", path: `/v1/accounts/${seg(id)}`, options }),
    /** `PATCH /v1/accounts/{id}`. */
    update: (id: string, body: UpdateAccountInput, options?: RequestOptions) =>
      this.#json<Account>({ method: "PATCH", path: `/v1/accounts/${seg(id)}`, body, options }),
    /** `DELETE /v1/accounts/{id}`. */
    delete: (id: string, options?: RequestOptions) =>
      this.#json<void>({ method: "DELETE", path: `/v1/accounts/${seg(id)}`, options }),
  };

  /** Rooms. */
  readonly rooms = {
    /** `POST /v1/rooms`: a standard room, or the dm of a participant set (created once, then the same room). */
    create: async (body: CreateRoomInput, options?: RequestOptions) => (await this.rooms.upsert(body, options)).value,
    /** `POST /v1/rooms`, telling whether the room was created (201) or an existing dm answered (200). */
    upsert: (body: CreateRoomInput, options?: RequestOptions) =>
      this.#upsert<Room>({ method: "POST", path: "/v1/rooms", body, options }),
    /** `GET /v1/rooms?accountId=&type=`: newest first. */
    list: (query: ListRoomsQuery = {}, options?: RequestOptions) =>
      this.#json<Page<Room>>({ method: "GET", path: "/v1/rooms", query: { ...query }, options }),
    /** `GET /v1/rooms/{id}`. */
    get: (id: string, options?: RequestOptions) =>
      this.#json<Room>({ method: "GET", path: `/v1/rooms/${seg(id)}`, options }),
    /** `PATCH /v1/rooms/{id}`: name and meta. */
    update: (id: string, body: UpdateRoomInput, options?: RequestOptions) =>
      this.#json<Room>({ method: "PATCH", path: `/v1/rooms/${seg(id)}`, body, options }),
  };

  /** Participants of rooms; a dm's membership never changes (`ROOM_IMMUTABLE`). */
  readonly participants = {
    /** `POST /v1/rooms/{roomId}/participants`. */
    add: (roomId: string, body: AddParticipantInput, options?: RequestOptions) =>
      this.#json<Participant>({ method: "POST", path: `/v1/rooms/${seg(roomId)}/participants`, body, options }),
    /** `PATCH /v1/rooms/{roomId}/participants/{accountId}`: role and autoRespond. */
    update: (roomId: string, accountId: string, body: UpdateParticipantInput, options?: RequestOptions) =>
      this.#json<Participant>({
        method: "PATCH",
        path: `/v1/rooms/${seg(roomId)}/participants/${seg(accountId)}`,
        body,
        options,
      }),
    /** `DELETE /v1/rooms/{roomId}/participants/{accountId}`. */
    remove: (roomId: string, accountId: string, options?: RequestOptions) =>
      this.#json<void>({ method: "DELETE", path: `/v1/rooms/${seg(roomId)}/participants/${seg(accountId)}`, options }),
  };

  /** Conversations: threads inside rooms. */
  readonly conversations = {
    /** `POST /v1/rooms/{roomId}/conversations`. */
    create: (roomId: string, body: CreateConversationInput = {}, options?: RequestOptions) =>
      this.#json<Conversation>({ method: "POST", path: `/v1/rooms/${seg(roomId)}/conversations`, body, options }),
    /** `GET /v1/conversations?roomId=&contactId=&accountId=`: newest activity first. */
    list: (query: ListConversationsQuery = {}, options?: RequestOptions) =>
      this.#json<Page<Conversation>>({ method: "GET", path: "/v1/conversations", query: { ...query }, options }),
    /** `GET /v1/conversations/{id}`. */
    get: (id: string, options?: RequestOptions) =>
      this.#json<Conversation>({ method: "GET", path: `/v1/conversations/${seg(id)}`, options }),
    /** `PATCH /v1/conversations/{id}`. */
    update: (id: string, body: UpdateConversationInput, options?: RequestOptions) =>
      this.#json<Conversation>({ method: "PATCH", path: `/v1/conversations/${seg(id)}`, body, options }),
    /** `DELETE /v1/conversations/{id}`: the conversation and its history. */
    delete: (id: string, options?: RequestOptions) =>
      this.#json<void>({ method: "DELETE", path: `/v1/conversations/${seg(id)}`, options }),
  };

  /** Flow runs: executions of agents' flows, newest first. */
  readonly flowRuns = {
    /** `GET /v1/flow-runs?conversationId=&agentId=&status=`. */
    list: (query: ListFlowRunsQuery = {}, options?: RequestOptions) =>
      this.#json<Page<FlowRun>>({ method: "GET", path: "/v1/flow-runs", query: { ...query }, options }),
    /** `GET /v1/flow-runs/{id}`. */
    get: (id: string, options?: RequestOptions) =>
      this.#json<FlowRun>({ method: "GET", path: `/v1/flow-runs/${seg(id)}`, options }),
  };

  /** Session tokens: one participant in one conversation (for an end user's browser). */
  readonly sessions = {
    /** `POST /v1/conversations/{conversationId}/sessions` (API key). */
    create: (conversationId: string, body: CreateSessionInput, options?: RequestOptions) =>
      this.#json<IssuedToken>({
        method: "POST",
        path: `/v1/conversations/${seg(conversationId)}/sessions`,
        body,
        options,
      }),
  };

  /** Messages and ordered history. */
  readonly messages = {
    /** `POST /v1/conversations/{id}/messages`; with a `clientMessageId` a retry answers the original message. */
    post: async (conversationId: string, body: PostMessageInput, options?: RequestOptions) =>
      (await this.messages.upsert(conversationId, body, options)).value,
    /** `POST /v1/conversations/{id}/messages`, telling whether it posted (201) or found the `clientMessageId` (200). */
    upsert: (conversationId: string, body: PostMessageInput, options?: RequestOptions) =>
      this.#upsert<Message>({
        method: "POST",
        path: `/v1/conversations/${seg(conversationId)}/messages`,
        body,
        options,
      }),
    /** `GET /v1/conversations/{id}/messages?afterSeq=&beforeSeq=&limit=`: one page, items in ascending seq. */
    list: (conversationId: string, query: HistoryQuery = {}, options?: RequestOptions) =>
      this.#json<HistoryPage>({
        method: "GET",
        path: `/v1/conversations/${seg(conversationId)}/messages`,
        query: { ...query },
        options,
      }),
    /** Walks a conversation's history page by page: ascending after `afterSeq`, or descending before `beforeSeq`. */
    iterate: (conversationId: string, iterate: HistoryIterateOptions = {}, options?: RequestOptions) =>
      this.#iterateHistory(conversationId, iterate, options),
  };

  /** Attachments (R2): uploads, their signed URLs, deletion. */
  readonly attachments = {
    /**
     * `POST /v1/attachments` with the file as the body: a `File` (or `Blob`) brings its type (and a `File` its name);
     * bytes need `name` and `contentType`.
     */
    upload: (file: Blob | ArrayBuffer | Uint8Array, options: UploadOptions = {}) => {
      const name = options.name ?? (file as { name?: unknown }).name;
      const contentType = options.contentType ?? ((file instanceof Blob && file.type) || "application/octet-stream");
      return this.#json<Attachment>({
        method: "POST",
        path: "/v1/attachments",
        query: { name: typeof name === "string" ? name : undefined, ttlSeconds: options.ttlSeconds },
        raw: { body: file, contentType },
        options,
      });
    },
    /** `GET /v1/attachments/{id}`: its metadata with a fresh signed `url`. */
    get: (id: string, query: { ttlSeconds?: number } = {}, options?: RequestOptions) =>
      this.#json<Attachment>({ method: "GET", path: `/v1/attachments/${seg(id)}`, query: { ...query }, options }),
    /** `DELETE /v1/attachments/{id}`. */
    delete: (id: string, options?: RequestOptions) =>
      this.#json<void>({ method: "DELETE", path: `/v1/attachments/${seg(id)}`, options }),
  };

  /** Notification rules (API key): events matching a topic become notifications. */
  readonly notificationRules = {
    /** `POST /v1/notification-rules`. */
    create: (body: CreateRuleInput, options?: RequestOptions) =>
      this.#json<Rule>({ method: "POST", path: "/v1/notification-rules", body, options }),
    /** `GET /v1/notification-rules`: newest first. */
    list: (query: PageQuery = {}, options?: RequestOptions) =>
      this.#json<Page<Rule>>({ method: "GET", path: "/v1/notification-rules", query: { ...query }, options }),
    /** `GET /v1/notification-rules/{id}`. */
    get: (id: string, options?: RequestOptions) =>
      this.#json<Rule>({ method: "GET", path: `/v1/notification-rules/${seg(id)}`, options }),
    /** `PATCH /v1/notification-rules/{id}`. */
    update: (id: string, body: UpdateRuleInput, options?: RequestOptions) =>
      this.#json<Rule>({ method: "PATCH", path: `/v1/notification-rules/${seg(id)}`, body, options }),
    /** `DELETE /v1/notification-rules/{id}`. */
    delete: (id: string, options?: RequestOptions) =>
      this.#json<void>({ method: "DELETE", path: `/v1/notification-rules/${seg(id)}`, options }),
  };

  /** An account's notifications (an account token reads its own; an API key names the account). */
  readonly notifications = {
    /** `GET /v1/notifications?accountId=&unread=`: newest first. */
    list: (query: ListNotificationsQuery = {}, options?: RequestOptions) =>
      this.#json<Page<Notification>>({ method: "GET", path: "/v1/notifications", query: { ...query }, options }),
    /** `POST /v1/notifications/{id}/read`: marks it read (again: the same `readAt`). */
    read: (id: string, options?: RequestOptions) =>
      this.#json<Notification>({ method: "POST", path: `/v1/notifications/${seg(id)}/read`, options }),
    /** `GET /v1/accounts/{id}/notification-preferences`. */
    preferences: (accountId: string, options?: RequestOptions) =>
      this.#json<Preferences>({
        method: "GET",
        path: `/v1/accounts/${seg(accountId)}/notification-preferences`,
        options,
      }),
    /** `PUT /v1/accounts/{id}/notification-preferences`: the channels and muted rooms it names. */
    setPreferences: (accountId: string, body: PutPreferencesInput, options?: RequestOptions) =>
      this.#json<Preferences>({
        method: "PUT",
        path: `/v1/accounts/${seg(accountId)}/notification-preferences`,
        body,
        options,
      }),
  };

  /** Web Push: the server's VAPID key and accounts' browser subscriptions. */
  readonly push = {
    /** `GET /v1/push/vapid-public-key`: `applicationServerKey` for `pushManager.subscribe`. */
    vapidPublicKey: (options?: RequestOptions) =>
      this.#json<{ publicKey: string }>({ method: "GET", path: "/v1/push/vapid-public-key", options }),
    /** `POST /v1/accounts/{id}/push-subscriptions` with `subscription.toJSON()`. */
    subscribe: (accountId: string, subscription: PushSubscriptionInput, options?: RequestOptions) =>
      this.#json<PushSubscriptionInfo>({
        method: "POST",
        path: `/v1/accounts/${seg(accountId)}/push-subscriptions`,
        body: subscription,
        options,
      }),
    /** `GET /v1/accounts/{id}/push-subscriptions`. */
    subscriptions: (accountId: string, query: PageQuery = {}, options?: RequestOptions) =>
      this.#json<Page<PushSubscriptionInfo>>({
        method: "GET",
        path: `/v1/accounts/${seg(accountId)}/push-subscriptions`,
        query: { ...query },
        options,
      }),
    /** `DELETE /v1/accounts/{id}/push-subscriptions/{psubId}`. */
    unsubscribe: (accountId: string, id: string, options?: RequestOptions) =>
      this.#json<void>({
        method: "DELETE",
        path: `/v1/accounts/${seg(accountId)}/push-subscriptions/${seg(id)}`,
        options,
      }),
  };

  async *#iterateHistory(
    conversationId: string,
    { direction = "forward", afterSeq, beforeSeq, pageSize = 100 }: HistoryIterateOptions,
    options?: RequestOptions,
  ): AsyncGenerator<Message, void> {
    if (direction === "forward") {
      let after = afterSeq ?? 0;
      for (;;) {
        const page = await this.messages.list(conversationId, { afterSeq: after, limit: pageSize }, options);
        yield* page.items;
        const last = page.items[page.items.length - 1];
        if (!page.hasMore || !last) return;
        after = last.seq;
      }
    }
    let before = beforeSeq;
    for (;;) {
      const page = await this.messages.list(conversationId, { beforeSeq: before, limit: pageSize }, options);
      for (let i = page.items.length - 1; i >= 0; i--) yield page.items[i];
      const first = page.items[0];
      if (!page.hasMore || !first || first.seq <= 1) return;
      before = first.seq;
    }
  }

  async #upsert<T>(call: Call): Promise<Upserted<T>> {
    const { status, body } = await this.#send(call);
    return { value: body as T, created: status === 201 };
  }

  async #json<T>(call: Call): Promise<T> {
    return (await this.#send(call)).body as T;
  }

  async #send({ method, path, query, body, raw, options }: Call): Promise<{ status: number; body: unknown }> {
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    const headers: Record<string, string> = {
      accept: "application/json",
      ...this.#headers,
      ...options?.headers,
      authorization: `Bearer ${this.token}`,
    };
    if (options?.requestId) headers["x-request-id"] = options.requestId;
    if (body !== undefined) headers["content-type"] = "application/json";
    if (raw) headers["content-type"] = raw.contentType;

    let response: Response;
    try {
      response = await this.#fetch(url.toString(), {
        method,
        headers,
        body: raw ? raw.body : body === undefined ? undefined : JSON.stringify(body),
        signal: options?.signal,
      });
    } catch (error) {
      if (options?.signal?.aborted) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new ParleyError(
        { status: 0, code: "NETWORK_ERROR", message: `${method} ${path} failed: ${reason}` },
        { cause: error },
      );
    }

    const requestId = response.headers.get("x-request-id");
    const text = await response.text();
    let parsed: unknown = undefined;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (response.ok) {
      if (text && parsed === undefined) {
        throw new ParleyError({
          status: response.status,
          code: "INVALID_RESPONSE",
          message: `${method} ${path} answered ${response.status} with a body that is not JSON`,
          requestId,
        });
      }
      return { status: response.status, body: parsed };
    }
    throw errorOf(response.status, parsed, requestId, `${method} ${path}`);
  }
}

function errorOf(status: number, body: unknown, requestId: string | null, what: string): ParleyError {
  const error = (body as { error?: unknown } | undefined)?.error;
  if (error && typeof error === "object") {
    const { code, message, requestId: bodyRequestId, details } = error as Record<string, unknown>;
    if (typeof code === "string" && typeof message === "string") {
      return new ParleyError({
        status,
        code,
        message,
        requestId: typeof bodyRequestId === "string" ? bodyRequestId : requestId,
        details: Array.isArray(details) ? (details as ErrorDetail[]) : undefined,
      });
    }
  }
  return new ParleyError({
    status,
    code: STATUS_CODES[status] ?? (status >= 500 ? "INTERNAL" : "BAD_REQUEST"),
    message: `${what} answered ${status}`,
    requestId,
  });
}
