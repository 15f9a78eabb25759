import { SELF } from "cloudflare:test";
import { expect } from "vitest";

/** A client socket to the worker under test, with a queue of received frames. */
export interface TestSocket {
  ws: WebSocket;
  frames: any[];
  send(frame: unknown): void;
  /** The next frame matching `predicate` (default: any), waiting for it. */
  next(predicate?: (frame: any) => boolean, timeoutMs?: number): Promise<any>;
  /** Resolves when the server closes the socket, with the close code. */
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

/** Opens a realtime socket (`/v1/realtime` or `/v1/rooms/{roomId}/realtime`) with a token in the query. */
export async function connect(path: string, token: string): Promise<TestSocket> {
  const response = await SELF.fetch(`https://parley.test${path}?token=${encodeURIComponent(token)}`, {
    headers: { upgrade: "websocket" },
  });
  expect(response.status, await (response.status === 101 ? "" : response.clone().text())).toBe(101);
  const ws = response.webSocket!;
  ws.accept();
  const frames: any[] = [];
  const waiters: { predicate: (frame: any) => boolean; resolve: (frame: any) => void }[] = [];
  ws.addEventListener("message", (event) => {
    const frame = JSON.parse(event.data as string);
    const index = waiters.findIndex((w) => w.predicate(frame));
    if (index >= 0) waiters.splice(index, 1)[0].resolve(frame);
    else frames.push(frame);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.addEventListener("close", (event) => resolve({ code: event.code, reason: event.reason })),
  );
  return {
    ws,
    frames,
    closed,
    send: (frame) => ws.send(typeof frame === "string" ? frame : JSON.stringify(frame)),
    next(predicate = () => true, timeoutMs = 5_000) {
      const index = frames.findIndex(predicate);
      if (index >= 0) return Promise.resolve(frames.splice(index, 1)[0]);
      return new Promise((resolve, reject) => {
        const waiter = { predicate, resolve };
        waiters.push(waiter);
        setTimeout(() => {
          const at = waiters.indexOf(waiter);
          if (at >= 0) {
            waiters.splice(at, 1);
            reject(new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(frames)}`));
          }
        }, timeoutMs);
      });
    },
    close: () => ws.close(1000, "done"),
  };
}
