//! Bounds a hostile or heavy user cannot push past: long lists stream in
//! batches and stay complete, the per-user task limit is exact under
//! concurrency, one odd stored row never fails a list, a timed-out query is
//! cancelled on the server (backends never pile up), and a full disk is a
//! 503 the service recovers from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, admin_url, assert_error};
use crate::on_both_backends;

on_both_backends!(
    long_lists_stream_in_batches_and_stay_complete,
    task_limit_is_409_and_exact_under_concurrency,
    concurrent_writes_fail_only_the_refused_requests,
    rows_todays_rules_reject_do_not_break_the_list,
);

async fn pg(url: &str) -> tokio_postgres::Client {
    crate::helpers::connect_pg(url).await
}

/// The test database as the service sees it, but directly (not through
/// PgBouncer).
fn direct_url(app: &TestApp) -> String {
    let name = app.database_url.rsplit('/').next().unwrap_or_default();
    let admin = admin_url();
    let (prefix, _) = admin.rsplit_once('/').expect("admin url has a database");
    format!("{prefix}/{name}")
}

/// Runs SQL against the app's database, whatever the backend.
async fn execute(app: &TestApp, sql: &str) {
    match app.backend {
        Backend::Sqlite => {
            use diesel::Connection as _;
            use diesel::connection::SimpleConnection as _;
            let path = app
                .database_url
                .strip_prefix("sqlite://")
                .expect("sqlite url")
                .to_owned();
            let sql = sql.to_owned();
            tokio::task::spawn_blocking(move || {
                let mut conn = diesel::sqlite::SqliteConnection::establish(&path).unwrap();
                conn.batch_execute("PRAGMA busy_timeout = 5000;").unwrap();
                conn.batch_execute(&sql).unwrap();
            })
            .await
            .unwrap();
        }
        Backend::Postgres | Backend::PgBouncer => {
            pg(&direct_url(app)).await.batch_execute(sql).await.unwrap();
        }
    }
}

async fn long_lists_stream_in_batches_and_stay_complete(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    // A short list is one ordinary body, as it always was.
    app.create_ok(&bob, "bob's only task").await;
    let res = app.list(&bob, "").await;
    assert!(res.headers().get("content-length").is_some());
    assert_eq!(res.json::<Vec<Value>>().await.unwrap().len(), 1);

    // 700 tasks: several batches of the streamed path (the first holds 128),
    // with descriptions large enough for more than one chunk per batch.
    let description = "d".repeat(2_000);
    let mut ids = Vec::new();
    for chunk in (0..700).collect::<Vec<_>>().chunks(25) {
        let bodies: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"title": format!("task {i}"), "description": description}))
            .collect();
        let creates = bodies.iter().map(|body| app.create(&alice, body));
        for res in futures_util::future::join_all(creates).await {
            assert_eq!(res.status(), 201);
            let task: Value = res.json().await.unwrap();
            ids.push(task["id"].as_i64().unwrap());
        }
    }
    for id in ids.iter().step_by(3) {
        assert_eq!(app.toggle(&alice, id).await.status(), 200);
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));

    let res = app.list(&alice, "").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/json"
    );
    let listed: Vec<Value> = res.json().await.unwrap();
    let listed_ids: Vec<i64> = listed.iter().map(|t| t["id"].as_i64().unwrap()).collect();
    assert_eq!(listed_ids, ids, "every task once, newest first");
    assert!(listed.iter().all(|t| t["user_id"] == "alice"));
    assert!(
        listed
            .iter()
            .all(|t| t["description"] == description.as_str())
    );

    let completed: Vec<Value> = app
        .list(&alice, "?status=completed")
        .await
        .json()
        .await
        .unwrap();
    let active: Vec<Value> = app
        .list(&alice, "?status=active")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(completed.len(), ids.iter().step_by(3).count());
    assert_eq!(completed.len() + active.len(), ids.len());
    assert!(completed.iter().all(|t| t["completed"] == true));
    assert!(active.iter().all(|t| t["completed"] == false));
    assert!(
        completed
            .windows(2)
            .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64())
    );

    // The other user still sees only their own.
    assert_eq!(app.list_ok(&bob).await.len(), 1);
}

