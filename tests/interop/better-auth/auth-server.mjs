#!/usr/bin/env node
// A real Better Auth server (email+password, jwt(), bearer()) on 127.0.0.1, backed by
// PostgreSQL through `pg`. Used by the interop tests; also runnable by hand:
//
//   AUTH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/some_db \
//   BETTER_AUTH_SECRET=$(openssl rand -base64 32) node auth-server.mjs
//
// Environment:
//   AUTH_DATABASE_URL       required; Better Auth's tables are created there at start
//                           (getMigrations from better-auth/db/migration).
//   BETTER_AUTH_SECRET      required; >= 32 chars. Encrypts the JWKS private keys and
//                           signs the session cookie / bearer token.
//   AUTH_PORT               port to listen on (default 0 = any free port).
//   AUTH_TRUSTED_ORIGINS    extra trusted origins, comma separated (the server's own
//                           origin is always trusted).
//   JWKS_ROTATION_INTERVAL  seconds; enables jwt({ jwks: { rotationInterval } }).
//   JWKS_GRACE_PERIOD       seconds; jwt({ jwks: { gracePeriod } }) (Better Auth default 30 days).
//   JWT_EXPIRATION          jwt({ jwt: { expirationTime } }), e.g. "15m" (default) or "30s".
//   AUTH_TEST_ENDPOINTS=1   adds POST /test/sign-jwt {payload} -> {token}: signs an arbitrary
//                           payload with Better Auth's own current key (auth.api.signJWT), so
//                           tests can make expired / wrong-iss / wrong-aud tokens. Test use only.
//
// Prints exactly one JSON line on stdout once listening: {"ready":true,"port":N,"baseURL":"..."}.
// Everything else goes to stderr.
import http from "node:http";
import process from "node:process";
import pg from "pg";
import { betterAuth } from "better-auth";
import { jwt, bearer } from "better-auth/plugins";
import { toNodeHandler } from "better-auth/node";
import { getMigrations } from "better-auth/db/migration";

function fail(msg) {
  process.stderr.write(`auth-server: ${msg}\n`);
  process.exit(2);
}

const databaseUrl = process.env.AUTH_DATABASE_URL;
if (!databaseUrl) fail("AUTH_DATABASE_URL is required");
const secret = process.env.BETTER_AUTH_SECRET;
if (!secret) fail("BETTER_AUTH_SECRET is required");
const requestedPort = Number(process.env.AUTH_PORT ?? 0);
if (!Number.isInteger(requestedPort) || requestedPort < 0) fail("AUTH_PORT must be an integer");

function optNumber(name) {
  const v = process.env[name];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) fail(`${name} must be a positive number`);
  return n;
}
const rotationInterval = optNumber("JWKS_ROTATION_INTERVAL");
const gracePeriod = optNumber("JWKS_GRACE_PERIOD");
const expirationTime = process.env.JWT_EXPIRATION || undefined;

const testEndpoints = process.env.AUTH_TEST_ENDPOINTS === "1";

const pool = new pg.Pool({ connectionString: databaseUrl, max: 5 });

// Listen first so that port 0 resolves to a real port before baseURL is fixed.
let handler = null;
let auth = null;

async function signForTest(req, res) {
  try {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const { payload } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    const { token } = await auth.api.signJWT({ body: { payload } });
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ token }));
  } catch (err) {
    res.writeHead(500, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: String(err?.message ?? err) }));
  }
}
const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"ok":true}');
    return;
  }
  if (testEndpoints && req.method === "POST" && req.url === "/test/sign-jwt" && auth) {
    signForTest(req, res);
    return;
  }
  if (!handler) {
    res.writeHead(503);
    res.end();
    return;
  }
  handler(req, res).catch((err) => {
    process.stderr.write(`auth-server: handler error: ${err?.stack ?? err}\n`);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});

await new Promise((resolve, reject) => {
  server.once("error", reject);
  server.listen(requestedPort, "127.0.0.1", resolve);
});
const port = server.address().port;
const baseURL = `http://127.0.0.1:${port}`;

const trustedOrigins = [
  baseURL,
  ...(process.env.AUTH_TRUSTED_ORIGINS ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean),
];

const jwks = {};
if (rotationInterval !== undefined) jwks.rotationInterval = rotationInterval;
if (gracePeriod !== undefined) jwks.gracePeriod = gracePeriod;

const authOptions = {
  baseURL,
  secret,
  database: pool,
  trustedOrigins,
  emailAndPassword: { enabled: true },
  rateLimit: { enabled: false },
  telemetry: { enabled: false },
  plugins: [
    jwt({
      jwks,
      ...(expirationTime ? { jwt: { expirationTime } } : {}),
    }),
    bearer(),
  ],
};

try {
  const { runMigrations, toBeCreated, toBeAdded } = await getMigrations(authOptions);
  if (toBeCreated.length || toBeAdded.length) {
    process.stderr.write(
      `auth-server: migrating: create [${toBeCreated.map((t) => t.table).join(", ")}]` +
        ` add columns to [${toBeAdded.map((t) => t.table).join(", ")}]\n`,
    );
    await runMigrations();
  }
} catch (err) {
  fail(`migration failed: ${err?.stack ?? err}`);
}

auth = betterAuth(authOptions);
handler = toNodeHandler(auth);

process.stdout.write(JSON.stringify({ ready: true, port, baseURL }) + "\n");

let closing = false;
async function shutdown(signal) {
  if (closing) return;
  closing = true;
  process.stderr.write(`auth-server: ${signal}, shutting down\n`);
  const hard = setTimeout(() => process.exit(0), 3000);
  hard.unref();
  server.closeAllConnections?.();
  server.close();
  await pool.end().catch(() => {});
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
// If the parent (test runner) dies, our stdin pipe closes: exit too.
if (process.env.AUTH_EXIT_ON_STDIN_EOF === "1") {
  process.stdin.on("end", () => shutdown("stdin EOF"));
  process.stdin.resume();
}
