#!/usr/bin/env node
// HARNESS SELF-TEST ONLY. A small Node stand-in for the Rust tasks service that follows the
// same contract (env vars, endpoints, error JSON, JWKS / HS256 / session-token auth, CORS,
// Swagger UI at /docs/). It exists so the interop tests can be checked before the Rust
// verifiers exist: `bash dev/selftest.sh`. It is NOT a reference for the Rust code's
// internals and is never used by run.sh.
//
// Usage: mock-tasks-server.mjs serve   (reads PORT, HOST, DATABASE_URL, CORS_ORIGINS,
// BETTER_AUTH_URL, JWT_SECRET, BETTER_AUTH_DATABASE_URL, BETTER_AUTH_SECRET,
// SESSION_CACHE_TTL_SECS, MOCK_JWKS_COOLDOWN_MS)
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { createHmac, timingSafeEqual } from "node:crypto";
import { createRequire } from "node:module";
import pg from "pg";
import { createRemoteJWKSet, jwtVerify } from "jose";

if (process.argv[2] !== "serve") {
  console.error("usage: mock-tasks-server.mjs serve");
  process.exit(2);
}
const env = process.env;
const port = Number(env.PORT ?? 8080);
const host = env.HOST ?? "127.0.0.1";
const corsOrigins = new Set((env.CORS_ORIGINS ?? "").split(",").map((s) => s.trim()).filter(Boolean));
const sessionTtlMs = Number(env.SESSION_CACHE_TTL_SECS ?? 30) * 1000;

const db = new pg.Pool({ connectionString: env.DATABASE_URL, max: 5 });
await db.query(`CREATE TABLE IF NOT EXISTS tasks (
  id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, title TEXT NOT NULL, description TEXT,
  completed BOOLEAN NOT NULL DEFAULT false,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now())`);
const authDb = env.BETTER_AUTH_DATABASE_URL ? new pg.Pool({ connectionString: env.BETTER_AUTH_DATABASE_URL, max: 3 }) : null;

let jwks = null;
let issuer = null;
if (env.BETTER_AUTH_URL) {
  issuer = new URL(env.BETTER_AUTH_URL).origin;
  jwks = createRemoteJWKSet(new URL(`${env.BETTER_AUTH_URL.replace(/\/$/, "")}/api/auth/jwks`), {
    cooldownDuration: Number(env.MOCK_JWKS_COOLDOWN_MS ?? 30_000),
    cacheMaxAge: 600_000,
  });
}
const hsKey = env.JWT_SECRET ? new TextEncoder().encode(env.JWT_SECRET) : null;

class HttpError extends Error {
  constructor(status, errorType, detail) {
    super(detail);
    this.status = status;
    this.errorType = errorType;
  }
}
const unauthorized = (d = "invalid or missing token") => new HttpError(401, "unauthorized", d);

const sessionCache = new Map(); // token -> { userId, until }
async function sessionUser(token) {
  if (!authDb) return null;
  if (token.includes("%")) {
    try {
      token = decodeURIComponent(token);
    } catch {
      return null;
    }
  }
  let raw = token;
  const dots = token.split(".");
  if (dots.length === 2) {
    if (!env.BETTER_AUTH_SECRET) return null;
    const [t, sig] = dots;
    const want = createHmac("sha256", env.BETTER_AUTH_SECRET).update(t).digest();
    let got;
    try {
      got = Buffer.from(sig.replace(/-/g, "+").replace(/_/g, "/"), "base64");
    } catch {
      return null;
    }
    if (got.length !== want.length || !timingSafeEqual(got, want)) return null;
    raw = t;
  } else if (dots.length !== 1) return null;
  const hit = sessionCache.get(raw);
  if (hit && hit.until > Date.now()) return hit.userId;
  const r = await authDb.query(`SELECT "userId" FROM "session" WHERE "token" = $1 AND "expiresAt" > now()`, [raw]);
  const userId = r.rows[0]?.userId ?? null;
  if (userId) sessionCache.set(raw, { userId, until: Date.now() + sessionTtlMs });
  else sessionCache.delete(raw);
  return userId;
}

