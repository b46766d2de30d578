//! The change feed, `GET /api/tasks/changes`: every write appears, pages
//! follow the cursor, deletions are tombstones, users are isolated, bad and
//! expired cursors, and concurrent writers never make a polling reader miss
//! a change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;

/// `GET /api/tasks/changes` with `since` and `limit` when given.
async fn changes(app: &TestApp, token: &str, since: Option<&str>, limit: Option<u32>) -> Response {
    let mut query = Vec::new();
    if let Some(since) = since {
        query.push(format!("since={since}"));
    }
    if let Some(limit) = limit {
        query.push(format!("limit={limit}"));
    }
    let path = format!("/api/tasks/changes?{}", query.join("&"));
    app.request(Method::GET, &path, Some(token), None).await
}

/// One page, asserting 200 and its shape.
async fn page(app: &TestApp, token: &str, since: Option<&str>, limit: Option<u32>) -> Value {
    let res = changes(app, token, since, limit).await;
    assert_eq!(res.status(), 200, "since={since:?}");
    assert_eq!(
        res.headers().get("cache-control").unwrap(),
        "no-store",
        "a feed is never cached"
    );
    let body: Value = res.json().await.unwrap();
    assert!(
        body["tasks"].is_array() && body["deleted"].is_array(),
        "{body}"
    );
    assert!(
        body["cursor"].is_string() && body["has_more"].is_boolean(),
        "{body}"
    );
    body
}

/// What a client reconstructs from the feed.
#[derive(Default, Debug)]
struct Replica {
    cursor: Option<String>,
    tasks: BTreeMap<i64, Value>,
    /// Every id the feed reported as changed or created, and as deleted.
    seen: BTreeSet<i64>,
    deleted: BTreeSet<i64>,
    pages: usize,
}

impl Replica {
    fn apply(&mut self, body: &Value) {
        for task in body["tasks"].as_array().unwrap() {
            let id = task["id"].as_i64().unwrap();
            self.seen.insert(id);
            self.tasks.insert(id, task.clone());
        }
        for id in body["deleted"].as_array().unwrap() {
            let id = id.as_i64().unwrap();
            self.deleted.insert(id);
            self.tasks.remove(&id);
        }
        self.cursor = Some(body["cursor"].as_str().unwrap().to_owned());
        self.pages += 1;
    }

    /// Follows the cursor until `has_more` is false.
    async fn catch_up(&mut self, app: &TestApp, token: &str, limit: Option<u32>) {
        loop {
            let body = page(app, token, self.cursor.as_deref(), limit).await;
            self.apply(&body);
            if body["has_more"] == false {
                return;
            }
        }
    }

    fn state(&self) -> Vec<Value> {
        self.tasks.values().rev().cloned().collect()
    }
}

/// The caller's list, as the feed's full state is compared with it.
async fn listed(app: &TestApp, token: &str) -> Vec<Value> {
    app.list_ok(token).await
}

