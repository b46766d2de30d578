// Drives the Next.js app in Debian's Chromium against the tasks service, once per auth mode.
// Started by run.sh, which builds the app and provides the variables below.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { freePort, start, waitForOk } from "./harness.mjs";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this file through run.sh`);
  return value;
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TASKS_BIN = required("TASKS_BIN");
const SERVICE_PORT = required("TASKS_SERVICE_PORT"); // baked into the build's rewrite
const AUTH_DB = required("AUTH_DATABASE_URL");
const TASKS_DB = required("TASKS_DATABASE_URL");
const SECRET = required("BETTER_AUTH_SECRET");
const SERVICE = `http://127.0.0.1:${SERVICE_PORT}`;
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const READY_MS = 30_000;

const jwtAlg = (authorization) => {
  const [header] = authorization.replace(/^Bearer /, "").split(".");
  return JSON.parse(Buffer.from(header, "base64url").toString()).alg;
};

// Per mode: the service's variables, where the browser sends task calls, and the credential in them.
const MODES = {
  jwt: {
    serviceEnv: (app) => ({ BETTER_AUTH_URL: app }),
    apiOrigin: () => SERVICE,
    checkHeaders: (h) => assert.equal(jwtAlg(h.authorization), "EdDSA"),
  },
  hs256: {
    serviceEnv: () => ({ BETTER_AUTH_SECRET: SECRET }),
    apiOrigin: () => SERVICE,
    checkHeaders: (h) => assert.equal(jwtAlg(h.authorization), "HS256"),
  },
  session: {
    serviceEnv: () => ({ BETTER_AUTH_DATABASE_URL: AUTH_DB, BETTER_AUTH_SECRET: SECRET }),
    apiOrigin: () => SERVICE,
    checkHeaders: (h) => assert.match(h.authorization, /^Bearer [A-Za-z0-9]{32}$/),
  },
  cookie: {
    serviceEnv: () => ({ BETTER_AUTH_DATABASE_URL: AUTH_DB, BETTER_AUTH_SECRET: SECRET, AUTH_COOKIE: "true" }),
    apiOrigin: (app) => app,
    checkHeaders: (h) => {
      assert.equal(h.authorization, undefined);
      assert.match(h.cookie ?? "", /(^|; )better-auth\.session_token=/);
    },
  },
};

const selected = (process.env.FRONTEND_MODES ?? "jwt,hs256,session,cookie").split(",").map((m) => m.trim());
for (const mode of selected) {
  if (!(mode in MODES)) throw new Error(`FRONTEND_MODES: unknown mode "${mode}" (known: ${Object.keys(MODES).join(", ")})`);
}

let browser;
before(async () => {
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS, timeout: 30_000 });
});
after(() => browser?.close());

function startApp(mode, port, app) {
  return start(`next:${mode}`, process.execPath, ["node_modules/next/dist/bin/next", "start", "--hostname", "127.0.0.1", "--port", String(port)], {
    cwd: HERE,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME ?? "/tmp",
      NODE_ENV: "production",
      NEXT_TELEMETRY_DISABLED: "1",
      AUTH_MODE: mode,
      TASKS_API_URL: SERVICE,
      TASKS_SERVICE_URL: SERVICE,
      BETTER_AUTH_URL: app,
      BETTER_AUTH_SECRET: SECRET,
      DATABASE_URL: AUTH_DB,
    },
  });
}

function startService(mode, app) {
  return start(`service:${mode}`, TASKS_BIN, ["serve"], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME ?? "/tmp",
      HOST: "127.0.0.1",
      PORT: SERVICE_PORT,
      DATABASE_URL: TASKS_DB,
      CORS_ORIGINS: app,
      ...MODES[mode].serviceEnv(app),
    },
  });
}

/** A browser context that records the task calls it makes and any request leaving 127.0.0.1. */
async function newUser(app) {
  const context = await browser.newContext();
  context.setDefaultTimeout(15_000);
  const taskCalls = [];
  const offHost = [];
  context.on("request", (request) => {
    const url = new URL(request.url());
    if (url.hostname !== "127.0.0.1") offHost.push(request.url());
    else if (url.pathname.startsWith("/api/tasks") && request.method() !== "OPTIONS") taskCalls.push(request);
  });
  const page = await context.newPage();
  return { context, page, taskCalls, offHost, app };
}

