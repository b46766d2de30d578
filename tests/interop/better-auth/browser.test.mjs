// Headless Chromium (Debian's /usr/bin/chromium driven by playwright-core; no browser download):
// (a) Swagger UI at /docs/: Authorize with a Better Auth JWT, Try it out / Execute on
//     GET /api/tasks (200) and POST /api/tasks (201);
// (b) a page served from an origin listed in CORS_ORIGINS calls the API with fetch + Authorization;
// (c) the same page from an origin NOT listed is blocked by the browser (fetch throws TypeError).
// Run: TASKS_BIN=/path/to/tasks-server node --test browser.test.mjs
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import {
  tasksBinReady,
  startAuthServer,
  startTasks,
  stopAll,
  dropAllDatabases,
  signUp,
  getJwt,
  api,
  rand,
  http as httpFetch,
} from "./lib.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--no-first-run",
];
const UI_TIMEOUT = 20_000;

const PROBE_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>CORS probe</title></head>
<body><h1>CORS probe</h1><pre id="result">idle</pre>
<script>
  // Called by the test: fetch the tasks API exactly like a browser frontend would.
  window.callApi = async (url, token, method, body) => {
    const out = document.getElementById("result");
    try {
      const headers = { Authorization: "Bearer " + token };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const res = { ok: true, status: r.status, body: await r.text() };
      out.textContent = JSON.stringify(res);
      return res;
    } catch (e) {
      const res = { ok: false, name: e.name, message: e.message };
      out.textContent = JSON.stringify(res);
      return res;
    }
  };
</script></body></html>`;

function startStaticServer() {
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(PROBE_PAGE);
    });
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const origin = `http://127.0.0.1:${srv.address().port}`;
      resolve({ srv, origin, close: () => new Promise((r) => { srv.closeAllConnections?.(); srv.close(() => r()); }) });
    });
  });
}

