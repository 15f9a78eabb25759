import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app";
import { call, createFixture } from "../helpers/api";

// Browsers call the API from their application's origin: preflights are answered, and every answer (errors too)
// carries the CORS headers, so a page can read it.

const ORIGIN = "https://app.example";

describe("CORS", () => {
  it("answers a preflight with the methods and headers a client sends", async () => {
    const response = await call("OPTIONS", "/v1/rooms", {
      headers: {
        origin: ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe("*");
    expect(response.headers.get("access-control-allow-methods")).toContain("POST");
    expect(response.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    expect(response.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("content-type");
    expect(response.headers.get("access-control-max-age")).toBe("86400");
  });

  it("puts the CORS headers on answers and errors alike, with the headers a page may read", async () => {
    const f = await createFixture();
    const listed = await call("GET", "/v1/rooms", { token: f.apiKey, headers: { origin: ORIGIN } });
    expect(listed.status).toBe(200);
    expect(listed.headers.get("access-control-allow-origin")).toBe("*");
    expect(listed.headers.get("access-control-expose-headers")?.toLowerCase()).toContain("x-request-id");

    for (const [path, status] of [
      ["/v1/rooms", 401],
      ["/v1/no-such-route", 404],
    ] as const) {
      const failed = await call("GET", path, { headers: { origin: ORIGIN } });
      expect(failed.status).toBe(status);
      expect(failed.headers.get("access-control-allow-origin")).toBe("*");
      expect(typeof failed.body.error.requestId).toBe("string");
    }
  });

  it("admits only the listed origins when CORS_ORIGINS names them", async () => {
    const app = createApp();
    const ask = async (origin: string) => {
      const ctx = createExecutionContext();
      const response = await app.fetch(
        new Request("https://parley.test/healthz", { headers: { origin } }),
        { ...env, CORS_ORIGINS: `${ORIGIN}, https://admin.example` },
        ctx,
      );
      await waitOnExecutionContext(ctx);
      return response;
    };
    const listed = await ask(ORIGIN);
    expect(listed.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(listed.headers.get("vary")).toContain("Origin");
    expect((await ask("https://evil.example")).headers.get("access-control-allow-origin")).toBeNull();
  });
});
