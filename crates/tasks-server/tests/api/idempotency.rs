//! `Idempotency-Key` on `POST /api/tasks`: replays, another body, a retry
//! in flight, per-user scope, expiry and clean-up, malformed keys, and the
//! task limit's 409 replayed.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;

/// `POST path` with an `Idempotency-Key` header (sent as given).
pub async fn post_keyed(
    app: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> Response {
    app.client
        .request(Method::POST, app.url(path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// What a client can compare of two responses.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    location: Option<String>,
    etag: Option<String>,
    body: Value,
}

async fn seen(res: Response) -> (Seen, Option<String>) {
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let replayed = header("idempotent-replayed");
    let seen = Seen {
        status: res.status().as_u16(),
        location: header("location"),
        etag: header("etag"),
        body: Value::Null,
    };
    let body = res.json().await.unwrap();
    (Seen { body, ..seen }, replayed)
}

async fn a_replay_returns_the_first_response_and_creates_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let body = json!({"title": "Buy milk", "description": "Two litres"});
    let (first, replayed) =
        seen(post_keyed(&app, "/api/tasks", &token, "order-1", &body).await).await;
    assert_eq!(first.status, 201);
    assert_eq!(replayed, None, "a first response is not marked");
    let id = first.body["id"].as_i64().unwrap();
    assert_eq!(
        first.location.as_deref(),
        Some(&*format!("/api/tasks/{id}"))
    );
    assert!(first.etag.is_some());

    // The same key, bare or quoted, on the route or its alias, with the
    // same body (reformatted: the fingerprint is of the parsed body).
    let same = json!({"description": "Two litres", "title": "  Buy milk ", "ignored": 1});
    for (path, key) in [
        ("/api/tasks", "order-1"),
        ("/api/tasks", "\"order-1\""),
        ("/api/alice/tasks", "order-1"),
    ] {
        let (again, replayed) = seen(post_keyed(&app, path, &token, key, &same).await).await;
        assert_eq!(again, first, "{path} {key}");
        assert_eq!(replayed.as_deref(), Some("true"));
    }
    // The first response, even after the task has changed since.
    assert_eq!(app.toggle(&token, id).await.status(), 200);
    let (again, _) = seen(post_keyed(&app, "/api/tasks", &token, "order-1", &body).await).await;
    assert_eq!(again, first);

    assert_eq!(
        app.list_ok(&token).await.len(),
        1,
        "one task, however many retries"
    );
    // Another key creates another task.
    let (other, _) = seen(post_keyed(&app, "/api/tasks", &token, "order-2", &body).await).await;
    assert_eq!(other.status, 201);
    assert_ne!(other.body["id"], first.body["id"]);
    assert_eq!(app.list_ok(&token).await.len(), 2);
}

async fn the_same_key_with_another_body_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let res = post_keyed(&app, "/api/tasks", &token, "k", &json!({"title": "one"})).await;
    assert_eq!(res.status(), 201);
    for other in [
        json!({"title": "two"}),
        json!({"title": "one", "description": "more"}),
        json!({"title": "one", "description": ""}),
    ] {
        let res = post_keyed(&app, "/api/tasks", &token, "k", &other).await;
        assert_error(res, 422, "idempotency_key_reused").await;
    }
    assert_eq!(app.list_ok(&token).await.len(), 1);
}

async fn keys_are_scoped_to_the_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let body = json!({"title": "same key"});
    let a = post_keyed(&app, "/api/tasks", &alice, "shared", &body).await;
    let b = post_keyed(&app, "/api/tasks", &bob, "shared", &body).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (201, 201));
    assert!(b.headers().get("idempotent-replayed").is_none());
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_ne!(a["id"], b["id"]);
    assert_eq!(b["user_id"], "bob");
    assert_eq!(app.list_ok(&alice).await.len(), 1);
    assert_eq!(app.list_ok(&bob).await.len(), 1);
    // Bob's key with another body is his own business, not a 422 of Alice's.
    let res = post_keyed(&app, "/api/tasks", &bob, "other", &json!({"title": "x"})).await;
    assert_eq!(res.status(), 201);
}

async fn malformed_keys_are_400_and_create_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let long = "k".repeat(256);
    for key in [
        "",
        "\"\"",
        "\"open",
        "two words",
        "\"a\";p=1",
        long.as_str(),
    ] {
        let res = post_keyed(&app, "/api/tasks", &token, key, &json!({"title": "t"})).await;
        assert_error(res, 400, "validation_error").await;
    }
    let res = app
        .client
        .post(app.url("/api/tasks"))
        .bearer_auth(&token)
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "validation_error").await;
    assert!(app.list_ok(&token).await.is_empty());
    // The longest key is fine.
    let res = post_keyed(
        &app,
        "/api/tasks",
        &token,
        &long[1..],
        &json!({"title": "t"}),
    )
    .await;
    assert_eq!(res.status(), 201);
}