async fn every_write_kind_appears_once_with_its_latest_state(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice");

    // Nothing yet: an empty page at cursor 0.
    let empty = page(&app, &alice, None, None).await;
    assert_eq!(
        empty,
        json!({"tasks": [], "deleted": [], "cursor": "0", "has_more": false})
    );

    let mut sync = Replica::default();
    sync.catch_up(&app, &alice, None).await;

    let a = app.create_ok(&alice, "first").await;
    let b = app.create_ok(&alice, "second").await;
    let body = page(&app, &alice, sync.cursor.as_deref(), None).await;
    assert_eq!(
        body["tasks"],
        json!([a.clone(), b.clone()]),
        "creates, in order"
    );
    sync.apply(&body);

    // Each kind of write, then the feed since the last cursor.
    let id = a["id"].as_i64().unwrap();
    let put = app.update(&alice, id, &json!({"title": "renamed"})).await;
    assert_eq!(put.status(), 200);
    let put: Value = put.json().await.unwrap();
    let body = page(&app, &alice, sync.cursor.as_deref(), None).await;
    assert_eq!(body["tasks"], json!([put]));
    sync.apply(&body);

    let patch = app
        .request(
            Method::PATCH,
            &format!("/api/tasks/{id}"),
            Some(&alice),
            Some(&json!({"description": "now with details"})),
        )
        .await;
    assert_eq!(patch.status(), 200);
    let patch: Value = patch.json().await.unwrap();
    let body = page(&app, &alice, sync.cursor.as_deref(), None).await;
    assert_eq!(body["tasks"], json!([patch]));
    sync.apply(&body);

    let toggled: Value = app.toggle(&alice, id).await.json().await.unwrap();
    assert_eq!(toggled["completed"], true);
    let body = page(&app, &alice, sync.cursor.as_deref(), None).await;
    assert_eq!(body["tasks"], json!([toggled]));
    assert_eq!(body["deleted"], json!([]));
    sync.apply(&body);

    let b_id = b["id"].as_i64().unwrap();
    assert_eq!(app.delete(&alice, b_id).await.status(), 204);
    let body = page(&app, &alice, sync.cursor.as_deref(), None).await;
    assert_eq!(body["tasks"], json!([]));
    assert_eq!(body["deleted"], json!([b_id]));
    sync.apply(&body);

    // Nothing new: the same cursor again, an empty page.
    let cursor = sync.cursor.clone();
    let body = page(&app, &alice, cursor.as_deref(), None).await;
    assert_eq!(body["cursor"].as_str(), cursor.as_deref());
    assert_eq!(
        (body["tasks"].clone(), body["deleted"].clone()),
        (json!([]), json!([]))
    );

    assert_eq!(sync.state(), listed(&app, &alice).await);
    // A full sync is the current state, without tombstones, and ends at
    // the same cursor.
    let full = page(&app, &alice, None, None).await;
    assert_eq!(full["tasks"], json!([toggled]));
    assert_eq!(full["deleted"], json!([]));
    assert_eq!(full["cursor"].as_str(), cursor.as_deref());
    assert_eq!(page(&app, &alice, Some("0"), None).await, full);

    // The user-in-path alias serves the same feed; another user's id is a 404.
    let res = app
        .request(Method::GET, "/api/alice/tasks/changes", Some(&alice), None)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), full);
    let res = app
        .request(Method::GET, "/api/bob/tasks/changes", Some(&alice), None)
        .await;
    assert_error(res, 404, "not_found").await;
    // With a trailing slash, as every other route.
    let res = app
        .request(Method::GET, "/api/tasks/changes/", Some(&alice), None)
        .await;
    assert_eq!(res.status(), 200);
}

async fn pages_follow_the_cursor_until_has_more_is_false(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(app.create_ok(&alice, &format!("task {i}")).await["id"].clone());
    }
    let mut first = Replica::default();
    first.catch_up(&app, &alice, Some(3)).await;
    assert_eq!(first.pages, 3, "7 tasks in pages of 3");
    assert_eq!(first.state(), listed(&app, &alice).await);

    // Changes after a cursor are paged the same way, deletions included.
    assert_eq!(app.delete(&alice, &ids[0]).await.status(), 204);
    assert_eq!(app.delete(&alice, &ids[1]).await.status(), 204);
    assert_eq!(app.toggle(&alice, &ids[2]).await.status(), 200);
    for i in 7..10 {
        app.create_ok(&alice, &format!("task {i}")).await;
    }
    let mut pages = 0;
    let before = first.pages;
    first.catch_up(&app, &alice, Some(2)).await;
    pages += first.pages - before;
    assert_eq!(pages, 3, "6 changes in pages of 2");
    assert_eq!(first.state(), listed(&app, &alice).await);
    assert!(first.deleted.contains(&ids[0].as_i64().unwrap()));

    // A whole sync in pages of one ends where one big page ends.
    let mut small = Replica::default();
    small.catch_up(&app, &alice, Some(1)).await;
    let mut big = Replica::default();
    big.catch_up(&app, &alice, Some(1000)).await;
    assert_eq!(big.pages, 1);
    assert_eq!(small.state(), big.state());
    assert_eq!(small.cursor, big.cursor);
    assert_eq!(small.cursor, first.cursor);
}