/// Creates, toggles, updates and deletes of many clients at once (on SQLite
/// they share group-commit batches), with refused requests among them: a
/// create over the task limit (409) and an update of another user's task
/// (404). Only those fail; every other write is answered and stored.
async fn concurrent_writes_fail_only_the_refused_requests(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("MAX_TASKS_PER_USER", "4")]).await;
    let users: Vec<String> = (0..8).map(|i| app.token(&format!("user{i}"))).collect();
    let full = app.token("full");
    for i in 0..4 {
        app.create_ok(&full, &format!("full {i}")).await;
    }
    let mut owned = Vec::new();
    for token in &users {
        let mut ids = Vec::new();
        for name in ["a", "b", "c"] {
            ids.push(app.create_ok(token, name).await["id"].clone());
        }
        owned.push(ids);
    }
    let foreign = owned[0][1].clone();
    let mut writes: Vec<futures_util::future::BoxFuture<'_, (&str, u16)>> = Vec::new();
    for (token, ids) in users.iter().zip(&owned) {
        let app = &app;
        writes.push(Box::pin(async move {
            let res = app.create(token, &json!({"title": "d"})).await;
            ("create", res.status().as_u16())
        }));
        writes.push(Box::pin(async move {
            ("toggle", app.toggle(token, &ids[0]).await.status().as_u16())
        }));
        writes.push(Box::pin(async move {
            let res = app.update(token, &ids[1], &json!({"title": "B"})).await;
            ("update", res.status().as_u16())
        }));
        writes.push(Box::pin(async move {
            ("delete", app.delete(token, &ids[2]).await.status().as_u16())
        }));
        if writes.len() == 16 {
            // In the middle of the burst: refused requests.
            writes.push(Box::pin(async {
                let res = app.create(&full, &json!({"title": "over"})).await;
                ("over the limit", res.status().as_u16())
            }));
            writes.push(Box::pin(async {
                let res = app
                    .update(&full, &foreign, &json!({"title": "theirs"}))
                    .await;
                ("foreign update", res.status().as_u16())
            }));
        }
    }
    for (what, status) in futures_util::future::join_all(writes).await {
        let want = match what {
            "create" => 201,
            "toggle" | "update" => 200,
            "delete" => 204,
            "over the limit" => 409,
            _ => 404,
        };
        assert_eq!(status, want, "{what}");
    }
    for (token, ids) in users.iter().zip(&owned) {
        let tasks = app.list_ok(token).await;
        let titles: Vec<&str> = tasks.iter().map(|t| t["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["d", "B", "a"]);
        assert_eq!(tasks[2]["id"], ids[0]);
        assert_eq!(tasks[2]["completed"], true);
    }
    assert_eq!(app.list_ok(&full).await.len(), 4);
}

async fn task_limit_is_409_and_exact_under_concurrency(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("MAX_TASKS_PER_USER", "5")]).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let bodies: Vec<Value> = (0..20)
        .map(|i| json!({ "title": format!("t{i}") }))
        .collect();
    let creates = bodies.iter().map(|body| app.create(&alice, body));
    let mut created = 0;
    for res in futures_util::future::join_all(creates).await {
        match res.status().as_u16() {
            201 => created += 1,
            409 => {
                let body = assert_error(res, 409, "task_limit_reached").await;
                assert!(body["detail"].as_str().unwrap().contains('5'));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 5, "exactly the limit, however many raced");
    let tasks = app.list_ok(&alice).await;
    assert_eq!(tasks.len(), 5);
    // Other users have their own allowance.
    assert_eq!(
        app.create(&bob, &json!({"title": "mine"})).await.status(),
        201
    );
    // Deleting frees a slot; a missing or foreign id frees nothing.
    assert_eq!(app.delete(&bob, &tasks[0]["id"]).await.status(), 404);
    assert_eq!(app.delete(&alice, 999_999).await.status(), 404);
    assert_error(
        app.create(&alice, &json!({"title": "over"})).await,
        409,
        "task_limit_reached",
    )
    .await;
    assert_eq!(app.delete(&alice, &tasks[0]["id"]).await.status(), 204);
    assert_eq!(
        app.create(&alice, &json!({"title": "again"}))
            .await
            .status(),
        201
    );
    assert_error(
        app.create(&alice, &json!({"title": "over"})).await,
        409,
        "task_limit_reached",
    )
    .await;
    assert_eq!(app.list_ok(&alice).await.len(), 5);
}

async fn rows_todays_rules_reject_do_not_break_the_list(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice");
    app.create_ok(&alice, "fine").await;
    // The constraints now repeat the domain's rules, so the database itself
    // refuses a blank title...
    let insert = "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at) \
                  VALUES ('alice', '   ', NULL, FALSE, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')";
    let refused = match backend {
        Backend::Sqlite => {
            let app_url = app.database_url.clone();
            tokio::task::spawn_blocking(move || {
                use diesel::Connection as _;
                use diesel::connection::SimpleConnection as _;
                let path = app_url.strip_prefix("sqlite://").unwrap();
                let mut conn = diesel::sqlite::SqliteConnection::establish(path).unwrap();
                conn.batch_execute(insert).is_err()
            })
            .await
            .unwrap()
        }
        _ => pg(&direct_url(&app))
            .await
            .batch_execute(insert)
            .await
            .is_err(),
    };
    assert!(refused, "a blank title violates the CHECK constraint");
    // ...so such a row only exists when someone bypassed the constraints.
    let bypass = match backend {
        Backend::Sqlite => format!("PRAGMA ignore_check_constraints = ON; {insert};"),
        _ => format!("ALTER TABLE tasks DROP CONSTRAINT tasks_title_check; {insert};"),
    };
    execute(&app, &bypass).await;
    let tasks = app.list_ok(&alice).await;
    assert_eq!(
        tasks.len(),
        2,
        "the odd row is served as stored, the rest too"
    );
    assert_eq!(tasks[0]["title"], "   ");
    assert_eq!(tasks[1]["title"], "fine");
    // It can be read, fixed and deleted like any other.
    let id = &tasks[0]["id"];
    assert_eq!(app.get(&alice, id).await.status(), 200);
    let fixed = app
        .request(
            reqwest::Method::PUT,
            &format!("/api/tasks/{id}"),
            Some(&alice),
            Some(&json!({"title": "repaired"})),
        )
        .await;
    assert_eq!(fixed.status(), 200);
    assert_eq!(app.delete(&alice, id).await.status(), 204);
}

/// `LOCK TABLE tasks` held past the query timeout under 40 concurrent
/// lists: every timed-out query is cancelled on the server, so the service's
/// backends (by `application_name`) never exceed its pool, and other clients
/// of the server are never refused. Before, each timeout left its backend
/// waiting on the lock and the pool opened another: 16, 32, 48, ... 98.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_queries_are_cancelled_and_backends_stay_within_the_pool() {
    const POOL: i64 = 4;
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("DATABASE_POOL_SIZE", "4"),
            ("DATABASE_QUERY_TIMEOUT", "1"),
            ("DATABASE_CONNECT_TIMEOUT", "2"),
        ],
    )
    .await;
    let token = app.token("alice");
    app.create_ok(&token, "before").await;
    let db_name = app.database_url.rsplit('/').next().unwrap().to_owned();

    let locker = pg(&app.database_url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        let monitor = pg(&admin_url()).await;
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let row = monitor
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = $1 AND application_name = 'tasks-server'",
                        &[&db_name],
                    )
                    .await
                    .unwrap();
                peak.fetch_max(row.get::<_, i64>(0), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // 40 clients listing in a loop for about 4 query timeouts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let clients = (0..40).map(|_| {
        let (app, token) = (&app, &token);
        async move {
            let mut unavailable = 0;
            while tokio::time::Instant::now() < deadline {
                let res = app.list(token, "").await;
                match res.status().as_u16() {
                    503 => unavailable += 1,
                    200 => {}
                    other => panic!("unexpected status {other} while the table is locked"),
                }
            }
            unavailable
        }
    });
    let unavailable: usize = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .sum();
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    assert!(
        unavailable >= 40,
        "the lock made lists time out ({unavailable} 503s)"
    );
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak >= 1, "the sampler saw the service's backends");
    assert!(
        peak <= POOL,
        "backends peaked at {peak}, above the pool of {POOL}"
    );

    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(app.list(&token, "").await.status(), 200);
}