async fn the_task_limit_409_is_replayed(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("MAX_TASKS_PER_USER", "1")]).await;
    let token = app.token("alice");
    let kept = app.create_ok(&token, "the one task").await;
    let body = json!({"title": "one too many"});
    let res = post_keyed(&app, "/api/tasks", &token, "full", &body).await;
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_error(res, 409, "task_limit_reached").await;
    // A slot is free now, but the key remembers its answer (as Stripe's do):
    // a new attempt needs a new key.
    assert_eq!(app.delete(&token, &kept["id"]).await.status(), 204);
    let res = post_keyed(&app, "/api/tasks", &token, "full", &body).await;
    assert_eq!(res.headers().get("idempotent-replayed").unwrap(), "true");
    assert_error(res, 409, "task_limit_reached").await;
    assert!(app.list_ok(&token).await.is_empty());
    let res = post_keyed(&app, "/api/tasks", &token, "fresh", &body).await;
    assert_eq!(res.status(), 201);
}

/// The number of stored key rows, read from the database itself.
async fn key_rows(app: &TestApp) -> i64 {
    match app.backend {
        Backend::Sqlite => {
            use diesel::{Connection as _, RunQueryDsl as _};
            #[derive(diesel::QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let path = app.database_url.trim_start_matches("sqlite://");
            let mut conn = diesel::SqliteConnection::establish(path).unwrap();
            diesel::sql_query("SELECT count(*) AS n FROM idempotency_keys")
                .get_result::<N>(&mut conn)
                .unwrap()
                .n
        }
        Backend::Postgres | Backend::PgBouncer => {
            let client = crate::helpers::connect_pg(&app.database_url).await;
            let rows = client
                .simple_query("SELECT count(*) FROM idempotency_keys")
                .await
                .unwrap();
            rows.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap()
                .parse()
                .unwrap()
        }
    }
}

async fn expired_keys_are_cleaned_up_and_can_be_reused(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("IDEMPOTENCY_KEY_TTL_SECS", "1"),
            ("IDEMPOTENCY_CLEANUP_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let token = app.token("alice");
    let body = json!({"title": "again tomorrow"});
    let first: Value = post_keyed(&app, "/api/tasks", &token, "daily", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(key_rows(&app).await, 1);
    // The clean-up deletes the key once it has expired.
    let mut rows = 1;
    for _ in 0..150 {
        rows = key_rows(&app).await;
        if rows == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows, 0, "the expired key was not cleaned up");
    let res = post_keyed(&app, "/api/tasks", &token, "daily", &body).await;
    assert_eq!(res.status(), 201);
    assert!(res.headers().get("idempotent-replayed").is_none());
    let second: Value = res.json().await.unwrap();
    assert_ne!(second["id"], first["id"], "an expired key creates anew");
    assert_eq!(app.list_ok(&token).await.len(), 2);
}

async fn keys_per_user_are_capped(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("IDEMPOTENCY_MAX_KEYS_PER_USER", "3")]).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let body = json!({"title": "t"});
    for key in ["k1", "k2", "k3"] {
        let res = post_keyed(&app, "/api/tasks", &alice, key, &body).await;
        assert_eq!(res.status(), 201, "{key}");
    }
    let res = post_keyed(&app, "/api/tasks", &alice, "k4", &body).await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    assert_error(res, 429, "idempotency_key_limit_reached").await;
    // Keys already held still replay; creates without a key and other
    // users' keys are not affected.
    let res = post_keyed(&app, "/api/tasks", &alice, "k2", &body).await;
    assert_eq!(res.headers().get("idempotent-replayed").unwrap(), "true");
    app.create_ok(&alice, "no key").await;
    let res = post_keyed(&app, "/api/tasks", &bob, "k4", &body).await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.list_ok(&alice).await.len(), 4);
}

/// Before the clean-up has run, an expired key is not replayed either: it
/// creates anew and its row is replaced, not duplicated.
async fn an_expired_key_is_reused_before_the_clean_up(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("IDEMPOTENCY_KEY_TTL_SECS", "1"),
            ("IDEMPOTENCY_CLEANUP_INTERVAL_SECS", "86400"),
        ],
    )
    .await;
    let token = app.token("alice");
    let body = json!({"title": "again"});
    let first = post_keyed(&app, "/api/tasks", &token, "k", &body).await;
    assert_eq!(first.status(), 201);
    let mut fresh = None;
    for _ in 0..100 {
        let res = post_keyed(&app, "/api/tasks", &token, "k", &body).await;
        assert_eq!(res.status(), 201);
        if res.headers().get("idempotent-replayed").is_none() {
            fresh = Some(res);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fresh.is_some(), "the key never expired");
    assert_eq!(app.list_ok(&token).await.len(), 2);
    assert_eq!(key_rows(&app).await, 1, "the expired row was replaced");
}

