//! Live updates: `GET /api/tasks/events` (Server-Sent Events) on every
//! backend, resuming with `Last-Event-ID`, caps, heartbeats, token expiry,
//! and the PostgreSQL fan-out across instances and listener reconnects.
//!
//! Nothing here asserts on time: every wait is for an event, bounded by a
//! generous timeout that only a broken service reaches.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDb, admin_url, assert_error, now, sign, with_database};
use crate::on_both_backends;

/// Longest wait for one event; reached only when something is broken.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Default, Clone)]
struct Event {
    event: String,
    id: Option<String>,
    data: String,
    comment: bool,
    retry: Option<u64>,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// A minimal SSE reader over a streamed response body.
struct Sse {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<actix_web::web::Bytes>> + Send>>,
    buffer: String,
}

impl Sse {
    async fn open(app: &TestApp, token: &str, last_event_id: Option<&str>) -> Self {
        let res = Self::request(app, token, last_event_id).await;
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
        Self::from_response(res)
    }

    async fn request(app: &TestApp, token: &str, last_event_id: Option<&str>) -> reqwest::Response {
        // No overall timeout: the body never ends by itself.
        let client = reqwest::Client::new();
        let mut req = client.get(app.url("/api/tasks/events"));
        req = match token.strip_prefix("cookie:") {
            Some(cookie) => req.header("cookie", cookie),
            None => req.bearer_auth(token),
        };
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        req.send().await.expect("stream request sent")
    }

