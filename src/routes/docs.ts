import { html } from "hono/html";

/**
 * `GET /docs`: a self-contained page that renders the OpenAPI document (no external scripts: it works offline and
 * under a strict CSP).
 */
export function docsPage(specUrl: string) {
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>Parley API</title>
        <style>
          body {
            font:
              15px/1.5 system-ui,
              sans-serif;
            margin: 0 auto;
            max-width: 960px;
            padding: 2rem;
            color: #1d2330;
          }
          h1 {
            margin-bottom: 0;
          }
          .op {
            border: 1px solid #dde2ea;
            border-radius: 8px;
            margin: 0.75rem 0;
          }
          .op summary {
            cursor: pointer;
            padding: 0.6rem 0.9rem;
            display: flex;
            gap: 0.75rem;
            align-items: baseline;
          }
          .method {
            font:
              600 12px ui-monospace,
              monospace;
            text-transform: uppercase;
            min-width: 4.5rem;
          }
          .get {
            color: #0a7c42;
          }
          .post {
            color: #1b5fd1;
          }
          .patch {
            color: #9a6700;
          }
          .delete {
            color: #c5221f;
          }
          .put {
            color: #7a3ec2;
          }
          code,
          pre {
            font-family: ui-monospace, monospace;
            font-size: 13px;
          }
          pre {
            background: #f5f7fa;
            padding: 0.75rem;
            overflow: auto;
            margin: 0 0.9rem 0.9rem;
          }
          h2 {
            margin-top: 2rem;
            text-transform: capitalize;
          }
        </style>
      </head>
      <body>
        <h1>Parley API</h1>
        <p>
          Machine-readable: <a href="${specUrl}"><code>${specUrl}</code></a>
        </p>
        <main id="ops" data-spec="${specUrl}">Loading…</main>
        <script>
          const esc = (s) =>
            String(s ?? "").replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]);
          // The spec's URL comes from an attribute: a value written into a script would be HTML-escaped there.
          fetch(document.getElementById("ops").dataset.spec)
            .then((r) => r.json())
            .then((spec) => {
              const groups = {};
              for (const [path, ops] of Object.entries(spec.paths)) {
                for (const [method, op] of Object.entries(ops))
                  (groups[(op.tags || ["other"])[0]] ??= []).push({ path, method, op });
              }
              document.getElementById("ops").innerHTML = Object.entries(groups)
                .map(
                  ([tag, ops]) =>
                    "<h2>" +
                    esc(tag) +
                    "</h2>" +
                    ops
                      .map(
                        ({ path, method, op }) =>
                          '<details class="op"><summary><span class="method ' +
                          method +
                          '">' +
                          method +
                          "</span><code>" +
                          esc(path) +
                          "</code><span>" +
                          esc(op.summary) +
                          "</span></summary><pre>" +
                          esc(
                            JSON.stringify(
                              { parameters: op.parameters, requestBody: op.requestBody, responses: op.responses },
                              null,
                              2,
                            ),
                          ) +
                          "</pre></details>",
                      )
                      .join(""),
                )
                .join("");
            });
        </script>
      </body>
    </html>`;
}
