//! Better Auth session tokens over HTTP, against a PostgreSQL database shaped
//! like Better Auth's (reached through PgBouncer in transaction mode in the
//! `pgbouncer::` variant), with every cache off so that each request is a
//! lookup.

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use reqwest::Method;
use serde_json::json;
use tasks_server::{Application, Settings};

use crate::helpers::{Backend, SECRET, TestApp, TestDb, assert_error, auth_database};
use crate::on_both_backends;

/// Better Auth's Drizzle adapter with `usePlural: true` and snake_case
/// columns; `timestamp` without time zone, as Drizzle's `timestamp()`.
const DRIZZLE_SNAKE_PLURAL: &str = r#"
    CREATE TABLE users (id text PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE);
    CREATE TABLE sessions (id text PRIMARY KEY, expires_at timestamp NOT NULL,
        token text NOT NULL UNIQUE, created_at timestamp NOT NULL DEFAULT now(),
        updated_at timestamp NOT NULL DEFAULT now(), ip_address text, user_agent text,
        user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE);"#;

pub(crate) fn signed_cookie_value(raw: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(raw.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    // As Better Auth sets it: the signed form, URL-encoded.
    format!("{raw}.{signature}")
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

async fn snake_case_plural_schema_is_discovered(backend: Backend) {
    let (_ba_db, ba_url, client) = auth_database(backend, DRIZZLE_SNAKE_PLURAL).await;
    client
        .batch_execute(
            "INSERT INTO users VALUES ('drizzle-user', 'n', 'd@example.com');
             INSERT INTO sessions (id, expires_at, token, user_id) VALUES
               ('s1', (now() at time zone 'utc') + interval '1 hour', 'DrizzleSessionTokenDrizzleSessio', 'drizzle-user'),
               ('s2', (now() at time zone 'utc') - interval '1 hour', 'ExpiredSessionTokenExpiredSessio', 'drizzle-user');",
        )
        .await
        .unwrap();
    let app = TestApp::spawn_with(backend, &[("BETTER_AUTH_DATABASE_URL", &ba_url)]).await;
    let task = app
        .create_ok("DrizzleSessionTokenDrizzleSessio", "from drizzle")
        .await;
    assert_eq!(task["user_id"], "drizzle-user");
    let res = app.list("ExpiredSessionTokenExpiredSessio", "").await;
    assert_error(res, 401, "authentication_error").await;
}

async fn session_schema_overrides_are_used(backend: Backend) {
    let schema = r#"
        CREATE TABLE "AuthSession" ("Token" text PRIMARY KEY, "Owner" uuid NOT NULL,
            "ValidUntil" timestamptz NOT NULL);
        INSERT INTO "AuthSession" VALUES ('OverrideSessionTokenOverrideSess',
            '6f1c1f4e-0000-4000-8000-000000000001', now() + interval '1 hour');"#;
    let (_ba_db, ba_url, _client) = auth_database(backend, schema).await;
    let app = TestApp::spawn_with(
        backend,
        &[
            ("BETTER_AUTH_DATABASE_URL", &ba_url),
            ("BETTER_AUTH_SESSION_TABLE", "AuthSession"),
            ("BETTER_AUTH_SESSION_TOKEN_COLUMN", "Token"),
            ("BETTER_AUTH_SESSION_USER_ID_COLUMN", "Owner"),
            ("BETTER_AUTH_SESSION_EXPIRES_AT_COLUMN", "ValidUntil"),
        ],
    )
    .await;
    let task = app
        .create_ok("OverrideSessionTokenOverrideSess", "overridden")
        .await;
    assert_eq!(task["user_id"], "6f1c1f4e-0000-4000-8000-000000000001");
}

/// `Application::build` with the test defaults plus `extra`, returning its
/// error.
async fn build_error(backend: Backend, extra: &[(&str, &str)]) -> String {
    let (db, url) = TestDb::create(backend).await;
    let mut pairs: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", &url),
        ("JWT_SECRET", SECRET),
        ("PORT", "0"),
        ("WORKERS", "1"),
    ];
    if backend == Backend::PgBouncer {
        pairs.push(("DATABASE_PREPARED_STATEMENTS", "false"));
    }
    pairs.extend_from_slice(extra);
    let settings = Settings::from_pairs(pairs).unwrap();
    let result = Application::build(settings).await;
    drop(db);
    match result {
        Ok(_) => panic!("start-up should have failed"),
        Err(e) => format!("{e:#}"),
    }
}

async fn a_schema_that_matches_nothing_stops_start_up(backend: Backend) {
    let schema =
        "CREATE TABLE session (id text PRIMARY KEY, token text, owner text, expires timestamptz);";
    let (_ba_db, ba_url, _client) = auth_database(backend, schema).await;
    let message = build_error(backend, &[("BETTER_AUTH_DATABASE_URL", &ba_url)]).await;
    for needle in [
        "no Better Auth session table found",
        r#""session" or "sessions""#,
        r#""userId" or "user_id""#,
        r#""expiresAt" or "expires_at""#,
        "BETTER_AUTH_SESSION_TABLE",
        r#""public"."session" has columns "id", "token", "owner", "expires""#,
    ] {
        assert!(message.contains(needle), "{needle}: {message}");
    }
    // An override that names a missing table is refused the same way.
    let message = build_error(
        backend,
        &[
            ("BETTER_AUTH_DATABASE_URL", &ba_url),
            ("BETTER_AUTH_SESSION_TABLE", "auth_session"),
        ],
    )
    .await;
    assert!(
        message.contains(r#"looked for a table "auth_session""#),
        "{message}"
    );
    assert!(!message.contains(&ba_url), "the URL is not in the message");
}

const COOKIE_TOKEN: &str = "CookieSessionTokenCookieSessionT";

async fn cookie_app(backend: Backend) -> (TestApp, TestDb) {
    let (ba_db, ba_url) = better_auth_database(
        backend,
        &[
            ("cookie-user", COOKIE_TOKEN),
            ("bearer-user", "BearerSessionTokenBearerSessionT"),
        ],
    )
    .await;
    let app = TestApp::spawn_with(
        backend,
        &[
            ("BETTER_AUTH_DATABASE_URL", &ba_url),
            ("BETTER_AUTH_SECRET", SECRET),
            ("AUTH_COOKIE", "true"),
        ],
    )
    .await;
    (app, ba_db)
}

fn with_cookie(app: &TestApp, method: Method, path: &str, cookie: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("cookie", cookie)
}

async fn session_cookie_authenticates(backend: Backend) {
    let (app, _ba_db) = cookie_app(backend).await;
    let value = signed_cookie_value(COOKIE_TOKEN);
    for name in [
        "better-auth.session_token",
        "__Secure-better-auth.session_token",
    ] {
        let cookie = format!("theme=dark; {name}={value}; other=1");
        let res = with_cookie(&app, Method::POST, "/api/tasks", &cookie)
            .header("origin", "http://localhost:3000")
            .json(&json!({"title": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{name}");
        let task: serde_json::Value = res.json().await.unwrap();
        assert_eq!(task["user_id"], "cookie-user");
        // A safe method needs no Origin.
        let res = with_cookie(&app, Method::GET, "/api/tasks", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        // Referer stands in for a missing Origin.
        let id = task["id"].as_i64().unwrap();
        let res = with_cookie(&app, Method::DELETE, &format!("/api/tasks/{id}"), &cookie)
            .header("referer", "https://app.example.com/tasks?page=2")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{name}");
    }
    // The raw (unsigned) token is never accepted from a cookie, nor one
    // signed with another secret.
    for cookie in [
        format!("better-auth.session_token={COOKIE_TOKEN}"),
        format!(
            "better-auth.session_token={COOKIE_TOKEN}.{}",
            "A".repeat(43) + "="
        ),
    ] {
        let res = with_cookie(&app, Method::GET, "/api/tasks", &cookie)
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "authentication_error").await;
    }
    // No cookie and no header: the 401 says both ways.
    let res = app.client.get(app.url("/api/tasks")).send().await.unwrap();
    let body = assert_error(res, 401, "authentication_error").await;
    assert!(
        body["detail"].as_str().unwrap().contains("session cookie"),
        "{body}"
    );
}

async fn cross_site_cookie_writes_are_refused(backend: Backend) {
    let (app, _ba_db) = cookie_app(backend).await;
    let cookie = format!(
        "better-auth.session_token={}",
        signed_cookie_value(COOKIE_TOKEN)
    );
    let own = app.create_ok("BearerSessionTokenBearerSessionT", "x").await;
    let id = own["id"].as_i64().unwrap();
    // A cross-site HTML form POST: foreign Origin, form content type.
    let res = with_cookie(&app, Method::POST, "/api/tasks", &cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("title=pwned")
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 403, "forbidden").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("https://evil.example") && detail.contains("CORS_ORIGINS"),
        "{detail}"
    );
    // Every unsafe method, with a foreign Origin or none at all.
    for (method, path) in [
        (Method::POST, "/api/tasks".to_owned()),
        (Method::PUT, format!("/api/tasks/{id}")),
        (Method::PATCH, format!("/api/tasks/{id}/complete")),
        (Method::DELETE, format!("/api/tasks/{id}")),
    ] {
        for origin in [Some("https://evil.example"), Some("null"), None] {
            let mut req =
                with_cookie(&app, method.clone(), &path, &cookie).json(&json!({"title": "y"}));
            if let Some(origin) = origin {
                req = req.header("origin", origin);
            }
            let res = req.send().await.unwrap();
            let body = assert_error(res, 403, "forbidden").await;
            if origin.is_none() {
                assert!(
                    body["detail"]
                        .as_str()
                        .unwrap()
                        .contains("Origin or Referer"),
                    "{body}"
                );
            }
        }
    }
    // Nothing was created, changed or deleted.
    let cookie_tasks = with_cookie(&app, Method::GET, "/api/tasks", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        cookie_tasks
            .json::<Vec<serde_json::Value>>()
            .await
            .unwrap()
            .len(),
        0
    );
    let res = app.get("BearerSessionTokenBearerSessionT", id).await;
    assert_eq!(res.status(), 200);
    let task: serde_json::Value = res.json().await.unwrap();
    assert_eq!(task["completed"], false);
}

async fn authorization_header_wins_over_the_cookie(backend: Backend) {
    let (app, _ba_db) = cookie_app(backend).await;
    let cookie = format!(
        "better-auth.session_token={}",
        signed_cookie_value(COOKIE_TOKEN)
    );
    // A valid bearer token decides the user, whatever the cookie says, and
    // without the CSRF rule (a header is never sent by a foreign page).
    let res = with_cookie(&app, Method::POST, "/api/tasks", &cookie)
        .bearer_auth("BearerSessionTokenBearerSessionT")
        .json(&json!({"title": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let task: serde_json::Value = res.json().await.unwrap();
    assert_eq!(task["user_id"], "bearer-user");
    // A bad bearer token is a 401 even with a valid cookie.
    let res = with_cookie(&app, Method::GET, "/api/tasks", &cookie)
        .bearer_auth("MadeUpTokenMadeUpTokenMadeUpToke")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "authentication_error").await;
}

async fn cookies_are_ignored_unless_enabled(backend: Backend) {
    let (_ba_db, ba_url) = better_auth_database(backend, &[("cookie-user", COOKIE_TOKEN)]).await;
    let app = TestApp::spawn_with(
        backend,
        &[
            ("BETTER_AUTH_DATABASE_URL", &ba_url),
            ("BETTER_AUTH_SECRET", SECRET),
        ],
    )
    .await;
    let cookie = format!(
        "better-auth.session_token={}",
        signed_cookie_value(COOKIE_TOKEN)
    );
    let res = with_cookie(&app, Method::GET, "/api/tasks", &cookie)
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 401, "authentication_error").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("AUTH_COOKIE=true"),
        "{body}"
    );
}

/// Better Auth's `user` and `session` tables in a fresh database (through
/// PgBouncer for that backend), with one session per user id; returns the
/// database guard and its URL.
async fn better_auth_database(backend: Backend, users: &[(&str, &str)]) -> (TestDb, String) {
    let (db, url, client) = auth_database(backend, crate::helpers::BETTER_AUTH_SCHEMA).await;
    for (i, (user, token)) in users.iter().enumerate() {
        client
            .execute(
                r#"INSERT INTO "user" ("id", "name", "email", "emailVerified") VALUES ($1, 'n', $2, false)"#,
                &[user, &format!("u{i}@example.com")],
            )
            .await
            .unwrap();
        client
            .execute(
                r#"INSERT INTO "session" ("id", "expiresAt", "token", "updatedAt", "userId")
                   VALUES ($1, now() + interval '1 hour', $2, now(), $3)"#,
                &[&format!("s{i}"), token, user],
            )
            .await
            .unwrap();
    }
    (db, url)
}

fn session_token(i: usize) -> String {
    format!("SessionToken{i:04}SessionToken{i:04}")
}

async fn concurrent_session_lookups_succeed(backend: Backend) {
    let names: Vec<(String, String)> = (0..16)
        .map(|i| (format!("user-{i}"), session_token(i)))
        .collect();
    let users: Vec<(&str, &str)> = names
        .iter()
        .map(|(u, t)| (u.as_str(), t.as_str()))
        .collect();
    let (_ba_db, ba_url) = better_auth_database(backend, &users).await;
    let app = TestApp::spawn_with(
        backend,
        &[
            ("BETTER_AUTH_DATABASE_URL", &ba_url),
            ("BETTER_AUTH_DATABASE_POOL_SIZE", "3"),
            ("TOKEN_CACHE_SIZE", "0"),
            ("SESSION_NEGATIVE_CACHE_TTL_SECS", "0"),
        ],
    )
    .await;
    let app = std::sync::Arc::new(app);
    let clients: Vec<_> = names
        .iter()
        .cloned()
        .map(|(user, token)| {
            let app = app.clone();
            tokio::spawn(async move {
                for n in 0..4 {
                    let task = app.create_ok(&token, &format!("task {n}")).await;
                    assert_eq!(task["user_id"], user.as_str());
                    let listed = app.list_ok(&token).await;
                    assert_eq!(listed.len(), n + 1);
                    // A made-up token is a 401, never a 503.
                    let res = app.list(&format!("MadeUp{n}{user}MadeUpMadeUp"), "").await;
                    assert_error(res, 401, "authentication_error").await;
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
}

async fn blank_session_user_id_is_rejected(backend: Backend) {
    let (_ba_db, ba_url) =
        better_auth_database(backend, &[("   ", "BlankUserSessionBlankUserSession")]).await;
    let app = TestApp::spawn_with(backend, &[("BETTER_AUTH_DATABASE_URL", &ba_url)]).await;
    let res = app
        .create(
            "BlankUserSessionBlankUserSession",
            &json!({"title": "nobody's"}),
        )
        .await;
    let body = assert_error(res, 401, "authentication_error").await;
    assert!(
        body["detail"].as_str().unwrap().contains("white space"),
        "{body}"
    );
}

on_both_backends!(
    concurrent_session_lookups_succeed,
    blank_session_user_id_is_rejected,
    snake_case_plural_schema_is_discovered,
    session_schema_overrides_are_used,
    a_schema_that_matches_nothing_stops_start_up,
    session_cookie_authenticates,
    cross_site_cookie_writes_are_refused,
    authorization_header_wins_over_the_cookie,
    cookies_are_ignored_unless_enabled
);
