// End-to-end: a real Better Auth server (jwt() + bearer(), PostgreSQL) issues tokens; the
// Rust tasks service ($TASKS_BIN serve) must accept them exactly as a Better Auth frontend
// sends them. Run: TASKS_BIN=/path/to/tasks-server node --test interop.test.mjs
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { SignJWT, generateKeyPair } from "jose";
import {
  tasksBinReady,
  startAuthServer,
  startTasks,
  stopAll,
  dropAllDatabases,
  signUp,
  signIn,
  signOut,
  getJwt,
  decodeJwt,
  signWithAuthKey,
  signSessionToken,
  api,
  http,
  dbQuery,
  eventually,
  rand,
} from "./lib.mjs";

const CORS_ORIGINS = "http://127.0.0.1:9";
const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

function assertErrorBody(res, status) {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)}`);
  assert.equal(typeof res.body, "object", `error body must be JSON, got ${JSON.stringify(res.body)}`);
  assert.equal(typeof res.body.detail, "string", "error body has detail");
  assert.equal(res.body.status_code, status, "error body has status_code");
  assert.equal(typeof res.body.error_type, "string", "error body has error_type");
}

function assertTask(t) {
  assert.equal(typeof t.id, "number", `task.id is an integer: ${JSON.stringify(t)}`);
  assert.ok(Number.isInteger(t.id));
  assert.equal(typeof t.user_id, "string");
  assert.equal(typeof t.title, "string");
  assert.ok(t.description === null || typeof t.description === "string");
  assert.equal(typeof t.completed, "boolean");
  assert.ok(!Number.isNaN(Date.parse(t.created_at)), "created_at is a date");
  assert.ok(!Number.isNaN(Date.parse(t.updated_at)), "updated_at is a date");
}

const hs256 = (claims, secret, header = { alg: "HS256", typ: "JWT" }) => {
  const signingInput = `${b64url(header)}.${b64url(claims)}`;
  return `${signingInput}.${createHmac("sha256", secret).update(signingInput).digest("base64url")}`;
};

// A missing TASKS_BIN is one failing test with the reason, never a silent skip.
if (tasksBinReady()) {
  let auth; // shared Better Auth server (no key rotation)

  before(async () => {
    auth = await startAuthServer();
  }, { timeout: 60_000 });

  after(async () => {
    await stopAll();
    await dropAllDatabases();
  }, { timeout: 60_000 });

  // -------------------------------------------------------------------------------------
  describe("JWKS mode (Better Auth jwt() plugin)", { timeout: 180_000 }, () => {
    let svc, alice, bob, jwtA, jwtB, jwks;

    before(async () => {
      svc = await startTasks({ BETTER_AUTH_URL: auth.baseURL, CORS_ORIGINS });
      alice = await signUp(auth, { email: `alice-${rand(4)}@example.com`, name: "Alice" });
      bob = await signUp(auth, { email: `bob-${rand(4)}@example.com`, name: "Bob" });
      jwtA = await getJwt(auth, alice, "cookie");
      jwtB = await getJwt(auth, bob, "bearer-signed");
      jwks = await (await http(`${auth.baseURL}/api/auth/jwks`)).json();
    }, { timeout: 90_000 });

    it("Better Auth issues EdDSA JWTs whose iss/aud are the auth origin and sub is the user id", async () => {
      const { header, claims } = decodeJwt(jwtA);
      assert.equal(header.alg, "EdDSA");
      assert.ok(jwks.keys.some((k) => k.kid === header.kid), "kid is published in the JWKS");
      assert.equal(claims.iss, auth.baseURL);
      assert.equal(claims.aud, auth.baseURL);
      assert.equal(claims.sub, alice.user.id);
      assert.ok(claims.exp > now());
      // Tokens fetched with the raw bearer token are the same kind.
      const viaRaw = decodeJwt(await getJwt(auth, alice, "bearer-raw"));
      assert.equal(viaRaw.claims.sub, alice.user.id);
    });

    it("rejects requests without a usable Authorization header (401, JSON error)", async () => {
      assertErrorBody(await api(svc, null, "GET", "/api/tasks"), 401);
      assertErrorBody(await api(svc, "", "GET", "/api/tasks"), 401);
      assertErrorBody(await api(svc, "not-a-token", "GET", "/api/tasks"), 401);
      const basic = await http(`${svc.baseURL}/api/tasks`, { headers: { authorization: `Basic ${jwtA}` } });
      assert.equal(basic.status, 401);
    });

    it("create, list, get, toggle, update, filter, delete with a Better Auth JWT", async () => {
      const created = await api(svc, jwtA, "POST", "/api/tasks", { title: "write interop tests", description: "via Better Auth" });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assertTask(created.body);
      assert.equal(created.body.user_id, alice.user.id, "user_id is the token's sub");
      assert.equal(created.body.title, "write interop tests");
      assert.equal(created.body.description, "via Better Auth");
      assert.equal(created.body.completed, false);
      const id = created.body.id;

      const second = await api(svc, jwtA, "POST", "/api/tasks", { title: "no description" });
      assert.equal(second.status, 201);
      assert.equal(second.body.description, null);

      const list = await api(svc, jwtA, "GET", "/api/tasks");
      assert.equal(list.status, 200);
      assert.ok(Array.isArray(list.body));
      assert.deepEqual(list.body.map((t) => t.id).sort((a, b) => a - b), [id, second.body.id].sort((a, b) => a - b));
      list.body.forEach(assertTask);

      const got = await api(svc, jwtA, "GET", `/api/tasks/${id}`);
      assert.equal(got.status, 200);
      assert.equal(got.body.id, id);

      const toggled = await api(svc, jwtA, "PATCH", `/api/tasks/${id}/complete`);
      assert.equal(toggled.status, 200, JSON.stringify(toggled.body));
      assert.equal(toggled.body.completed, true);

      const done = await api(svc, jwtA, "GET", "/api/tasks?status=completed");
      assert.equal(done.status, 200);
      assert.deepEqual(done.body.map((t) => t.id), [id]);
      const active = await api(svc, jwtA, "GET", "/api/tasks?status=active");
      assert.deepEqual(active.body.map((t) => t.id), [second.body.id]);

      const back = await api(svc, jwtA, "PATCH", `/api/tasks/${id}/complete`);
      assert.equal(back.body.completed, false);

      const updated = await api(svc, jwtA, "PUT", `/api/tasks/${id}`, { title: "renamed" });
      assert.equal(updated.status, 200, JSON.stringify(updated.body));
      assert.equal(updated.body.title, "renamed");
      assert.equal(updated.body.description, "via Better Auth", "partial update keeps description");
      assert.equal(updated.body.completed, false);
      const updated2 = await api(svc, jwtA, "PUT", `/api/tasks/${id}`, { completed: true, description: "changed" });
      assert.equal(updated2.status, 200);
      assert.equal(updated2.body.title, "renamed");
      assert.equal(updated2.body.completed, true);
      assert.equal(updated2.body.description, "changed");

      const del = await api(svc, jwtA, "DELETE", `/api/tasks/${id}`);
      assert.equal(del.status, 204);
      assertErrorBody(await api(svc, jwtA, "GET", `/api/tasks/${id}`), 404);
      const del2 = await api(svc, jwtA, "DELETE", `/api/tasks/${second.body.id}`);
      assert.equal(del2.status, 204);
    });

    it("another user cannot see, get, update, toggle or delete the task (404), and their list is empty", async () => {
      const created = await api(svc, jwtA, "POST", "/api/tasks", { title: "alice only" });
      assert.equal(created.status, 201);
      const id = created.body.id;

      const bobList = await api(svc, jwtB, "GET", "/api/tasks");
      assert.equal(bobList.status, 200);
      assert.deepEqual(bobList.body, []);
      assertErrorBody(await api(svc, jwtB, "GET", `/api/tasks/${id}`), 404);
      assertErrorBody(await api(svc, jwtB, "PUT", `/api/tasks/${id}`, { title: "pwned" }), 404);
      assertErrorBody(await api(svc, jwtB, "PATCH", `/api/tasks/${id}/complete`), 404);
      assertErrorBody(await api(svc, jwtB, "DELETE", `/api/tasks/${id}`), 404);

      const still = await api(svc, jwtA, "GET", `/api/tasks/${id}`);
      assert.equal(still.status, 200);
      assert.equal(still.body.title, "alice only");
      assert.equal(still.body.completed, false);
      assert.equal((await api(svc, jwtA, "DELETE", `/api/tasks/${id}`)).status, 204);
    });

    it("rejects tampered, forged and mis-addressed tokens with 401", async () => {
      const [h, p, s] = jwtA.split(".");
      const { header, claims } = decodeJwt(jwtA);
      const realKey = jwks.keys.find((k) => k.kid === header.kid);
      const cases = {};

      cases["payload swapped to Bob (signature kept)"] = `${h}.${b64url({ ...claims, sub: bob.user.id })}.${s}`;
      cases["signature altered"] = `${h}.${p}.${(s[0] === "A" ? "B" : "A") + s.slice(1)}`;
      cases["signature removed"] = `${h}.${p}.`;
      cases["alg none"] = `${b64url({ alg: "none", typ: "JWT" })}.${p}.`;
      cases["alg none, real kid"] = `${b64url({ alg: "none", kid: header.kid })}.${p}.`;
      cases["HS256 keyed with BETTER_AUTH_SECRET, real kid"] = hs256(claims, auth.secret, { alg: "HS256", kid: header.kid });
      cases["HS256 keyed with the public key x, real kid"] = hs256(claims, realKey.x, { alg: "HS256", kid: header.kid });

      const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
      const forge = (kid) =>
        new SignJWT({ ...claims }).setProtectedHeader({ alg: "EdDSA", kid }).sign(privateKey);
      cases["foreign Ed25519 key, unknown kid"] = await forge(rand(16));
      cases["foreign Ed25519 key, real kid"] = await forge(header.kid);

      // Signed by Better Auth's real key, but with bad claims.
      const base = { ...claims };
      delete base.iat;
      delete base.exp;
      cases["expired 10 minutes ago (real key)"] = await signWithAuthKey(auth, { ...base, iat: now() - 1200, exp: now() - 600 });
      cases["wrong audience (real key)"] = await signWithAuthKey(auth, { ...base, aud: "http://127.0.0.1:1" });
      cases["wrong issuer (real key)"] = await signWithAuthKey(auth, { ...base, iss: "http://127.0.0.1:1" });
      const noSub = { ...base };
      delete noSub.sub;
      cases["no sub (real key)"] = await signWithAuthKey(auth, noSub);

      const failures = [];
      for (const [name, token] of Object.entries(cases)) {
        const r = await api(svc, token, "GET", "/api/tasks");
        if (r.status !== 401) failures.push(`${name}: got ${r.status} ${JSON.stringify(r.body)}`);
        else assertErrorBody(r, 401);
      }
      assert.deepEqual(failures, [], "every tampered token must be rejected with 401");

      // Control: the same real key with sane claims is accepted, so the 401s above were for the claims.
      const fresh = await signWithAuthKey(auth, { ...base, iat: now(), exp: now() + 300 });
      assert.equal((await api(svc, fresh, "GET", "/api/tasks")).status, 200);
      // And the genuine token still works after all the forgeries (no cache poisoning).
      assert.equal((await api(svc, jwtA, "GET", "/api/tasks")).status, 200);
    });
  });

  // -------------------------------------------------------------------------------------
  describe("JWKS key rotation (jwks.rotationInterval)", { timeout: 180_000 }, () => {
    const ROTATION = 3; // seconds
    // A service with a jose-like refetch cooldown (30 s) may need up to that long.
    const ACCEPT_NEW_KID_WITHIN_MS = Number(process.env.INTEROP_NEW_KID_TIMEOUT_MS ?? 40_000);
    let rotAuth, svc, carol;

    before(async () => {
      rotAuth = await startAuthServer({
        extraEnv: { JWKS_ROTATION_INTERVAL: String(ROTATION), JWKS_GRACE_PERIOD: "600" },
      });
      carol = await signUp(rotAuth, { email: `carol-${rand(4)}@example.com`, name: "Carol" });
      svc = await startTasks({ BETTER_AUTH_URL: rotAuth.baseURL, CORS_ORIGINS });
    }, { timeout: 90_000 });

    it("accepts a token signed by a NEW kid (refetches the JWKS), and old-kid tokens within the grace period", async (t) => {
      const t1 = await getJwt(rotAuth, carol);
      const kid1 = decodeJwt(t1).header.kid;
      const first = await api(svc, t1, "GET", "/api/tasks");
      assert.equal(first.status, 200, `first token: ${JSON.stringify(first.body)}`);
      const created = await api(svc, t1, "POST", "/api/tasks", { title: "before rotation" });
      assert.equal(created.status, 201);

      // Wait for Better Auth to rotate: a new token is signed by a newly created key.
      const { value: rotated } = await eventually(
        "Better Auth signs with a new kid",
        async () => {
          const tok = await getJwt(rotAuth, carol);
          const kid = decodeJwt(tok).header.kid;
          return { ok: kid !== kid1, tok, kid };
        },
        (ROTATION + 10) * 1000,
        500,
      );
      const t2 = rotated.tok;
      const kid2 = rotated.kid;
      const published = (await (await http(`${rotAuth.baseURL}/api/auth/jwks`)).json()).keys.map((k) => k.kid);
      assert.ok(published.includes(kid1) && published.includes(kid2), "JWKS publishes old and new kid");
      t.diagnostic(`kid1=${kid1} kid2=${kid2} published=${published.length} keys`);

      const { elapsedMs, value: accepted } = await eventually(
        `service accepts the token with new kid ${kid2}`,
        async () => {
          const r = await api(svc, t2, "GET", "/api/tasks");
          return { ok: r.status === 200, status: r.status, body: r.body };
        },
        ACCEPT_NEW_KID_WITHIN_MS,
        500,
      );
      t.diagnostic(`new kid accepted after ${elapsedMs} ms`);
      assert.deepEqual(accepted.body.map((x) => x.id), [created.body.id], "same user, same tasks");

      // The old kid is still published (grace period): its token keeps working.
      assert.equal((await api(svc, t1, "GET", "/api/tasks")).status, 200);
    });
  });

  // -------------------------------------------------------------------------------------
  describe("session-token mode (bearer() plugin, Better Auth's session table)", { timeout: 180_000 }, () => {
    let svc, dave, erin;

    before(async () => {
      svc = await startTasks({
        BETTER_AUTH_URL: auth.baseURL,
        BETTER_AUTH_DATABASE_URL: auth.dbUrl,
        BETTER_AUTH_SECRET: auth.secret,
        SESSION_CACHE_TTL_SECS: "1",
        CORS_ORIGINS,
      });
      dave = await signUp(auth, { email: `dave-${rand(4)}@example.com`, name: "Dave" });
      erin = await signUp(auth, { email: `erin-${rand(4)}@example.com`, name: "Erin" });
    }, { timeout: 90_000 });

    it("sign-in gives the raw token in the body and the signed form in set-auth-token", () => {
      assert.match(dave.rawToken, /^[A-Za-z0-9]{32}$/);
      assert.equal(dave.signedToken, signSessionToken(dave.rawToken, auth.secret));
      assert.match(dave.signedToken, /^[A-Za-z0-9]{32}\.[A-Za-z0-9+/]{43}=$/);
    });

    it("accepts the raw session token, the signed form and the percent-encoded signed form", async () => {
      const created = await api(svc, dave.rawToken, "POST", "/api/tasks", { title: "via raw session token" });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.equal(created.body.user_id, dave.user.id, "user_id is session.userId");

      const signed = await api(svc, dave.signedToken, "GET", "/api/tasks");
      assert.equal(signed.status, 200, JSON.stringify(signed.body));
      assert.deepEqual(signed.body.map((t) => t.id), [created.body.id]);

      const pct = await api(svc, encodeURIComponent(dave.signedToken), "GET", `/api/tasks/${created.body.id}`);
      assert.equal(pct.status, 200, `percent-encoded signed token (the cookie's form): ${JSON.stringify(pct.body)}`);

      // A JWT for the same user reaches the same tasks: both modes map to the same user id.
      const jwt = await getJwt(auth, dave, "bearer-signed");
      const viaJwt = await api(svc, jwt, "GET", "/api/tasks");
      assert.equal(viaJwt.status, 200);
      assert.deepEqual(viaJwt.body.map((t) => t.id), [created.body.id]);

      // Another user's session sees nothing.
      const erinList = await api(svc, erin.signedToken, "GET", "/api/tasks");
      assert.equal(erinList.status, 200);
      assert.deepEqual(erinList.body, []);
      assertErrorBody(await api(svc, erin.rawToken, "GET", `/api/tasks/${created.body.id}`), 404);
    });

    it("rejects unknown tokens and bad signatures (401)", async () => {
      const sig = dave.signedToken.split(".")[1];
      const cases = {
        "unknown raw token": "A".repeat(32),
        "bad signature": `${dave.rawToken}.${(sig[0] === "A" ? "B" : "A") + sig.slice(1)}`,
        "signed with another secret": signSessionToken(dave.rawToken, "x".repeat(44)),
        "another token with dave's signature": `${erin.rawToken}.${sig}`,
      };
      const failures = [];
      for (const [name, token] of Object.entries(cases)) {
        const r = await api(svc, token, "GET", "/api/tasks");
        if (r.status !== 401) failures.push(`${name}: got ${r.status} ${JSON.stringify(r.body)}`);
      }
      assert.deepEqual(failures, []);
    });

    it("rejects an expired session (session.expiresAt in the past)", async () => {
      const s2 = await signIn(auth, { email: dave.user.email });
      await dbQuery(auth.dbUrl, `UPDATE "session" SET "expiresAt" = now() - interval '1 minute' WHERE "token" = $1`, [s2.rawToken]);
      await eventually(
        "expired session rejected",
        async () => {
          const r = await api(svc, s2.signedToken, "GET", "/api/tasks");
          return { ok: r.status === 401, status: r.status };
        },
        5_000,
      );
    });

    it("stops accepting the session token after sign-out (SESSION_CACHE_TTL_SECS=1)", async (t) => {
      const s3 = await signIn(auth, { email: erin.user.email });
      assert.equal((await api(svc, s3.signedToken, "GET", "/api/tasks")).status, 200);
      assert.equal((await api(svc, s3.rawToken, "GET", "/api/tasks")).status, 200);
      await signOut(auth, s3);
      const rows = await dbQuery(auth.dbUrl, `SELECT 1 FROM "session" WHERE "token" = $1`, [s3.rawToken]);
      assert.equal(rows.rowCount, 0, "Better Auth deleted the session row");
      const { elapsedMs } = await eventually(
        "signed-out session rejected",
        async () => {
          const a = await api(svc, s3.signedToken, "GET", "/api/tasks");
          const b = await api(svc, s3.rawToken, "GET", "/api/tasks");
          return { ok: a.status === 401 && b.status === 401, signed: a.status, raw: b.status };
        },
        5_000,
      );
      t.diagnostic(`rejected ${elapsedMs} ms after sign-out`);
      // The user's other session is unaffected.
      assert.equal((await api(svc, erin.signedToken, "GET", "/api/tasks")).status, 200);
    });
  });

  // -------------------------------------------------------------------------------------
  describe("shared-secret HS256 (frontend mints its own JWT)", { timeout: 120_000 }, () => {
    const secret = rand(32);
    let svc;
    before(async () => {
      svc = await startTasks({ JWT_SECRET: secret, CORS_ORIGINS });
    }, { timeout: 90_000 });

    it("accepts HS256 {sub, iat, exp} signed with JWT_SECRET and rejects other keys, expiry and alg none", async () => {
      const sub = `user_${rand(6)}`;
      const good = hs256({ sub, iat: now(), exp: now() + 300 }, secret);
      const created = await api(svc, good, "POST", "/api/tasks", { title: "hs256" });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.equal(created.body.user_id, sub);
      assert.equal((await api(svc, good, "GET", "/api/tasks")).body.length, 1);

      const cases = {
        "wrong secret": hs256({ sub, iat: now(), exp: now() + 300 }, `${secret}x`),
        expired: hs256({ sub, iat: now() - 1200, exp: now() - 600 }, secret),
        "no sub": hs256({ iat: now(), exp: now() + 300 }, secret),
        "alg none": `${b64url({ alg: "none", typ: "JWT" })}.${b64url({ sub, exp: now() + 300 })}.`,
      };
      const failures = [];
      for (const [name, token] of Object.entries(cases)) {
        const r = await api(svc, token, "GET", "/api/tasks");
        if (r.status !== 401) failures.push(`${name}: got ${r.status}`);
      }
      assert.deepEqual(failures, []);
    });
  });
}