async fn a_task_changed_then_deleted_is_only_a_deletion(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice");
    let keep = app.create_ok(&alice, "keep").await;
    let mut sync = Replica::default();
    sync.catch_up(&app, &alice, None).await;

    let gone = app.create_ok(&alice, "short-lived").await;
    let id = gone["id"].as_i64().unwrap();
    assert_eq!(
        app.update(&alice, id, &json!({"title": "edited"}))
            .await
            .status(),
        200
    );
    assert_eq!(app.toggle(&alice, id).await.status(), 200);
    assert_eq!(app.delete(&alice, id).await.status(), 204);
    let body = page(&app, &alice, sync.cursor.as_deref(), None).await;
    assert_eq!(body["tasks"], json!([]));
    assert_eq!(body["deleted"], json!([id]));

    // A full sync never mentions it.
    let full = page(&app, &alice, None, None).await;
    assert_eq!(full["tasks"], json!([keep]));
    assert_eq!(full["deleted"], json!([]));
}

async fn another_users_changes_never_appear_whatever_the_cursor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let mut alice_ids = BTreeSet::new();
    for i in 0..6 {
        let id = app.create_ok(&alice, &format!("alice {i}")).await["id"]
            .as_i64()
            .unwrap();
        alice_ids.insert(id);
    }
    let first = *alice_ids.first().unwrap();
    assert_eq!(app.toggle(&alice, first).await.status(), 200);
    assert_eq!(app.delete(&alice, first).await.status(), 204);
    let b = app.create_ok(&bob, "bob's").await;
    let b_id = b["id"].as_i64().unwrap();

    let mut alice_sync = Replica::default();
    alice_sync.catch_up(&app, &alice, None).await;
    let alice_head: u64 = alice_sync.cursor.as_deref().unwrap().parse().unwrap();

    // Every cursor up to past alice's head: bob sees his own task or
    // nothing, or is told to reset; never an id of alice's.
    for since in 0..=alice_head + 2 {
        let res = changes(&app, &bob, Some(&since.to_string()), None).await;
        if res.status() == 410 {
            assert_error(res, 410, "sync_reset_required").await;
            continue;
        }
        assert_eq!(res.status(), 200, "since={since}");
        let body: Value = res.json().await.unwrap();
        for task in body["tasks"].as_array().unwrap() {
            assert_eq!(task["user_id"], "bob", "{body}");
            assert_eq!(task["id"], b_id, "{body}");
        }
        for id in body["deleted"].as_array().unwrap() {
            assert!(!alice_ids.contains(&id.as_i64().unwrap()), "{body}");
        }
    }
    let full = page(&app, &bob, None, None).await;
    assert_eq!(full["tasks"], json!([b]));
}

async fn bad_cursors_and_limits_are_400_and_future_cursors_410(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice");
    app.create_ok(&alice, "one").await;
    for since in [
        "-1",
        "abc",
        "1.5",
        "",
        "%201",
        "99999999999999999999",
        "0x1",
    ] {
        let res = app
            .request(
                Method::GET,
                &format!("/api/tasks/changes?since={since}"),
                Some(&alice),
                None,
            )
            .await;
        assert_error(res, 400, "validation_error").await;
    }
    for limit in ["0", "1001", "x", "-5"] {
        let res = app
            .request(
                Method::GET,
                &format!("/api/tasks/changes?limit={limit}"),
                Some(&alice),
                None,
            )
            .await;
        assert_error(res, 400, "validation_error").await;
    }
    // A cursor ahead of the log (a restored database, or a made-up number).
    let res = changes(&app, &alice, Some("1000"), None).await;
    let body = assert_error(res, 410, "sync_reset_required").await;
    assert!(
        body["detail"].as_str().unwrap().contains("sync again"),
        "{body}"
    );
    // No token: 401, as everywhere.
    let res = app
        .request(Method::GET, "/api/tasks/changes", None, None)
        .await;
    assert_error(res, 401, "authentication_error").await;
}