// A missing TASKS_BIN is one failing test with the reason, never a silent skip.
if (tasksBinReady()) {
  describe("browser: Swagger UI and CORS with a Better Auth JWT", { timeout: 240_000 }, () => {
    let auth, svc, allowed, disallowed, context, userDataDir, user, jwt;
    const artifacts = process.env.INTEROP_ARTIFACTS_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), "interop-artifacts-"));
    const offHostRequests = [];
    const consoleLines = [];

    before(async () => {
      if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install -y chromium chromium-driver`);
      fs.mkdirSync(artifacts, { recursive: true });
      allowed = await startStaticServer();
      disallowed = await startStaticServer();
      auth = await startAuthServer({ trustedOrigins: [allowed.origin] });
      svc = await startTasks({
        BETTER_AUTH_URL: auth.baseURL,
        CORS_ORIGINS: `${allowed.origin},http://127.0.0.1:9`,
      });
      user = await signUp(auth, { email: `browser-${rand(4)}@example.com`, name: "Browser" });
      jwt = await getJwt(auth, user);

      userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "interop-chromium-"));
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        args: CHROMIUM_ARGS,
        headless: true,
        timeout: 60_000,
        viewport: { width: 1280, height: 1600 },
      });
      context.setDefaultTimeout(UI_TIMEOUT);
      // Passive watch (no request interception: interception changes CORS preflight handling).
      context.on("request", (req) => {
        const u = new URL(req.url());
        if (!["data:", "blob:", "about:"].includes(u.protocol) && u.hostname !== "127.0.0.1") {
          offHostRequests.push(req.url());
        }
      });
      context.on("console", (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
    }, { timeout: 120_000 });

    after(async () => {
      await context?.close().catch(() => {});
      if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
      await allowed?.close();
      await disallowed?.close();
      await stopAll();
      await dropAllDatabases();
    }, { timeout: 60_000 });

    it("(a) Swagger UI: Authorize with a Better Auth JWT, then list (200) and create (201)", async (t) => {
      const page = await context.newPage();
      try {
        const resp = await page.goto(`${svc.baseURL}/docs/`, { waitUntil: "load", timeout: 30_000 });
        assert.equal(resp.status(), 200, "/docs/ served");
        assert.match(resp.headers()["content-security-policy"] ?? "", /frame-ancestors 'none'/, "/docs/ carries its CSP");
        assert.equal(resp.headers()["x-frame-options"], "DENY");
        await page.locator("button.btn.authorize").first().click();

        const modal = page.locator(".modal-ux");
        await modal.waitFor({ state: "visible" });
        const scheme = modal.locator(".auth-container", { hasText: "bearer_auth" });
        await scheme.locator("input").first().fill(jwt);
        await scheme.locator("button.authorize").click();
        await modal.locator("button.btn-done").click();
        await modal.waitFor({ state: "hidden" });

        // If the UI starts with tags collapsed (docExpansion "none"), open them.
        await page.locator(".opblock-tag-section").first().waitFor();
        for (const tag of await page.locator(".opblock-tag-section:not(.is-open) .opblock-tag").all()) {
          await tag.click();
        }
        const op = (method) =>
          page
            .locator(`.opblock.opblock-${method}`, {
              has: page.locator('.opblock-summary-path[data-path="/api/tasks"]'),
            })
            .first();
        // Expand the operation and get into "Try it out" mode. The service's Swagger UI may be
        // configured with tryItOutEnabled (Execute shown at once): then don't toggle it off.
        const openForTry = async (block) => {
          if (!/\bis-open\b/.test((await block.getAttribute("class")) ?? "")) {
            await block.locator(".opblock-summary").first().click();
          }
          await block.locator("button.execute, button.try-out__btn:not(.cancel)").first().waitFor();
          if (!(await block.locator("button.execute").isVisible())) {
            await block.locator("button.try-out__btn").click();
          }
          await block.locator("button.execute").waitFor();
        };

        // GET /api/tasks
        const list = op("get");
        await openForTry(list);
        await list.locator("button.execute").click();
        const listStatus = list.locator(".live-responses-table tbody td.response-col_status").first();
        await listStatus.waitFor();
        assert.equal((await listStatus.innerText()).trim(), "200");
        const curl = await list.locator(".curl-command, .curl").first().innerText();
        assert.match(curl, /Authorization: Bearer /i, "Swagger sent the Authorization header");

        // POST /api/tasks
        const create = op("post");
        await openForTry(create);
        await create.locator("textarea.body-param__text").fill(JSON.stringify({ title: "created from Swagger UI", description: "browser" }));
        await create.locator("button.execute").click();
        const createStatus = create.locator(".live-responses-table tbody td.response-col_status").first();
        await createStatus.waitFor();
        assert.equal((await createStatus.innerText()).trim(), "201");

        await page.screenshot({ path: path.join(artifacts, "swagger.png"), fullPage: true });
        // The page works under its Content-Security-Policy: nothing was blocked.
        const blocked = consoleLines.filter((l) => /Content Security Policy/i.test(l));
        assert.deepEqual(blocked, [], "no CSP violation on /docs/");
        t.diagnostic(`screenshot: ${path.join(artifacts, "swagger.png")}`);

        // The task really exists for this user.
        const mine = await api(svc, jwt, "GET", "/api/tasks");
        assert.equal(mine.status, 200);
        assert.ok(mine.body.some((x) => x.title === "created from Swagger UI" && x.user_id === user.user.id));
      } catch (e) {
        await page.screenshot({ path: path.join(artifacts, "swagger-failure.png"), fullPage: true }).catch(() => {});
        e.message += `\nscreenshot: ${path.join(artifacts, "swagger-failure.png")}\nconsole:\n${consoleLines.join("\n")}`;
        throw e;
      } finally {
        await page.close();
      }
    });

    it("(b) a page from an allowed origin calls the API with fetch + Authorization", async () => {
      const page = await context.newPage();
      try {
        await page.goto(`${allowed.origin}/`, { timeout: 30_000 });
        const list = await page.evaluate(
          ([url, token]) => window.callApi(url, token, "GET"),
          [`${svc.baseURL}/api/tasks`, jwt],
        );
        assert.equal(list.ok, true, `fetch failed: ${JSON.stringify(list)}\n${consoleLines.join("\n")}`);
        assert.equal(list.status, 200);
        assert.ok(Array.isArray(JSON.parse(list.body)));

        const created = await page.evaluate(
          ([url, token]) => window.callApi(url, token, "POST", { title: "created cross-origin" }),
          [`${svc.baseURL}/api/tasks`, jwt],
        );
        assert.equal(created.ok, true, `fetch failed: ${JSON.stringify(created)}`);
        assert.equal(created.status, 201);
        const id = JSON.parse(created.body).id;

        const toggled = await page.evaluate(
          ([url, token]) => window.callApi(url, token, "PATCH"),
          [`${svc.baseURL}/api/tasks/${id}/complete`, jwt],
        );
        assert.equal(toggled.ok, true, `PATCH blocked: ${JSON.stringify(toggled)}`);
        assert.equal(toggled.status, 200);
        const deleted = await page.evaluate(
          ([url, token]) => window.callApi(url, token, "DELETE"),
          [`${svc.baseURL}/api/tasks/${id}`, jwt],
        );
        assert.equal(deleted.ok, true, `DELETE blocked: ${JSON.stringify(deleted)}`);
        assert.equal(deleted.status, 204);
      } finally {
        await page.close();
      }
    });

    it("(c) the same page from a disallowed origin is blocked by the browser (TypeError)", async () => {
      const page = await context.newPage();
      try {
        await page.goto(`${disallowed.origin}/`, { timeout: 30_000 });
        const res = await page.evaluate(
          ([url, token]) => window.callApi(url, token, "GET"),
          [`${svc.baseURL}/api/tasks`, jwt],
        );
        assert.equal(res.ok, false, `disallowed origin was able to read the response: ${JSON.stringify(res)}`);
        assert.equal(res.name, "TypeError");
      } finally {
        await page.close();
      }
      // What the browser saw: the preflight for the disallowed origin carries no allow-origin.
      const pre = await httpFetch(`${svc.baseURL}/api/tasks`, {
        method: "OPTIONS",
        headers: {
          origin: disallowed.origin,
          "access-control-request-method": "GET",
          "access-control-request-headers": "authorization",
        },
      });
      assert.notEqual(pre.headers.get("access-control-allow-origin"), disallowed.origin);
      assert.notEqual(pre.headers.get("access-control-allow-origin"), "*");
    });

    it("the browser made no request outside 127.0.0.1", () => {
      assert.deepEqual(offHostRequests, []);
    });
  });
}