async function authenticate(req) {
  const h = req.headers.authorization ?? "";
  if (!/^bearer /i.test(h)) throw unauthorized("missing bearer token");
  const token = h.slice(7).trim();
  if (!token) throw unauthorized();
  if (token.split(".").length === 3) {
    let header;
    try {
      header = JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString());
    } catch {
      throw unauthorized("malformed token");
    }
    try {
      let payload;
      if (header.alg === "HS256" && hsKey) ({ payload } = await jwtVerify(token, hsKey, { algorithms: ["HS256"] }));
      else if (jwks && header.alg !== "HS256")
        ({ payload } = await jwtVerify(token, jwks, { issuer, audience: issuer, algorithms: ["EdDSA", "ES256", "RS256", "PS256"] }));
      else throw new Error("no verifier for alg");
      if (typeof payload.sub !== "string" || !payload.sub) throw new Error("no sub");
      return payload.sub;
    } catch (e) {
      throw unauthorized(`invalid token: ${e.code ?? e.message}`);
    }
  }
  const uid = await sessionUser(token);
  if (!uid) throw unauthorized();
  return uid;
}

const row = (r) => ({
  id: Number(r.id), user_id: r.user_id, title: r.title, description: r.description,
  completed: r.completed, created_at: r.created_at.toISOString(), updated_at: r.updated_at.toISOString(),
});

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  try {
    return JSON.parse(Buffer.concat(chunks).toString() || "null");
  } catch {
    throw new HttpError(400, "bad_request", "invalid JSON body");
  }
}

const require = createRequire(import.meta.url);
const swaggerDir = path.dirname(require.resolve("swagger-ui-dist/package.json"));
const openapi = {
  openapi: "3.1.0",
  info: { title: "tasks (mock)", version: "0.0.0" },
  paths: {
    "/api/tasks": {
      get: { tags: ["tasks"], operationId: "list_tasks", summary: "List tasks",
        parameters: [{ name: "status", in: "query", required: false, schema: { type: "string", enum: ["completed", "active"] } }],
        responses: { 200: { description: "tasks" }, 401: { description: "unauthorized" } }, security: [{ bearer_auth: [] }] },
      post: { tags: ["tasks"], operationId: "create_task", summary: "Create task",
        requestBody: { required: true, content: { "application/json": { schema: { type: "object", required: ["title"], properties: { title: { type: "string" }, description: { type: "string" } } } } } },
        responses: { 201: { description: "created" }, 401: { description: "unauthorized" } }, security: [{ bearer_auth: [] }] },
    },
  },
  components: { securitySchemes: { bearer_auth: { type: "http", scheme: "bearer", bearerFormat: "JWT" } } },
};
const docsIndex = `<!doctype html><html><head><meta charset="utf-8"><title>Swagger UI</title>
<link rel="stylesheet" href="./swagger-ui.css"></head><body><div id="swagger-ui"></div>
<script src="./swagger-ui-bundle.js"></script><script src="./swagger-ui-standalone-preset.js"></script>
<script>window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: "none",
presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout" });</script></body></html>`;