/// Holds the lock a create needs, from outside the service: the row of
/// `task_counts` of `user` on PostgreSQL, the write lock on SQLite.
enum Hold {
    Postgres(tokio_postgres::Client),
    Sqlite(diesel::SqliteConnection),
}

impl Hold {
    async fn take(app: &TestApp, user: &str) -> Self {
        match app.backend {
            Backend::Sqlite => {
                use diesel::Connection as _;
                use diesel::connection::SimpleConnection as _;
                let path = app.database_url.trim_start_matches("sqlite://");
                let mut conn = diesel::SqliteConnection::establish(path).unwrap();
                conn.batch_execute("BEGIN IMMEDIATE").unwrap();
                Self::Sqlite(conn)
            }
            Backend::Postgres | Backend::PgBouncer => {
                let client = crate::helpers::connect_pg(&app.database_url).await;
                client
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO task_counts (user_id, tasks) VALUES ('{user}', 0) \
                         ON CONFLICT (user_id) DO UPDATE SET tasks = task_counts.tasks"
                    ))
                    .await
                    .unwrap();
                Self::Postgres(client)
            }
        }
    }

    async fn release(self) {
        match self {
            Self::Sqlite(mut conn) => {
                use diesel::connection::SimpleConnection as _;
                conn.batch_execute("COMMIT").unwrap();
            }
            Self::Postgres(client) => client.batch_execute("COMMIT").await.unwrap(),
        }
    }
}

async fn a_retry_while_the_first_is_in_flight_is_409(backend: Backend) {
    let app = std::sync::Arc::new(
        TestApp::spawn_with(backend, &[("DATABASE_QUERY_TIMEOUT", "30")]).await,
    );
    let token = app.token("alice");
    let hold = Hold::take(&app, "alice").await;
    let body = json!({"title": "slow"});
    // Two requests with one key: whichever claims it first waits on the
    // held lock; the other finds the key in flight and is answered at once.
    let send = || {
        let (app, token, body) = (app.clone(), token.clone(), body.clone());
        Box::pin(async move { post_keyed(&app, "/api/tasks", &token, "slow-1", &body).await })
    };
    let (a, b) = (tokio::spawn(send()), tokio::spawn(send()));
    let (answered, waiting) = match futures_util::future::select(a, b).await {
        futures_util::future::Either::Left((res, other))
        | futures_util::future::Either::Right((res, other)) => (res.unwrap(), other),
    };
    assert_eq!(answered.headers().get("retry-after").unwrap(), "1");
    assert_error(answered, 409, "idempotency_key_in_flight").await;
    hold.release().await;
    let first = waiting.await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // The retry now gets the first response.
    let res = post_keyed(&app, "/api/tasks", &token, "slow-1", &body).await;
    assert_eq!(res.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(res.json::<Value>().await.unwrap(), first);
    assert_eq!(app.list_ok(&token).await.len(), 1);
}

/// A browser page may send the key (and `Last-Event-ID`) cross-origin and
/// read what a replay answers.
async fn cors_lets_pages_send_keys_and_read_replays(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let origin = "http://localhost:3000";
    for (method, path, headers) in [
        (
            "POST",
            "/api/tasks",
            "idempotency-key,authorization,content-type",
        ),
        ("GET", "/api/tasks", "last-event-id,authorization"),
    ] {
        let res = app
            .client
            .request(Method::OPTIONS, app.url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .header("Access-Control-Request-Headers", headers)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{method} {headers}");
        let allowed = res
            .headers()
            .get("access-control-allow-headers")
            .unwrap()
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for header in headers.split(',') {
            assert!(allowed.contains(header), "{header} in {allowed}");
        }
    }
    let res = app
        .client
        .post(app.url("/api/tasks"))
        .bearer_auth(app.token("alice"))
        .header("Origin", origin)
        .header("idempotency-key", "from-a-page")
        .json(&json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let exposed = res
        .headers()
        .get("access-control-expose-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "location",
        "etag",
        "retry-after",
        "link",
        "idempotent-replayed",
    ] {
        assert!(
            exposed.split(',').any(|h| h.trim() == name),
            "{name} in {exposed}"
        );
    }
}

on_both_backends!(
    cors_lets_pages_send_keys_and_read_replays,
    a_replay_returns_the_first_response_and_creates_nothing,
    the_same_key_with_another_body_is_422,
    keys_are_scoped_to_the_user,
    malformed_keys_are_400_and_create_nothing,
    the_task_limit_409_is_replayed,
    keys_per_user_are_capped,
    expired_keys_are_cleaned_up_and_can_be_reused,
    an_expired_key_is_reused_before_the_clean_up,
    a_retry_while_the_first_is_in_flight_is_409,
);
