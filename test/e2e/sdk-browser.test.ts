import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { baseUrl, createFixture } from "./helpers";

// The SDK in a real browser (Debian's Chromium, driven by playwright-core) against `npm run dev`: the page is served
// from another origin than the API, so every REST call crosses CORS, and the realtime client uses the browser's
// own WebSocket. Runs where /usr/bin/chromium exists (`.ci/run` installs it: `apt-get install -y chromium`).

const CHROMIUM = "/usr/bin/chromium";
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

let browser: Browser;
let page: Server;
let pageOrigin = "";

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) return;
  const bundle = await build({
    entryPoints: [join(root, "src", "sdk", "index.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
  });
  const sdk = bundle.outputFiles[0].text;
  page = createServer((request, response) => {
    if (request.url === "/sdk.js") {
      response.writeHead(200, { "content-type": "text/javascript" }).end(sdk);
    } else {
      response
        .writeHead(200, { "content-type": "text/html" })
        .end(
          '<!doctype html><title>Parley SDK</title><script type="module">' +
            'import * as sdk from "/sdk.js"; globalThis.Parley = sdk;</script>',
        );
    }
  });
  await new Promise<void>((resolve) => page.listen(0, "127.0.0.1", resolve));
  pageOrigin = `http://127.0.0.1:${(page.address() as AddressInfo).port}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await new Promise((resolve) => (page ? page.close(resolve) : resolve(undefined)));
});

/** A tab on the page, once it has loaded the SDK (`globalThis.Parley`). */
async function open() {
  const tab = await browser.newPage();
  await tab.goto(pageOrigin);
  await tab.waitForFunction(() => (globalThis as any).Parley !== undefined);
  return tab;
}

describe.skipIf(!existsSync(CHROMIUM))("the SDK in a browser", () => {
  it("posts over REST across origins and over its socket, and receives every message, in order", async () => {
    const f = await createFixture();
    await f.client.messages.post(f.conversation.id, { text: "from Node", authorId: f.alice.id });
    const { token } = await f.client.sessions.create(f.conversation.id, { accountId: f.bob.id });

    const tab = await open();
    const result = await tab.evaluate(
      async ({ api, token, orgId, roomId, conversationId }) => {
        const { ParleyClient, RealtimeClient, realtimeUrl, topicOf } = (globalThis as any).Parley;
        const rest = new ParleyClient({ baseUrl: api, token });
        const live = new RealtimeClient({ url: realtimeUrl(api, roomId), token });
        const received: string[] = [];
        live.on("message", (message: { text: string }) => received.push(message.text));
        await live.subscribe(topicOf(orgId, "conversation", "message_posted", conversationId), { sinceSeq: 0 });
        const posted = await rest.messages.post(conversationId, { text: "from the browser, over REST" });
        const sent = await live.post(conversationId, { text: "from the browser, over its socket" });
        const deadline = Date.now() + 10_000;
        while (received.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        const page = await rest.messages.list(conversationId, { limit: 10 });
        live.close();
        return {
          received,
          posted: { seq: posted.seq, authorId: posted.authorId },
          sent: { seq: sent.seq, text: sent.text },
          history: page.items.map((m: { seq: number; text: string }) => [m.seq, m.text]),
        };
      },
      {
        api: baseUrl,
        token,
        orgId: f.org.id,
        roomId: f.room.id,
        conversationId: f.conversation.id,
      },
    );
    await tab.close();

    expect(result.received).toEqual(["from Node", "from the browser, over REST", "from the browser, over its socket"]);
    expect(result.posted).toEqual({ seq: 2, authorId: f.bob.id });
    expect(result.sent).toEqual({ seq: 3, text: "from the browser, over its socket" });
    expect(result.history).toEqual([
      [1, "from Node"],
      [2, "from the browser, over REST"],
      [3, "from the browser, over its socket"],
    ]);
  });

  it("GET /docs renders the REST API's operations", async () => {
    const tab = await browser.newPage();
    const errors: string[] = [];
    tab.on("pageerror", (error) => errors.push(String(error)));
    await tab.goto(`${baseUrl}/docs`);
    await tab.waitForSelector("details.op", { timeout: 10_000 });
    const operations = await tab.$$eval("details.op summary", (nodes) => nodes.map((node) => node.textContent));
    await tab.close();
    expect(errors).toEqual([]);
    expect(operations.length).toBeGreaterThan(30);
    expect(operations).toContainEqual(expect.stringMatching(/^post\/v1\/conversations\/\{id\}\/messages/));
  });

  it("reads the API's error shape across origins", async () => {
    const tab = await open();
    const error = await tab.evaluate(async (api) => {
      const { ParleyClient, ParleyError } = (globalThis as any).Parley;
      try {
        await new ParleyClient({ baseUrl: api, token: "not-a-token" }).rooms.list();
        return null;
      } catch (error) {
        const e = error as { status: number; code: string; requestId: string };
        return { parley: error instanceof ParleyError, status: e.status, code: e.code, requestId: e.requestId };
      }
    }, baseUrl);
    await tab.close();
    expect(error).toMatchObject({ parley: true, status: 401, code: "UNAUTHORIZED" });
    expect(error!.requestId).toMatch(/^\S+$/);
  });
});
