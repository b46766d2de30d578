// Shared helpers for the interop tests: processes, databases, Better Auth HTTP calls,
// the tasks API. All traffic stays on 127.0.0.1; every wait is bounded.
import { spawn } from "node:child_process";
import { randomBytes, createHmac } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { it } from "node:test";
import pg from "pg";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PG_ADMIN_URL =
  process.env.INTEROP_PG_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REQUEST_TIMEOUT_MS = 10_000;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const rand = (n = 8) => randomBytes(n).toString("hex");

// ---------------------------------------------------------------- TASKS_BIN

/** Returns the tasks binary path, or throws a clear error. Never skips. */
/**
 * Checks TASKS_BIN before any suite starts. Returns true when it is usable;
 * otherwise registers one failing test with the reason (never a silent skip).
 */
export function tasksBinReady() {
  try {
    requireTasksBin();
    return true;
  } catch (e) {
    it("TASKS_BIN points at the built tasks-server binary", () => {
      throw e;
    });
    return false;
  }
}

export function requireTasksBin() {
  const bin = process.env.TASKS_BIN;
  if (!bin) {
    throw new Error(
      "TASKS_BIN is not set. Build the Rust service and run e.g. " +
        "TASKS_BIN=target/debug/tasks-server bash tests/interop/better-auth/run.sh",
    );
  }
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`TASKS_BIN=${bin} does not exist or is not executable`);
  }
  return bin;
}

// ---------------------------------------------------------------- processes

const children = new Set();
const handles = new Set();

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal); // detached => own process group
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

// Last resort: if the test process exits with children still alive, SIGKILL them.
process.on("exit", () => {
  for (const c of children) killGroup(c, "SIGKILL");
});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.once(sig, () => {
    for (const c of children) killGroup(c, "SIGKILL");
    process.exit(130);
  });
}

/**
 * Spawns a process in its own process group, keeps the last output lines for
 * diagnostics. Returns a handle with stop() (SIGTERM, then SIGKILL after 5 s).
 */
export function startProcess(name, cmd, args, env) {
  const child = spawn(cmd, args, {
    env,
    stdio: ["pipe", "pipe", "pipe"],
    detached: true,
  });
  children.add(child);
  const lines = [];
  const keep = (stream) => (chunk) => {
    for (const l of chunk.toString("utf8").split("\n")) {
      if (!l) continue;
      lines.push(`[${name} ${stream}] ${l}`);
      if (lines.length > 300) lines.shift();
    }
  };
  child.stdout.on("data", keep("out"));
  child.stderr.on("data", keep("err"));
  const exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
    child.once("error", (err) => {
      children.delete(child);
      lines.push(`[${name}] spawn error: ${err.message}`);
      resolve({ code: null, signal: null, error: err });
    });
  });
  let exitInfo = null;
  exited.then((e) => (exitInfo = e));
  const handle = {
    name,
    child,
    lines,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    log: () => lines.join("\n"),
    async stop() {
      if (!exitInfo) {
        killGroup(child, "SIGTERM");
        const t = sleep(5000).then(() => "timeout");
        if ((await Promise.race([exited, t])) === "timeout") {
          killGroup(child, "SIGKILL");
          await Promise.race([exited, sleep(2000)]);
        }
      }
      saveLog(name, lines);
      return exitInfo;
    },
  };
  handles.add(handle);
  return handle;
}

export async function stopAll() {
  await Promise.all([...handles].map((h) => h.stop()));
  handles.clear();
}