/// SQLite on a 600 KB tmpfs: once the disk is full, writes are 503 with
/// `Retry-After` (never 500), `/ready` says so, nothing stored is lost, and
/// the service recovers by itself when space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_and_ready_reports_it_until_space_returns() {
    let dir = std::env::temp_dir().join(format!("tasks_full_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=600k", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs and needs root (CI runs as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _unmount = Unmount(dir.clone());
    // Ballast to free later, so that space can come back.
    std::fs::write(dir.join("ballast"), vec![0u8; 150 * 1024]).unwrap();

    let url = format!("sqlite://{}", dir.join("tasks.db").display());
    let app = TestApp::spawn_with(Backend::Sqlite, &[("DATABASE_URL", url.as_str())]).await;
    let token = app.token("alice");
    let description = "x".repeat(9_000);
    let mut stored = Vec::new();
    let mut full = None;
    for i in 0..400 {
        let res = app
            .create(
                &token,
                &json!({"title": format!("t{i}"), "description": description}),
            )
            .await;
        match res.status().as_u16() {
            201 => stored.push(res.json::<Value>().await.unwrap()["id"].clone()),
            _ => {
                full = Some(res);
                break;
            }
        }
    }
    let res = full.expect("the 600 KB disk filled up");
    assert!(res.headers().get("retry-after").is_some());
    assert_error(res, 503, "service_unavailable").await;
    assert!(!stored.is_empty());
    assert_eq!(
        app.probe("/ready").await,
        503,
        "/ready reports the full disk"
    );
    assert_eq!(app.probe("/health").await, 200);
    // Reads still work and nothing acknowledged is lost.
    assert_eq!(app.list_ok(&token).await.len(), stored.len());

    std::fs::remove_file(dir.join("ballast")).unwrap();
    let res = app.create(&token, &json!({"title": "after"})).await;
    assert_eq!(res.status(), 201, "writes succeed once space is back");
    assert_eq!(
        app.probe("/ready").await,
        200,
        "/ready recovers with the writes"
    );
    assert_eq!(app.list_ok(&token).await.len(), stored.len() + 1);
}

/// PostgreSQL out of space: the `tasks` table moved to a tablespace on a
/// 1 MB tmpfs (the server's own disk and WAL are untouched, so the server
/// itself never stops). Writes fail with SQLSTATE 53100 `could not extend
/// file`: 503, `/ready` 503, nothing lost, and recovery once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_out_of_disk_is_503_and_ready_reports_it() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("tasks_pgfull_{pid}"));
    let space = format!("tasks_t_space_{pid}");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .expect("id -u postgres")
            .stdout,
    )
    .unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size=1m,mode=0700,uid={}", uid.trim()),
            "tmpfs",
        ])
        .arg(&dir)
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs for a tablespace and needs root and a local PostgreSQL (CI has both)"
    );
    let admin = pg(&admin_url()).await;
    struct Cleanup(std::path::PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let (dir, space) = (self.0.clone(), self.1.clone());
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP TABLESPACE IF EXISTS {space}"))
                            .await;
                    }
                });
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&dir)
                    .status();
                let _ = std::fs::remove_dir_all(&dir);
            })
            .join();
        }
    }
    let _cleanup = Cleanup(dir.clone(), space.clone());
    admin
        .batch_execute(&format!("DROP TABLESPACE IF EXISTS {space}"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "CREATE TABLESPACE {space} LOCATION '{}'",
            dir.display()
        ))
        .await
        .unwrap();
    std::fs::write(dir.join("ballast"), vec![0u8; 300 * 1024]).unwrap();

    {
        let app = TestApp::spawn(Backend::Postgres).await;
        execute(
            &app,
            &format!(
                "ALTER TABLE tasks SET TABLESPACE {space};
                 ALTER INDEX tasks_pkey SET TABLESPACE {space};
                 ALTER INDEX idx_task_user_id SET TABLESPACE {space};"
            ),
        )
        .await;
        let token = app.token("alice");
        // Incompressible descriptions, so TOAST cannot squeeze them.
        let mut stored = 0usize;
        let mut full = None;
        for i in 0..2_000u64 {
            let description: String = (0..9_000u64)
                .map(|j| {
                    let x = (i * 9_000 + j).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
                    char::from(b'0' + u8::try_from(x % 75).unwrap())
                })
                .collect();
            let res = app
                .create(
                    &token,
                    &json!({"title": format!("t{i}"), "description": description}),
                )
                .await;
            if res.status() == 201 {
                stored += 1;
            } else {
                full = Some(res);
                break;
            }
        }
        let res = full.expect("the 1 MB tablespace filled up");
        assert!(res.headers().get("retry-after").is_some());
        assert_error(res, 503, "service_unavailable").await;
        assert!(stored > 0);
        assert_eq!(
            app.probe("/ready").await,
            503,
            "/ready reports the full disk"
        );
        assert_eq!(app.list_ok(&token).await.len(), stored, "nothing lost");

        std::fs::remove_file(dir.join("ballast")).unwrap();
        let res = app.create(&token, &json!({"title": "after"})).await;
        assert_eq!(res.status(), 201, "writes succeed once space is back");
        assert_eq!(app.probe("/ready").await, 200);
    }
    // The test database was dropped with the app (TestDb drops it
    // synchronously); the guard then drops the tablespace and unmounts.
}