async function signUp({ page, app }, name) {
  await page.goto(`${app}/sign-up`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Email").fill(`${name.toLowerCase()}-${randomBytes(4).toString("hex")}@example.com`);
  await page.getByLabel("Password").fill("correct-horse-battery");
  await page.getByRole("button", { name: "Sign up" }).click();
  await listLoaded(page);
}

/** Waits for the task page's list; fails at once with the page's error message if it shows one. */
async function listLoaded(page) {
  const error = page.getByRole("main").getByRole("alert");
  await page.getByRole("button", { name: "Add task" }).or(error).first().waitFor();
  if (await error.isVisible()) throw new Error(`${page.url()} shows: ${await error.innerText()}`);
}

async function addTask(page, title, description) {
  await page.getByLabel("Title", { exact: true }).fill(title);
  await page.getByLabel("Description", { exact: true }).fill(description);
  await page.getByRole("button", { name: "Add task" }).click();
  await item(page, title).waitFor();
}

const item = (page, title) =>
  page.getByRole("listitem").filter({ has: page.getByRole("link", { name: title, exact: true }) });

/** Every task call went where the mode says, with the credential the mode says. */
async function checkTaskCalls(user, mode) {
  assert.ok(user.taskCalls.length > 0, "the app called the tasks API");
  for (const request of user.taskCalls) {
    assert.equal(new URL(request.url()).origin, MODES[mode].apiOrigin(user.app), request.url());
    MODES[mode].checkHeaders(await request.allHeaders());
  }
  assert.deepEqual(user.offHost, [], "no request left 127.0.0.1");
}

/** Adds what the page and the servers said to a failure. */
async function explained(user, servers, body) {
  try {
    await body();
  } catch (error) {
    const alerts = await user.page.getByRole("main").getByRole("alert").allInnerTexts().catch(() => []);
    const logs = servers.map((s) => s.log()).join("\n");
    throw new Error(`${error.message}\npage: ${user.page.url()}\nalerts: ${JSON.stringify(alerts)}\n${logs}`, { cause: error });
  }
}

for (const mode of selected) {
  describe(`${mode} mode`, { timeout: 120_000 }, () => {
    let app, next, service, aliceTaskPath;

    before(async () => {
      const port = await freePort();
      app = `http://127.0.0.1:${port}`;
      next = startApp(mode, port, app);
      await waitForOk(`${app}/api/config`, next, READY_MS);
      service = startService(mode, app);
      await waitForOk(`${SERVICE}/ready`, service, READY_MS);
    });

    after(async () => {
      await Promise.all([next?.stop(), service?.stop()]);
    });

    it("user A creates, edits, toggles and deletes tasks; a reload shows the result", async () => {
      const alice = await newUser(app);
      try {
        await explained(alice, [next, service], async () => {
          const { page } = alice;
          await signUp(alice, "Alice");
          await addTask(page, "Buy milk", "1 l");
          await addTask(page, "Walk the dog", "");

          await item(page, "Buy milk").getByRole("button", { name: "Edit" }).click();
          await page.getByLabel("Edit title").fill("Buy oat milk");
          await page.getByLabel("Edit description").fill("2 l, unsweetened");
          await page.getByRole("button", { name: "Save" }).click();
          await item(page, "Buy oat milk").waitFor();

          // Controlled checkbox: it shows checked once the service has answered the toggle.
          await item(page, "Buy oat milk").getByRole("checkbox").click();
          await item(page, "Buy oat milk").locator("input[type=checkbox]:checked").waitFor();

          await item(page, "Walk the dog").getByRole("button", { name: "Delete" }).click();
          await item(page, "Walk the dog").waitFor({ state: "detached" });

          await page.reload();
          await listLoaded(page);
          const kept = item(page, "Buy oat milk");
          assert.equal(await page.getByRole("listitem").count(), 1);
          assert.equal(await kept.getByRole("checkbox").isChecked(), true);
          assert.equal(await kept.locator("small").innerText(), "2 l, unsweetened");

          aliceTaskPath = await kept.getByRole("link").getAttribute("href");
          assert.match(aliceTaskPath, /^\/tasks\/\d+$/);
          await page.goto(`${app}${aliceTaskPath}`);
          await page.getByRole("heading", { name: "Buy oat milk" }).waitFor();
          await page.getByText("Completed", { exact: true }).waitFor();
          await checkTaskCalls(alice, mode);
        });
      } finally {
        await alice.context.close();
      }
    });

    // Live updates (GET /api/tasks/events): a browser's EventSource cannot send an Authorization
    // header, so only the cookie mode (same origin, through the rewrite) can use it as is.
    it("a second tab of the same user receives a change live", { skip: mode !== "cookie" }, async () => {
      const carol = await newUser(app);
      try {
        await explained(carol, [next, service], async () => {
          const { page, context } = carol;
          await signUp(carol, "Carol");
          const second = await context.newPage();
          await second.goto(page.url());
          await listLoaded(second);
          // The second tab subscribes with its cookies and waits for the stream's `ready` event.
          await second.evaluate(
            () =>
              new Promise((resolve, reject) => {
                window.liveTitles = [];
                const events = new EventSource("/api/tasks/events");
                events.addEventListener("ready", () => resolve());
                events.onmessage = (e) => {
                  for (const task of JSON.parse(e.data).tasks) window.liveTitles.push(task.title);
                };
                events.onerror = () => events.readyState === EventSource.CLOSED && reject(new Error("EventSource closed"));
                // A proxy that buffers the stream would hold `ready` back: fail instead of waiting.
                setTimeout(() => reject(new Error("no `ready` event within 15 s (is the stream buffered?)")), 15_000);
              }),
          );
          await addTask(page, "Seen in the other tab", "");
          await second.waitForFunction(() => window.liveTitles.includes("Seen in the other tab"), null, { timeout: 15_000 });
          await checkTaskCalls(carol, mode);
        });
      } finally {
        await carol.context.close();
      }
    });

    it("user B sees an empty list and gets 404 for A's task", async () => {
      assert.ok(aliceTaskPath, "user A's test produced a task");
      const bob = await newUser(app);
      try {
        await explained(bob, [next, service], async () => {
          const { page } = bob;
          await signUp(bob, "Bob");
          await page.getByText("No tasks yet.").waitFor();

          const answer = page.waitForResponse(
            (r) => r.url().endsWith(`/api${aliceTaskPath}`) && r.request().method() === "GET",
          );
          await page.goto(`${app}${aliceTaskPath}`);
          assert.equal((await answer).status(), 404);
          assert.match(await page.getByRole("main").getByRole("alert").innerText(), /^404: /);
          assert.equal(await page.getByRole("heading", { name: "Buy oat milk" }).count(), 0);
          await checkTaskCalls(bob, mode);
        });
      } finally {
        await bob.context.close();
      }
    });
  });
}