// The last output lines of every process are written to INTEROP_LOG_DIR (default
// $TMPDIR/interop-logs) when it is stopped, for diagnosing failures.
export const LOG_DIR = process.env.INTEROP_LOG_DIR ?? path.join(os.tmpdir(), "interop-logs");
function saveLog(name, lines) {
  try {
    fs.mkdirSync(LOG_DIR, { recursive: true });
    fs.writeFileSync(path.join(LOG_DIR, `${process.pid}-${name.replace(/[^A-Za-z0-9_.-]/g, "_")}.log`), lines.join("\n") + "\n");
  } catch {
    /* diagnostics only */
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- databases

const createdDbs = new Set();

export async function createDatabase(prefix = "interop") {
  const name = `${prefix}_${rand(6)}`;
  const c = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE "${name}"`);
  } finally {
    await c.end();
  }
  createdDbs.add(name);
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  return { name, url: u.toString() };
}

export async function dropAllDatabases() {
  if (createdDbs.size === 0) return;
  const c = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    for (const name of createdDbs) {
      await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch((e) => {
        process.stderr.write(`could not drop ${name}: ${e.message}\n`);
      });
      createdDbs.delete(name);
    }
  } finally {
    await c.end();
  }
}

/** Runs one query against a database URL (used to inspect/alter Better Auth's session table). */
export async function dbQuery(url, sql, params = []) {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    return await c.query(sql, params);
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------- HTTP

export async function http(url, opts = {}) {
  return fetch(url, { redirect: "manual", ...opts, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
}

async function waitFor(what, fn, { timeoutMs, intervalMs = 200, proc }) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  while (Date.now() < deadline) {
    if (proc?.exitInfo) {
      throw new Error(
        `${proc.name} exited (${JSON.stringify(proc.exitInfo)}) while waiting for ${what}\n${proc.log()}`,
      );
    }
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}` +
      (lastErr ? ` (last error: ${lastErr.message})` : "") +
      (proc ? `\n${proc.log()}` : ""),
  );
}

// ---------------------------------------------------------------- Better Auth server

let authCount = 0;
export const AUTH_SECRET = process.env.INTEROP_BETTER_AUTH_SECRET ?? randomBytes(32).toString("base64");

/**
 * Starts auth-server.mjs on a fresh database. extraEnv e.g. { JWKS_ROTATION_INTERVAL: "3" }.
 * Returns { proc, port, baseURL, dbUrl, secret }.
 */
export async function startAuthServer({ extraEnv = {}, secret = AUTH_SECRET, trustedOrigins = [] } = {}) {
  const db = await createDatabase("interop_auth");
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? "/tmp",
    NODE_ENV: "test",
    AUTH_DATABASE_URL: db.url,
    BETTER_AUTH_SECRET: secret,
    AUTH_PORT: "0",
    AUTH_TEST_ENDPOINTS: "1",
    AUTH_EXIT_ON_STDIN_EOF: "1",
    AUTH_TRUSTED_ORIGINS: trustedOrigins.join(","),
    ...extraEnv,
  };
  const proc = startProcess(`auth-${++authCount}`, process.execPath, [path.join(HERE, "auth-server.mjs")], env);
  const ready = await waitFor(
    "auth server ready line",
    async () => {
      const prefix = `[${proc.name} out] `;
      for (const l of proc.lines) {
        if (!l.startsWith(prefix)) continue;
        const m = l.slice(prefix.length).match(/^(\{.*"ready":true.*\})$/);
        if (m) return JSON.parse(m[1]);
      }
      return null;
    },
    { timeoutMs: 30_000, intervalMs: 100, proc },
  );
  return { proc, port: ready.port, baseURL: ready.baseURL, dbUrl: db.url, dbName: db.name, secret };
}

/** Signs a payload with Better Auth's own current JWKS key (test endpoint). */
export async function signWithAuthKey(auth, payload) {
  const r = await http(`${auth.baseURL}/test/sign-jwt`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ payload }),
  });
  const j = await r.json();
  if (r.status !== 200) throw new Error(`sign-jwt failed: ${r.status} ${JSON.stringify(j)}`);
  return j.token;
}

function sessionCookieFrom(res) {
  const setCookies = res.headers.getSetCookie?.() ?? [];
  for (const c of setCookies) {
    const m = c.match(/^(better-auth\.session_token)=([^;]*)/);
    if (m) return `${m[1]}=${m[2]}`;
  }
  return null;
}

function sessionResult(res, body) {
  return {
    user: body.user,
    rawToken: body.token, // session.token as stored in Better Auth's `session` table
    signedToken: res.headers.get("set-auth-token"), // bearer plugin: "<token>.<base64 HMAC>"
    cookie: sessionCookieFrom(res), // "better-auth.session_token=<percent-encoded signed token>"
  };
}