function send(res, status, body, headers = {}) {
  if (body === undefined) {
    res.writeHead(status, headers);
    return res.end();
  }
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

async function route(req, res) {
  const url = new URL(req.url, `http://${host}`);
  const p = url.pathname;
  if (p === "/ready" || p === "/health") return send(res, 200, { status: "ok" });
  if (p === "/openapi.json") return send(res, 200, openapi);
  if (p === "/docs") return send(res, 308, undefined, { location: "/docs/" });
  if (p.startsWith("/docs/")) {
    const f = p === "/docs/" ? "index.html" : path.basename(p);
    if (f === "index.html") {
      res.writeHead(200, { "content-type": "text/html" });
      return res.end(docsIndex);
    }
    const full = path.join(swaggerDir, f);
    if (!fs.existsSync(full)) return send(res, 404, { detail: "not found", status_code: 404, error_type: "not_found" });
    res.writeHead(200, { "content-type": f.endsWith(".css") ? "text/css" : "application/javascript" });
    return fs.createReadStream(full).pipe(res);
  }
  if (!p.startsWith("/api/tasks")) throw new HttpError(404, "not_found", "no such route");
  const uid = await authenticate(req);
  const m = p.match(/^\/api\/tasks(?:\/(\d+))?(\/complete)?$/);
  if (!m) throw new HttpError(404, "not_found", "no such route");
  const id = m[1] ? Number(m[1]) : null;
  const notFound = () => new HttpError(404, "not_found", "task not found");
  if (id === null && !m[2]) {
    if (req.method === "GET") {
      const st = url.searchParams.get("status");
      const cond = st === "completed" ? " AND completed" : st === "active" ? " AND NOT completed" : "";
      const r = await db.query(`SELECT * FROM tasks WHERE user_id = $1${cond} ORDER BY id`, [uid]);
      return send(res, 200, r.rows.map(row));
    }
    if (req.method === "POST") {
      const b = await readJson(req);
      if (!b || typeof b.title !== "string" || !b.title.trim()) throw new HttpError(422, "validation_error", "title required");
      const r = await db.query(`INSERT INTO tasks (user_id, title, description) VALUES ($1, $2, $3) RETURNING *`, [uid, b.title, b.description ?? null]);
      return send(res, 201, row(r.rows[0]));
    }
  } else if (id !== null && m[2]) {
    if (req.method === "PATCH") {
      const r = await db.query(`UPDATE tasks SET completed = NOT completed, updated_at = now() WHERE id = $1 AND user_id = $2 RETURNING *`, [id, uid]);
      if (!r.rowCount) throw notFound();
      return send(res, 200, row(r.rows[0]));
    }
  } else if (id !== null) {
    if (req.method === "GET") {
      const r = await db.query(`SELECT * FROM tasks WHERE id = $1 AND user_id = $2`, [id, uid]);
      if (!r.rowCount) throw notFound();
      return send(res, 200, row(r.rows[0]));
    }
    if (req.method === "PUT") {
      const b = (await readJson(req)) ?? {};
      const r = await db.query(
        `UPDATE tasks SET title = COALESCE($3, title), description = CASE WHEN $4 THEN $5 ELSE description END,
         completed = COALESCE($6, completed), updated_at = now() WHERE id = $1 AND user_id = $2 RETURNING *`,
        [id, uid, b.title ?? null, "description" in b, b.description ?? null, b.completed ?? null]);
      if (!r.rowCount) throw notFound();
      return send(res, 200, row(r.rows[0]));
    }
    if (req.method === "DELETE") {
      const r = await db.query(`DELETE FROM tasks WHERE id = $1 AND user_id = $2`, [id, uid]);
      if (!r.rowCount) throw notFound();
      return send(res, 204);
    }
  }
  throw new HttpError(405, "method_not_allowed", "method not allowed");
}

const server = http.createServer(async (req, res) => {
  const origin = req.headers.origin;
  if (origin && corsOrigins.has(origin)) {
    res.setHeader("access-control-allow-origin", origin);
    res.setHeader("vary", "Origin");
    if (req.method === "OPTIONS") {
      res.writeHead(204, {
        "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "600",
      });
      return res.end();
    }
  }
  try {
    await route(req, res);
  } catch (e) {
    const status = e instanceof HttpError ? e.status : 500;
    if (status === 500) console.error(e);
    if (!res.headersSent) send(res, status, { detail: e.message, status_code: status, error_type: e.errorType ?? "internal" });
  }
  console.log(JSON.stringify({ level: "INFO", method: req.method, path: req.url, status: res.statusCode }));
});
server.listen(port, host, () => console.log(JSON.stringify({ level: "INFO", msg: `listening on ${host}:${port}` })));
const stop = () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 1000).unref();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