    fn from_response(res: reqwest::Response) -> Self {
        let headers = res.headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["cache-control"], "no-store, no-transform");
        assert_eq!(headers["x-accel-buffering"], "no");
        Self {
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event or comment; `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = tokio::time::timeout(EVENT_TIMEOUT, self.body.next())
                .await
                .expect("an event within the timeout");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next real event (not a comment or `retry:`).
    async fn event(&mut self) -> Event {
        loop {
            let e = self.next().await.expect("the stream is still open");
            if !e.comment && e.retry.is_none() {
                return e;
            }
        }
    }

    /// Change events until `done` holds for one; returns them all.
    async fn changes_until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let e = self.event().await;
            assert_eq!(e.event, "message", "{e:?}");
            let data = e.json();
            assert_eq!(e.id.as_deref(), data["cursor"].as_str(), "id = cursor");
            let stop = done(&data);
            seen.push(data);
            if stop {
                return seen;
            }
        }
    }
}

fn parse(block: &str) -> Event {
    let mut event = Event {
        event: "message".into(),
        ..Event::default()
    };
    for line in block.lines() {
        if line.starts_with(':') {
            event.comment = true;
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => value.clone_into(&mut event.event),
                "id" => event.id = Some(value.to_owned()),
                "data" => event.data.push_str(value),
                "retry" => event.retry = Some(value.parse().unwrap()),
                _ => {}
            }
        }
    }
    event
}

fn titles(pages: &[Value]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p["tasks"].as_array().unwrap().iter())
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}

fn has_task(page: &Value, title: &str) -> bool {
    page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["title"] == title)
}

/// The app on a fresh database; through PgBouncer, the listener gets the
/// direct URL (`DATABASE_DIRECT_URL`), as a deployment must give it.
async fn spawn(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let (db, url) = TestDb::create(backend).await;
    let direct = match &db {
        TestDb::Postgres { name } => with_database(&admin_url(), name),
        TestDb::Sqlite { .. } => String::new(),
    };
    let mut settings = extra.to_vec();
    if backend == Backend::PgBouncer {
        settings.push(("DATABASE_DIRECT_URL", &direct));
    }
    TestApp::spawn_on(backend, Arc::new(db), &url, &settings).await
}

/// Opens a stream without a cursor: `retry:` first, then `ready` with the
/// current cursor.
async fn open_ready(app: &TestApp, token: &str) -> (Sse, String) {
    let mut sse = Sse::open(app, token, None).await;
    let first = sse.next().await.unwrap();
    assert!(first.retry.is_some(), "retry: comes first: {first:?}");
    let ready = sse.event().await;
    assert_eq!(ready.event, "ready", "{ready:?}");
    let id = ready.id.clone().unwrap();
    assert_eq!(ready.json()["cursor"], id);
    (sse, id)
}

async fn subscriber_receives_its_own_changes_only(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let (mut a, _) = open_ready(&app, &alice).await;
    let (mut b, _) = open_ready(&app, &bob).await;

    let task = app.create_ok(&alice, "alice live").await;
    let id = task["id"].as_i64().unwrap();
    a.changes_until(|p| has_task(p, "alice live")).await;

    let res = app
        .update(&alice, id, &json!({"title": "alice renamed"}))
        .await;
    assert_eq!(res.status(), 200);
    a.changes_until(|p| has_task(p, "alice renamed")).await;

    assert_eq!(app.toggle(&alice, id).await.status(), 200);
    a.changes_until(|p| {
        p["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id && t["completed"] == true)
    })
    .await;

    assert_eq!(app.delete(&alice, id).await.status(), 204);
    a.changes_until(|p| p["deleted"].as_array().unwrap().contains(&json!(id)))
        .await;

    // Bob's first change event is his own: none of Alice's ever reached him.
    app.create_ok(&bob, "bob live").await;
    let seen = b.changes_until(|p| has_task(p, "bob live")).await;
    assert_eq!(titles(&seen), ["bob live"], "{seen:?}");
    assert!(
        seen.iter()
            .all(|p| p["deleted"].as_array().unwrap().is_empty())
    );
}

async fn last_event_id_replays_what_was_missed(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let token = app.token("carol");
    let kept = app.create_ok(&token, "before").await;
    let (sse, cursor) = open_ready(&app, &token).await;
    drop(sse);
    // `ready` names the change feed's current cursor.
    let res = app
        .request(
            reqwest::Method::GET,
            &format!("/api/tasks/changes?since={cursor}"),
            Some(&token),
            None,
        )
        .await;
    let feed: Value = res.json().await.unwrap();
    assert_eq!(feed["cursor"], cursor.as_str());
    assert_eq!(feed["tasks"], json!([]));

    // While disconnected: a create, an update, a delete.
    let created = app.create_ok(&token, "while away").await;
    let res = app
        .update(
            &token,
            created["id"].as_i64().unwrap(),
            &json!({"title": "while away, renamed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.delete(&token, kept["id"].as_i64().unwrap())
            .await
            .status(),
        204
    );

    let mut sse = Sse::open(&app, &token, Some(&cursor)).await;
    let replay = sse.changes_until(|p| p["has_more"] == false).await;
    assert_eq!(titles(&replay), ["while away, renamed"]);
    let deleted: Vec<&Value> = replay
        .iter()
        .flat_map(|p| p["deleted"].as_array().unwrap().iter())
        .collect();
    assert_eq!(deleted, [&kept["id"]]);

    // Then live.
    app.create_ok(&token, "after").await;
    sse.changes_until(|p| has_task(p, "after")).await;

    // A cursor that is not one: 400 with the envelope.
    let res = Sse::request(&app, &token, Some("not-a-cursor")).await;
    assert_error(res, 400, "validation_error").await;
}

on_both_backends!(
    subscriber_receives_its_own_changes_only,
    last_event_id_replays_what_was_missed,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_the_future_gets_reset_then_live() {
    let app = spawn(Backend::Sqlite, &[]).await;
    let token = app.token("dave");
    app.create_ok(&token, "one").await;
    let mut sse = Sse::open(&app, &token, Some("999999")).await;
    let reset = sse.event().await;
    assert_eq!(reset.event, "reset", "{reset:?}");
    assert_eq!(reset.json()["cursor"], reset.id.clone().unwrap());
    app.create_ok(&token, "two").await;
    let seen = sse.changes_until(|p| has_task(p, "two")).await;
    assert_eq!(titles(&seen), ["two"], "live from the current cursor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_comments() {
    let app = spawn(Backend::Sqlite, &[("SSE_HEARTBEAT_INTERVAL", "0.1")]).await;
    let (mut sse, _) = open_ready(&app, &app.token("erin")).await;
    let beat = sse.next().await.unwrap();
    assert!(beat.comment, "{beat:?}");
    let beat = sse.next().await.unwrap();
    assert!(beat.comment, "{beat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_user_and_in_total() {
    let app = spawn(
        Backend::Sqlite,
        &[
            ("SSE_MAX_STREAMS", "3"),
            ("SSE_MAX_STREAMS_PER_USER", "2"),
            ("SSE_HEARTBEAT_INTERVAL", "0.1"),
        ],
    )
    .await;
    let frank = app.token("frank");
    let (first, _) = open_ready(&app, &frank).await;
    let _second = open_ready(&app, &frank).await;
    let res = Sse::request(&app, &frank, None).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "too_many_streams").await;

    let _other = open_ready(&app, &app.token("gina")).await;
    let res = Sse::request(&app, &app.token("hank"), None).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 503, "service_unavailable").await;

    // A closed stream frees its place (noticed at its next heartbeat).
    drop(first);
    let mut status = 0;
    for _ in 0..200 {
        let res = Sse::request(&app, &frank, None).await;
        status = res.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "a place was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires() {
    let app = spawn(Backend::Sqlite, &[]).await;
    let token = sign(&json!({"sub": "ivan", "exp": now() + 2}));
    let (mut sse, _) = open_ready(&app, &token).await;
    let expired = sse.event().await;
    assert_eq!(expired.event, "expired", "{expired:?}");
    assert!(sse.next().await.is_none(), "the stream ended");
    // Reconnecting with the expired token is refused.
    let res = Sse::request(&app, &token, Some("0")).await;
    assert_eq!(res.status(), 401);
}

/// PostgreSQL: a write through instance A reaches a stream on instance B
/// (the trigger's NOTIFY, B's listener), and after B's listener connection
/// is killed, a write made meanwhile still arrives (B reconnects and its
/// streams read the log again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_cross_instances_and_survive_listener_reconnects() {
    let (db, url) = TestDb::create(Backend::Postgres).await;
    let TestDb::Postgres { name } = &db else {
        unreachable!()
    };
    let name = name.clone();
    let db = Arc::new(db);
    let a = TestApp::spawn_on(Backend::Postgres, Arc::clone(&db), &url, &[]).await;
    let b = TestApp::spawn_on(Backend::Postgres, Arc::clone(&db), &url, &[]).await;
    let token = a.token("judy");
    let (mut sse, _) = open_ready(&b, &token).await;

    a.create_ok(&token, "through A").await;
    let seen = sse.changes_until(|p| has_task(p, "through A")).await;
    assert_eq!(titles(&seen), ["through A"]);

    let admin = crate::helpers::admin().await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'tasks-server-listener' AND datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 2, "one listener per instance");
    a.create_ok(&token, "while B reconnects").await;
    sse.changes_until(|p| has_task(p, "while B reconnects"))
        .await;
    a.create_ok(&token, "after").await;
    sse.changes_until(|p| has_task(p, "after")).await;
}

/// `task_sync.watched_until` of `user` as seconds since the epoch, and
/// whether it is still in the future; `None` without a row or a value.
async fn watched_until(db: &tokio_postgres::Client, user: &str) -> Option<(f64, bool)> {
    db.query_opt(
        "SELECT extract(epoch FROM watched_until)::float8, watched_until > now()
         FROM task_sync WHERE user_id = $1 AND watched_until IS NOT NULL",
        &[&user],
    )
    .await
    .unwrap()
    .map(|row| (row.get(0), row.get(1)))
}

/// Polls the database until `done` holds for `user`'s registration (at most
/// `EVENT_TIMEOUT`, reached only when something is broken).
async fn until_watch(
    db: &tokio_postgres::Client,
    user: &str,
    what: &str,
    done: impl Fn(Option<(f64, bool)>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !done(watched_until(db, user).await) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PostgreSQL: the triggers notify only for users someone watches. A
/// stream registers its user before its first read; its instance renews
/// the registration while it is open (`SSE_WATCH_TTL` 2 s here, renewed
/// every second), so writes through another instance keep arriving after
/// the first registration ran out; once the stream closes the
/// registration runs out and the user's writes notify no more (the next
/// notification delivered is another, watched, user's: they arrive in
/// commit order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_their_user_watched_until_they_close() {
    let (db, url) = TestDb::create(Backend::Postgres).await;
    let TestDb::Postgres { name } = &db else {
        unreachable!()
    };
    let direct = with_database(&admin_url(), name);
    let db = Arc::new(db);
    let a = TestApp::spawn_on(Backend::Postgres, Arc::clone(&db), &url, &[]).await;
    let b = TestApp::spawn_on(
        Backend::Postgres,
        Arc::clone(&db),
        &url,
        &[("SSE_WATCH_TTL", "2"), ("SSE_HEARTBEAT_INTERVAL", "0.5")],
    )
    .await;
    let probe = crate::helpers::connect_pg(&direct).await;
    let kate = a.token("kate");
    assert_eq!(watched_until(&probe, "kate").await, None);

    let (mut sse, _) = open_ready(&b, &kate).await;
    let (first, live) = watched_until(&probe, "kate")
        .await
        .expect("registered when the stream opened");
    assert!(live);
    until_watch(&probe, "kate", "the registration was never renewed", |w| {
        w.is_some_and(|(until, _)| until > first)
    })
    .await;
    // Past the end of the first registration (database time).
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let past: bool = probe
            .query_one("SELECT now() > to_timestamp($1)", &[&first])
            .await
            .unwrap()
            .get(0);
        if past {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.create_ok(&kate, "through A, later").await;
    sse.changes_until(|p| has_task(p, "through A, later")).await;

    drop(sse);
    until_watch(
        &probe,
        "kate",
        "the registration outlived the stream",
        |w| w.is_some_and(|(_, live)| !live),
    )
    .await;
    let (_listener, mut pokes) = crate::changes::listen(&direct).await;
    a.create_ok(&kate, "nobody watches").await;
    let liam = a.token("liam");
    let (mut other, _) = open_ready(&b, &liam).await;
    a.create_ok(&liam, "watched").await;
    assert_eq!(pokes.recv().await.unwrap(), "1 liam");
    other.changes_until(|p| has_task(p, "watched")).await;
}

/// A revoked session (Better Auth's sign-out deletes its row) ends the
/// stream at the next re-verification; here through the session cookie, as
/// a browser's `EventSource` sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_session_is_revoked() {
    const TOKEN: &str = "LiveSessionTokenLiveSessionToken";
    let (_auth_db, auth_url, auth) =
        crate::helpers::auth_database(Backend::Postgres, crate::helpers::BETTER_AUTH_SCHEMA).await;
    auth.batch_execute(&format!(
        r#"INSERT INTO "user" ("id", "name", "email", "emailVerified") VALUES ('kim', 'n', 'k@example.com', false);
           INSERT INTO "session" ("id", "expiresAt", "token", "updatedAt", "userId")
           VALUES ('s1', now() + interval '1 hour', '{TOKEN}', now(), 'kim');"#
    ))
    .await
    .unwrap();
    let app = spawn(
        Backend::Sqlite,
        &[
            ("BETTER_AUTH_DATABASE_URL", &auth_url),
            ("BETTER_AUTH_SECRET", crate::helpers::SECRET),
            ("AUTH_COOKIE", "true"),
            ("SESSION_CACHE_TTL_SECS", "0"),
            ("SSE_REVERIFY_INTERVAL", "0.2"),
        ],
    )
    .await;
    let cookie = format!(
        "cookie:better-auth.session_token={}",
        crate::sessions::signed_cookie_value(TOKEN)
    );
    let (mut sse, _) = open_ready(&app, &cookie).await;
    auth.batch_execute(r#"DELETE FROM "session" WHERE "id" = 's1'"#)
        .await
        .unwrap();
    let expired = sse.event().await;
    assert_eq!(expired.event, "expired", "{expired:?}");
    assert!(sse.next().await.is_none(), "the stream ended");
}

/// A `fetch`-based SSE client on the frontend's origin sends
/// `Authorization` and `Last-Event-ID`: both pass the preflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_allows_last_event_id() {
    let app = spawn(Backend::Sqlite, &[]).await;
    let res = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/tasks/events"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization,last-event-id",
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("last-event-id"), "{allowed}");
    assert!(allowed.contains("authorization"), "{allowed}");
}