/** POST /api/auth/sign-up/email. Sends Origin: Better Auth refuses Node fetch without one. */
export async function signUp(auth, { email, password = "correct-horse-battery", name = "Interop" }) {
  const res = await http(`${auth.baseURL}/api/auth/sign-up/email`, {
    method: "POST",
    headers: { "content-type": "application/json", origin: auth.baseURL },
    body: JSON.stringify({ email, password, name }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`sign-up ${email}: ${res.status} ${JSON.stringify(body)}`);
  return sessionResult(res, body);
}

export async function signIn(auth, { email, password = "correct-horse-battery" }) {
  const res = await http(`${auth.baseURL}/api/auth/sign-in/email`, {
    method: "POST",
    headers: { "content-type": "application/json", origin: auth.baseURL },
    body: JSON.stringify({ email, password }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`sign-in ${email}: ${res.status} ${JSON.stringify(body)}`);
  return sessionResult(res, body);
}

export async function signOut(auth, session) {
  const res = await http(`${auth.baseURL}/api/auth/sign-out`, {
    method: "POST",
    headers: { origin: auth.baseURL, authorization: `Bearer ${session.signedToken}` },
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`sign-out: ${res.status} ${text}`);
}

/** GET /api/auth/token with the session cookie (default) or the bearer token. */
export async function getJwt(auth, session, via = "cookie") {
  const headers =
    via === "cookie"
      ? { cookie: session.cookie }
      : { authorization: `Bearer ${via === "bearer-raw" ? session.rawToken : session.signedToken}` };
  const res = await http(`${auth.baseURL}/api/auth/token`, { headers });
  const body = await res.json();
  if (res.status !== 200 || typeof body.token !== "string") {
    throw new Error(`GET /api/auth/token (${via}): ${res.status} ${JSON.stringify(body)}`);
  }
  return body.token;
}

export function decodeJwt(token) {
  const [h, p] = token.split(".");
  const dec = (s) => JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
  return { header: dec(h), claims: dec(p) };
}

/** Same signature Better Auth (better-call) puts on the session cookie: base64(HMAC-SHA256(secret, token)). */
export function signSessionToken(token, secret) {
  return `${token}.${createHmac("sha256", secret).update(token).digest("base64")}`;
}

// ---------------------------------------------------------------- tasks service

/**
 * Starts `$TASKS_BIN serve` on a fresh tasks database and waits for GET /ready == 200.
 * env: extra variables (BETTER_AUTH_URL, CORS_ORIGINS, ...).
 */
export async function startTasks(env = {}) {
  const bin = requireTasksBin();
  const db = await createDatabase("interop_tasks");
  const port = await freePort();
  const fullEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? "/tmp",
    RUST_LOG: process.env.RUST_LOG ?? "info",
    RUST_BACKTRACE: "1",
    LOG_FORMAT: "json",
    HOST: "127.0.0.1",
    PORT: String(port),
    DATABASE_URL: db.url,
    ...env,
  };
  const proc = startProcess(`tasks:${port}`, bin, ["serve"], fullEnv);
  const baseURL = `http://127.0.0.1:${port}`;
  await waitFor(
    `${baseURL}/ready`,
    async () => (await fetch(`${baseURL}/ready`, { signal: AbortSignal.timeout(2000) })).status === 200,
    { timeoutMs: Number(process.env.INTEROP_READY_TIMEOUT_MS ?? 60_000), intervalMs: 250, proc },
  );
  return { proc, port, baseURL, dbUrl: db.url, env: fullEnv };
}

/** Calls the tasks API. Returns { status, body, headers }. token may be null (no header). */
export async function api(svc, token, method, p, body) {
  const headers = {};
  if (token !== null && token !== undefined) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await http(`${svc.baseURL}${p}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    /* keep text */
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Polls until fn() returns truthy or timeoutMs passes; returns { value, elapsedMs } or throws. */
export async function eventually(what, fn, timeoutMs, intervalMs = 250) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < timeoutMs) {
    last = await fn();
    if (last?.ok) return { value: last, elapsedMs: Date.now() - t0 };
    await sleep(intervalMs);
  }
  throw new Error(`${what}: not reached within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}
