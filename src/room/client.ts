import type { Bindings } from "../env";
import type { Room } from "./room";
import { base32, randomText } from "../lib/ids";
import { sha256 } from "../lib/crypto";

const ROOM_BODY = 26;

/** The RPC methods of a room, typed as the object declares them (the data they carry is plain JSON). */
export type RoomRpc = Pick<
  Room,
  | "init"
  | "getRoom"
  | "updateRoom"
  | "addParticipant"
  | "updateParticipant"
  | "removeParticipant"
  | "removeDeletedAccount"
  | "keyRevoked"
  | "createConversation"
  | "getConversation"
  | "updateConversation"
  | "deleteConversation"
  | "checkSession"
  | "checkAnswer"
  | "postMessage"
  | "listMessages"
  | "pendingEvents"
  | "replayMessages"
  | "openStream"
  | "appendStream"
  | "assistantReply"
  | "closeStream"
  | "streamSnapshots"
  | "hubListening"
  | "settleActivity"
>;

/**
 * The stub of a room's object. Workers' RPC types turn `unknown` JSON fields (meta, data) into `never`; every value
 * these methods exchange is plain JSON, so the stub is typed with the methods' own signatures.
 */
export function roomStub(env: Bindings, roomId: string): RoomRpc {
  return env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as RoomRpc;
}

/**
 * A new conversation id. It carries its room's id so that a message reaches its room without a lookup: the
 * message path never waits on D1. Clients still treat it as opaque.
 */
export function newConversationId(roomId: string): string {
  // 50 random bits of its own: a monotonic ULID's random part barely changes within a millisecond.
  return `conv_${roomId.slice("room_".length)}${randomText(10)}`;
}

/** The room of a conversation id, or null when the id was not made by `newConversationId`. */
export function roomIdOfConversation(conversationId: string): string | null {
  const match = /^conv_([0-9a-z]{26})[0-9a-z]{10}$/.exec(conversationId);
  return match ? `room_${match[1]}` : null;
}

/** The room id and key of the DM of a set of accounts: the same set (order and duplicates ignored) gives the same room. */
export async function dmRoomOf(orgId: string, accountIds: string[]) {
  const members = [...new Set(accountIds)].sort();
  const digest = await sha256(`dm:${orgId}:${members.join(",")}`);
  const body = base32(digest).slice(0, ROOM_BODY);
  return { roomId: `room_${body}`, dmKey: body };
}
