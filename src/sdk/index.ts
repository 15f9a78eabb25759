/** Typed REST client of the Parley API (contract sections 2-6). */
export { ParleyClient } from "./rest";
/** The error every REST method throws: `status`, `code`, `message`, `requestId`, `details`. */
export { ParleyError } from "./rest";
/** Whether a value is a `ParleyError`, optionally with one code. */
export { isParleyError } from "./rest";
/** Walks a cursor-paged list method, yielding every item. */
export { paginate } from "./rest";
/** Reconnecting realtime client of the org stream and room sockets (contract section 8). */
export { RealtimeClient } from "./realtime";
/** An error frame of the server, or a client-side realtime failure (`TIMEOUT`, `CLOSED`, `BUFFER_FULL`, ...). */
export { RealtimeError } from "./realtime";
/** The realtime URL of a server: the org stream, or a room's socket. */
export { realtimeUrl } from "./realtime";
/** A topic `events.{orgId}.{source}.{resource}.{event}.{resourceId}`, wildcard resource id by default. */
export { topicOf } from "./realtime";
/** The conversation of a topic that `sinceSeq` can recover, or null. */
export { recoverableConversationOf } from "../protocol/topics";

/** Option, input and result types of the REST client. */
export type {
  AddParticipantInput,
  ApiKeySummary,
  CreateAccountInput,
  CreateApiKeyInput,
  CreateConversationInput,
  CreateOrgInput,
  CreateOrgResult,
  CreatedApiKey,
  CreateRoomInput,
  CreateSessionInput,
  CreateTokenInput,
  CreateRuleInput,
  ErrorDetail,
  HistoryIterateOptions,
  HistoryQuery,
  IssuedToken,
  ListAccountsQuery,
  ListConversationsQuery,
  ListFlowRunsQuery,
  ListNotificationsQuery,
  ListRoomsQuery,
  Page,
  ItemOf,
  PagedList,
  QueryOf,
  PageQuery,
  ParleyClientOptions,
  PostMessageInput,
  PushSubscriptionInput,
  PutPreferencesInput,
  RequestOptions,
  UpdateAccountInput,
  UpdateConversationInput,
  UpdateParticipantInput,
  UpdateRoomInput,
  UpdateRuleInput,
  UploadOptions,
  Upserted,
} from "./rest";
/** Option, event and frame types of the realtime client. */
export type {
  CloseInfo,
  GapInfo,
  RealtimeClientOptions,
  RealtimeEventMap,
  RealtimePostInput,
  RealtimeState,
  SubscribeOptions,
  SubscribeResult,
  TokenSource,
  WebSocketConstructor,
  WebSocketLike,
} from "./realtime";
/** The contract's resources, as the server answers them. */
export type { Account, AccountType, AgentSettings, Step } from "../protocol/accounts";
/** An organisation. */
export type { Org } from "../protocol/orgs";
/** A conversation. */
export type { Conversation } from "../protocol/conversations";
/** The event envelope of every state change. */
export type { EventSource, ParleyEvent } from "../protocol/events";
/** Flow runs and streamed replies. */
export type { FlowRun, FlowRunStatus, FlowTrigger, MessageStream } from "../protocol/flows";
export type { Attachment } from "../attachments/schemas";
export type { Notification, Preferences, PushSubscriptionInfo, Rule } from "../protocol/notifications";
/** A message, its attachments and a page of history. */
export type { HistoryPage, Message, MessageAttachment } from "../protocol/messages";
/** A room, its participants and their roles. */
export type { Participant, Role, Room, RoomType } from "../protocol/rooms";
/** The frames of the realtime protocol. */
export type { ClientFrame, ServerFrame } from "../protocol/frames";
/** Limits and close codes of realtime connections. */
export { CLOSE_CODES, REALTIME_LIMITS } from "../protocol/frames";