/// Follows `since` until the clean-up (running every 0.1 s) makes it a 410.
async fn until_reset(app: &TestApp, token: &str, since: &str) {
    for _ in 0..600 {
        let res = changes(app, token, Some(since), None).await;
        if res.status() == 410 {
            assert_error(res, 410, "sync_reset_required").await;
            return;
        }
        assert_eq!(res.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the cursor {since} was never reset");
}

async fn tombstones_beyond_the_cap_expire_and_a_full_sync_recovers(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("MAX_TOMBSTONES_PER_USER", "1"),
            ("CHANGE_LOG_CLEANUP_INTERVAL", "0.1"),
        ],
    )
    .await;
    let alice = app.token("alice");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create_ok(&alice, &format!("task {i}")).await["id"].clone());
    }
    let mut old = Replica::default();
    old.catch_up(&app, &alice, None).await;
    let stale = old.cursor.clone().unwrap();
    assert_eq!(app.delete(&alice, &ids[0]).await.status(), 204);
    assert_eq!(app.delete(&alice, &ids[1]).await.status(), 204);
    // Two deletions, one kept: a client that has not seen the first is told
    // to start again.
    until_reset(&app, &alice, &stale).await;

    // The client starts again, in pages of one: the three remaining tasks
    // are older than the forgotten deletion, yet paging through them is
    // never reset (they were given versions above it).
    let mut fresh = Replica::default();
    fresh.catch_up(&app, &alice, Some(1)).await;
    assert_eq!(fresh.state(), listed(&app, &alice).await);
    assert_eq!(fresh.state().len(), 3);
    // And it goes on from there as usual.
    assert_eq!(app.delete(&alice, &ids[2]).await.status(), 204);
    let body = page(&app, &alice, fresh.cursor.as_deref(), None).await;
    assert_eq!(body["deleted"], json!([ids[2]]));
}

async fn deletions_older_than_the_retention_expire(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("CHANGE_LOG_RETENTION_SECS", "1"),
            ("CHANGE_LOG_CLEANUP_INTERVAL", "0.1"),
        ],
    )
    .await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let a = app.create_ok(&alice, "to delete").await;
    app.create_ok(&alice, "to keep").await;
    let mut sync = Replica::default();
    sync.catch_up(&app, &alice, None).await;
    let stale = sync.cursor.clone().unwrap();
    let mut bobs = Replica::default();
    app.create_ok(&bob, "bob's").await;
    bobs.catch_up(&app, &bob, None).await;
    assert_eq!(app.delete(&alice, &a["id"]).await.status(), 204);
    until_reset(&app, &alice, &stale).await;
    // Only the owner of the expired deletion is reset.
    let body = page(&app, &bob, bobs.cursor.as_deref(), None).await;
    assert_eq!(body["tasks"], json!([]));
    let mut fresh = Replica::default();
    fresh.catch_up(&app, &alice, None).await;
    assert_eq!(fresh.state(), listed(&app, &alice).await);
}

/// A tiny deterministic generator, so a failure replays.
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

async fn concurrent_writers_never_make_a_polling_reader_miss_a_change(backend: Backend) {
    const WRITERS: u64 = 4;
    const WRITES: u64 = 30;
    let app = Arc::new(TestApp::spawn(backend).await);
    let alice = app.token("alice");
    let mut pool = Vec::new();
    for i in 0..4 {
        pool.push(
            app.create_ok(&alice, &format!("shared {i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let pool = Arc::new(std::sync::Mutex::new(pool));
    // The reader starts after the shared tasks exist: every write from now
    // on must reach it.
    let mut reader = Replica::default();
    reader.catch_up(&app, &alice, Some(3)).await;

    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (app, alice, done) = (Arc::clone(&app), alice.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut polls = 0;
            while !done.load(Ordering::SeqCst) {
                reader.catch_up(&app, &alice, Some(3)).await;
                polls += 1;
            }
            (reader, polls)
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (app, alice, pool) = (Arc::clone(&app), alice.clone(), Arc::clone(&pool));
        writers.push(tokio::spawn(async move {
            let mut seed = w + 1;
            let (mut created, mut deleted) = (Vec::new(), Vec::new());
            for i in 0..WRITES {
                let pick = {
                    let ids = pool.lock().unwrap();
                    ids.get(usize::try_from(next(&mut seed)).unwrap() % ids.len().max(1))
                        .copied()
                };
                let kind = (w + i) % 5;
                match (kind, pick) {
                    (0, _) | (_, None) => {
                        let task = app.create_ok(&alice, &format!("w{w} #{i}")).await;
                        let id = task["id"].as_i64().unwrap();
                        created.push(id);
                        pool.lock().unwrap().push(id);
                    }
                    (1, Some(id)) => {
                        let res = app
                            .update(&alice, id, &json!({"title": format!("w{w} put {i}")}))
                            .await;
                        assert!([200, 404].contains(&res.status().as_u16()));
                    }
                    (2 | 3, Some(id)) => {
                        let res = app.toggle(&alice, id).await;
                        assert!([200, 404].contains(&res.status().as_u16()));
                    }
                    (_, Some(id)) => {
                        let res = app.delete(&alice, id).await;
                        assert!([204, 404].contains(&res.status().as_u16()));
                        if res.status() == 204 {
                            deleted.push(id);
                            pool.lock().unwrap().retain(|x| *x != id);
                        }
                    }
                }
            }
            (created, deleted)
        }));
    }
    let (mut created, mut deleted) = (BTreeSet::new(), BTreeSet::new());
    for writer in writers {
        let (c, d) = writer.await.unwrap();
        created.extend(c);
        deleted.extend(d);
    }
    done.store(true, Ordering::SeqCst);
    let (mut reader, polls) = poller.await.unwrap();
    reader.catch_up(&app, &alice, Some(3)).await;

    assert!(polls > 0);
    assert!(!deleted.is_empty() && !created.is_empty());
    // The reconstructed state is the real one, field for field.
    assert_eq!(reader.state(), listed(&app, &alice).await);
    // Every deletion reached it as a deletion; every created task reached
    // it, as a task or (created and deleted between two polls) a deletion.
    assert!(
        deleted.is_subset(&reader.deleted),
        "missed deletions: {:?}",
        deleted.difference(&reader.deleted).collect::<Vec<_>>()
    );
    for id in &created {
        assert!(
            reader.seen.contains(id) || reader.deleted.contains(id),
            "created task {id} never reached the reader"
        );
    }
}

/// The trap of sequences and timestamps, made deterministic on PostgreSQL: a
/// write behind the service's back stays uncommitted while a later write of
/// the same user arrives through the API. The later one must wait for the
/// owner's row lock (a sequence would let it commit first, and a reader
/// would move its cursor past the open one's version, missing it for good):
/// the reader sees neither until the first commits, then both, in order.
async fn an_open_transaction_holds_back_the_users_later_versions(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let alice = app.token("alice");
    let a = app.create_ok(&alice, "a").await["id"].as_i64().unwrap();
    let b = app.create_ok(&alice, "b").await["id"].as_i64().unwrap();
    let mut reader = Replica::default();
    reader.catch_up(&app, &alice, None).await;
    let before = reader.cursor.clone();

    let open = crate::helpers::connect_pg(&app.database_url).await;
    open.batch_execute(&format!(
        "BEGIN; UPDATE tasks SET title = 'behind the back' WHERE id = {a}"
    ))
    .await
    .unwrap();
    let toggle = {
        let (app, alice) = (Arc::clone(&app), alice.clone());
        tokio::spawn(async move { app.toggle(&alice, b).await.status().as_u16() })
    };
    // Until the toggle waits on the lock (pg_stat_activity says so).
    let probe = crate::helpers::connect_pg(&crate::helpers::admin_url()).await;
    let database = open
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    let mut waiting = false;
    for _ in 0..400 {
        let n: i64 = probe
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&database],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(waiting, "the toggle never waited for the owner's row lock");
    let body = page(&app, &alice, before.as_deref(), None).await;
    assert_eq!(
        body["tasks"],
        json!([]),
        "nothing is visible while the first write is open"
    );
    assert_eq!(body["cursor"].as_str(), before.as_deref());

    open.batch_execute("COMMIT").await.unwrap();
    assert_eq!(toggle.await.unwrap(), 200);
    let body = page(&app, &alice, before.as_deref(), None).await;
    let tasks = body["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{body}");
    assert_eq!(
        (tasks[0]["id"].as_i64(), tasks[1]["id"].as_i64()),
        (Some(a), Some(b))
    );
    assert_eq!(tasks[0]["title"], "behind the back");
    assert_eq!(tasks[1]["completed"], true);
}

/// A direct connection LISTENing on `tasks_changed`: its payloads, in
/// delivery (commit) order.
pub(crate) async fn listen(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use futures_util::StreamExt as _;
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                assert_eq!(n.channel(), "tasks_changed");
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client.batch_execute("LISTEN tasks_changed").await.unwrap();
    (client, rx)
}

/// The repository on the test's database, configured as the app's (through
/// PgBouncer without prepared statements), for calling the port directly.
fn store(backend: Backend, url: &str) -> tasks_store::DieselTaskStore {
    let mut pairs = vec![("DATABASE_URL", url)];
    if backend == Backend::PgBouncer {
        pairs.push(("DATABASE_PREPARED_STATEMENTS", "false"));
    }
    let settings = tasks_server::Settings::from_pairs(pairs).unwrap();
    tasks_store::DieselTaskStore::connect(&settings.store).unwrap()
}

/// Registers `users` as watched for ten minutes through the port.
async fn watch(backend: Backend, url: &str, users: &[&str]) {
    use tasks_ports::TaskRepository as _;
    let owners: Vec<_> = users
        .iter()
        .map(|u| tasks_domain::OwnerId::parse(u).unwrap())
        .collect();
    let store = store(backend, url);
    store
        .watch(&owners, std::time::Duration::from_secs(600))
        .await
        .unwrap();
    store.close();
}

/// The direct (non-pooled) URL of a test database.
fn direct_url(db: &crate::helpers::TestDb) -> String {
    match db {
        crate::helpers::TestDb::Postgres { name } => {
            crate::helpers::with_database(&crate::helpers::admin_url(), name)
        }
        crate::helpers::TestDb::Sqlite { .. } => unreachable!("PostgreSQL only"),
    }
}

/// Each committed change of a watched user pokes `tasks_changed` with
/// `<version> <owner>`, the version being the feed's cursor after it; a
/// database can turn the pokes off (`tasks.notify_changes = 'off'`), and
/// then none is sent. The live-updates listener parses exactly this payload.
async fn writes_notify_version_and_owner_unless_turned_off(backend: Backend) {
    let (db, url) = crate::helpers::TestDb::create(backend).await;
    let db = Arc::new(db);
    let app = TestApp::spawn_on(backend, Arc::clone(&db), &url, &[]).await;
    let alice = app.token("alice");
    let direct = direct_url(&db);
    let (_listener, mut pokes) = listen(&direct).await;
    watch(backend, &url, &["alice"]).await;

    let task = app.create_ok(&alice, "poke").await;
    assert_eq!(app.toggle(&alice, &task["id"]).await.status(), 200);
    assert_eq!(app.delete(&alice, &task["id"]).await.status(), 204);
    let mut sync = Replica::default();
    sync.catch_up(&app, &alice, None).await;
    assert_eq!(sync.cursor.as_deref(), Some("3"));
    for version in 1..=3 {
        assert_eq!(pokes.recv().await.unwrap(), format!("{version} alice"));
    }

    // Off for the database: new sessions (a fresh instance's pool) send
    // none. Behind PgBouncer the server connections outlive the instance and
    // keep their settings (docs/OPERATIONS.md), so this part is direct only.
    if backend == Backend::PgBouncer {
        return;
    }
    let admin = crate::helpers::admin().await;
    let name = direct.rsplit_once('/').unwrap().1;
    let name = name.split('?').next().unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET tasks.notify_changes = 'off'"
        ))
        .await
        .unwrap();
    app.stop().await;
    let quiet = TestApp::spawn_on(backend, Arc::clone(&db), &url, &[]).await;
    quiet.create_ok(&alice, "silent").await;
    // A session that turns it back on: its poke is the next one delivered,
    // so the silent create sent none (pokes arrive in commit order).
    let session = crate::helpers::connect_pg(&direct).await;
    session
        .batch_execute(
            "SET tasks.notify_changes = 'on'; INSERT INTO tasks (user_id, title) VALUES ('alice', 'loud')",
        )
        .await
        .unwrap();
    assert_eq!(pokes.recv().await.unwrap(), "5 alice");
}

/// Only watched users' writes notify (a notifying commit serialises on a
/// database-wide lock: unwatched writes must not pay for it). Notifications
/// arrive in commit order, so "the first one received is the watched
/// user's" proves that the unwatched writes before it sent none, without a
/// timed wait. Registering a user who never wrote creates a version 0 row
/// that the feed treats as no row at all; a shorter registration never
/// shortens a longer one; the user's writes notify from their first.
async fn only_watched_users_writes_notify(backend: Backend) {
    let (db, url) = crate::helpers::TestDb::create(backend).await;
    let direct = direct_url(&db);
    let app = TestApp::spawn_on(backend, Arc::new(db), &url, &[]).await;
    let (alice, bob, carol) = (app.token("alice"), app.token("bob"), app.token("carol"));
    let (_listener, mut pokes) = listen(&direct).await;

    // Nobody watches: creates, toggles, deletes and a write behind the
    // service's back send nothing.
    let task = app.create_ok(&bob, "unwatched").await;
    assert_eq!(app.toggle(&bob, &task["id"]).await.status(), 200);
    assert_eq!(app.delete(&bob, &task["id"]).await.status(), 204);
    app.create_ok(&alice, "unwatched too").await;
    let session = crate::helpers::connect_pg(&direct).await;
    session
        .batch_execute("INSERT INTO tasks (user_id, title) VALUES ('bob', 'psql')")
        .await
        .unwrap();

    // alice and carol (who never wrote) are watched from here on; a
    // duplicate in the list is harmless.
    watch(backend, &url, &["carol", "alice", "carol"]).await;
    let body = page(&app, &carol, None, None).await;
    assert_eq!(
        (body["tasks"].clone(), body["cursor"].clone()),
        (json!([]), json!("0")),
        "a registered user without writes has an empty feed at 0"
    );
    let res = changes(&app, &carol, Some("1"), None).await;
    assert_error(res, 410, "sync_reset_required").await;

    app.create_ok(&bob, "still unwatched").await;
    app.create_ok(&alice, "watched").await;
    assert_eq!(
        pokes.recv().await.unwrap(),
        "2 alice",
        "bob's writes and alice's earlier one sent nothing"
    );
    app.create_ok(&carol, "first").await;
    assert_eq!(pokes.recv().await.unwrap(), "1 carol");
    assert_eq!(page(&app, &carol, Some("0"), None).await["cursor"], "1");

    // A shorter registration (a zero TTL) leaves the longer one in place.
    {
        use tasks_ports::TaskRepository as _;
        let store = store(backend, &url);
        store
            .watch(
                &[tasks_domain::OwnerId::parse("alice").unwrap()],
                std::time::Duration::ZERO,
            )
            .await
            .unwrap();
        store.close();
    }
    app.create_ok(&bob, "unwatched again").await;
    app.create_ok(&alice, "still watched").await;
    assert_eq!(pokes.recv().await.unwrap(), "3 alice");

    // A registration that ran out: nothing again.
    session
        .batch_execute(
            "UPDATE task_sync SET watched_until = now() - interval '1 second' WHERE user_id = 'alice'",
        )
        .await
        .unwrap();
    app.create_ok(&alice, "expired").await;
    app.create_ok(&carol, "second").await;
    assert_eq!(pokes.recv().await.unwrap(), "2 carol");

    // The clean-up's step renumbers live tasks: it notifies like a write,
    // only a watched user (alice's 4 tasks move silently, carol's 2 loudly).
    session
        .batch_execute(
            "SELECT tasks_purge_changes('alice', 4); SELECT tasks_purge_changes('carol', 2)",
        )
        .await
        .unwrap();
    assert_eq!(pokes.recv().await.unwrap(), "4 carol");
    assert_eq!(page(&app, &alice, Some("4"), None).await["cursor"], "8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_only_watched_users_writes_notify() {
    only_watched_users_writes_notify(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_only_watched_users_writes_notify() {
    only_watched_users_writes_notify(Backend::PgBouncer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_notify_version_and_owner_unless_turned_off() {
    writes_notify_version_and_owner_unless_turned_off(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_writes_notify_version_and_owner_unless_turned_off() {
    writes_notify_version_and_owner_unless_turned_off(Backend::PgBouncer).await;
}

/// A database that had tasks before the change feed existed: the migration
/// numbers each user's tasks by id, so a full sync is the list, and later
/// changes continue from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_existing_tasks_are_backfilled_into_the_feed() {
    let (db, url) = crate::helpers::TestDb::create(Backend::Postgres).await;
    let old = crate::helpers::connect_pg(&url).await;
    old.batch_execute(concat!(
        include_str!("../../../../migrations/postgres/2026-11-25-000000_create_tasks/up.sql"),
        include_str!("../../../../migrations/postgres/2026-12-01-000000_bounded_tasks/up.sql"),
        "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL,
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20261125000000'), ('20261201000000');
         INSERT INTO tasks (user_id, title) VALUES ('alice', 'a1'), ('bob', 'b1'), ('alice', 'a2');
         INSERT INTO task_counts VALUES ('alice', 2), ('bob', 1);"
    ))
    .await
    .unwrap();
    let app = TestApp::spawn_on(Backend::Postgres, Arc::new(db), &url, &[]).await;
    let alice = app.token("alice");
    let mut sync = Replica::default();
    sync.catch_up(&app, &alice, Some(1)).await;
    assert_eq!(sync.state(), listed(&app, &alice).await);
    assert_eq!(sync.state().len(), 2);
    assert_eq!(sync.cursor.as_deref(), Some("2"));
    let a3 = app.create_ok(&alice, "a3").await;
    let body = page(&app, &alice, Some("2"), None).await;
    assert_eq!(body["tasks"], json!([a3]));
    assert_eq!(body["cursor"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_open_transaction_holds_back_the_users_later_versions() {
    an_open_transaction_holds_back_the_users_later_versions(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_an_open_transaction_holds_back_the_users_later_versions() {
    an_open_transaction_holds_back_the_users_later_versions(Backend::PgBouncer).await;
}

on_both_backends!(
    every_write_kind_appears_once_with_its_latest_state,
    pages_follow_the_cursor_until_has_more_is_false,
    a_task_changed_then_deleted_is_only_a_deletion,
    another_users_changes_never_appear_whatever_the_cursor,
    bad_cursors_and_limits_are_400_and_future_cursors_410,
    tombstones_beyond_the_cap_expire_and_a_full_sync_recovers,
    deletions_older_than_the_retention_expire,
    concurrent_writers_never_make_a_polling_reader_miss_a_change,
);
