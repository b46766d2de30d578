//! Read replicas against a real primary and a real streaming standby that
//! each test creates on free ports in a temp directory (`initdb`,
//! `pg_basebackup -R -X stream`), never touching the shared server.
//!
//! Where a read went is read off the standby itself: its `pg_stat_activity`
//! keeps each backend's last statement and when it started, so a service
//! connection whose last statement read `"tasks"` (the sampler's probes run
//! on their own connections and never name the table) is a read the standby
//! served.
//!
//! PostgreSQL refuses to run as root: as root the servers run as the
//! `postgres` user. The binaries come from `PG_BIN`, else `pg_config
//! --bindir`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message"
)]

#[path = "api/helpers.rs"]
mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use helpers::{Backend, TestApp, TestDb, free_port, token_for};
use serde_json::Value;

/// `DATABASE_READ_MAX_LAG` of these tests.
const MAX_LAG: &str = "0.5";
/// Longest a test waits for something that must happen (the standby to
/// start, the service to route to it); reaching it fails the test.
const PATIENCE: Duration = Duration::from_secs(20);

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("pg_config (or PG_BIN) locates the PostgreSQL binaries");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a PostgreSQL binary, as `postgres` when we are root.
fn pg(tool: &str, args: &[&str]) -> std::process::Output {
    let bin = pg_bin().join(tool);
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    command.args(args).output().expect("run a PostgreSQL tool")
}

fn pg_ok(tool: &str, args: &[&str]) {
    let out = pg(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private primary and its streaming standby; dropping it stops both
/// (immediately) and removes their directories, on success and on panic.
struct Cluster {
    root: PathBuf,
    primary_port: u16,
    standby_port: u16,
}

impl Cluster {
    fn dir(&self, which: &str) -> String {
        self.root.join(which).display().to_string()
    }

    fn start() -> Self {
        let n = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("tasks_replica_{}_{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let cluster = Self {
            root,
            primary_port: free_port(),
            standby_port: free_port(),
        };
        if running_as_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres", &cluster.root.display().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster directory");
        }
        let primary = cluster.dir("primary");
        pg_ok(
            "initdb",
            &[
                "-D",
                &primary,
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        cluster.configure(&primary, cluster.primary_port);
        cluster.pg_ctl("primary", "start");
        let standby = cluster.dir("standby");
        pg_ok(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &cluster.primary_port.to_string(),
                "-U",
                "postgres",
                "-D",
                &standby,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        // The copy carries the primary's settings; later lines win.
        cluster.configure(&standby, cluster.standby_port);
        cluster.pg_ctl("standby", "start");
        cluster
    }

    /// Appends this server's port and socket directory to its configuration
    /// (written as `postgres`, through `pg_ctl`'s own user, by `sh`).
    fn configure(&self, dir: &str, port: u16) {
        let lines = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 50\n",
            self.root.display()
        );
        let conf = Path::new(dir).join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&lines);
        std::fs::write(&conf, text).unwrap();
    }

    fn pg_ctl(&self, which: &str, action: &str) {
        pg_ctl(&self.root, which, action);
    }

    fn primary_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.primary_port
        )
    }

    fn standby_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.standby_port
        )
    }

    /// Waits until the standby is in recovery and the primary streams to it.
    async fn wait_streaming(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let standby = query_one(&self.standby_url(), "SELECT pg_is_in_recovery()::text").await;
            let streaming = query_one(
                &self.primary_url(),
                "SELECT count(*)::text FROM pg_stat_replication WHERE state = 'streaming'",
            )
            .await;
            if standby.as_deref() == Some("true") && streaming.as_deref() == Some("1") {
                return;
            }
            assert!(Instant::now() < deadline, "the standby never streamed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop_standby(&self) {
        pg_ctl_async(&self.root, "standby", "stop").await;
    }

    async fn start_standby(&self) {
        pg_ctl_async(&self.root, "standby", "start").await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for which in ["standby", "primary"] {
            let _ = pg(
                "pg_ctl",
                &["-D", &self.dir(which), "-m", "immediate", "-w", "stop"],
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `pg_ctl start|stop` of the primary or the standby under `root`.
fn pg_ctl(root: &Path, which: &str, action: &str) {
    let dir = root.join(which).display().to_string();
    let log = root.join(format!("{which}.log")).display().to_string();
    let mut args = vec!["-D", &dir, "-l", &log, "-w", "-t", "20"];
    if action == "stop" {
        args.extend(["-m", "fast"]);
    }
    args.push(action);
    pg_ok("pg_ctl", &args);
}

/// `pg_ctl` off the runtime's worker threads (the service under test runs
/// on them).
async fn pg_ctl_async(root: &Path, which: &'static str, action: &'static str) {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || pg_ctl(&root, which, action))
        .await
        .unwrap();
}

/// The first column of the first row, as text; `None` when the server
/// cannot be reached or the value is NULL.
async fn query_one(url: &str, sql: &str) -> Option<String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    let rows = client.simple_query(sql).await.ok()?;
    rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
}

/// The start of the last read of the tasks table the standby served, by
/// any service connection: `None` when it has served none since it started.
async fn last_standby_read(cluster: &Cluster) -> Option<String> {
    query_one(
        &cluster.standby_url(),
        r#"SELECT max(query_start)::text FROM pg_stat_activity
           WHERE pid <> pg_backend_pid() AND application_name = 'tasks-server'
             AND query LIKE '%FROM "tasks"%'"#,
    )
    .await
}

async fn service(cluster: &Cluster) -> TestApp {
    // The data lives on the private cluster; the app's database guard is an
    // empty temp directory.
    let (db, _) = TestDb::create(Backend::Sqlite).await;
    let url = cluster.primary_url();
    let read_url = cluster.standby_url();
    TestApp::spawn_on(
        Backend::Postgres,
        Arc::new(db),
        &url,
        &[
            ("DATABASE_READ_URL", read_url.as_str()),
            ("DATABASE_READ_MAX_LAG", MAX_LAG),
            ("DATABASE_CONNECT_TIMEOUT", "2"),
        ],
    )
    .await
}

async fn list_ids(app: &TestApp, token: &str) -> Vec<i64> {
    app.list_ok(token)
        .await
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}

/// Reads as a user who never writes until the standby serves one of them.
async fn until_standby_serves(app: &TestApp, cluster: &Cluster, reader: &str) {
    let deadline = Instant::now() + PATIENCE;
    let before = last_standby_read(cluster).await;
    loop {
        assert_eq!(app.list(reader, "").await.status(), 200);
        let now = last_standby_read(cluster).await;
        if now.is_some() && now != before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never served a read of a user who had not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes, then reads at once through the service: the write is always
/// there (get, list, after a toggle, and gone after a delete).
async fn write_then_read(app: &TestApp, writer: &str, round: usize) {
    let title = format!("round {round}");
    let task = app.create_ok(writer, &title).await;
    let id = task["id"].as_i64().unwrap();
    let got = app.get(writer, id).await;
    assert_eq!(got.status(), 200, "a task just created is read back");
    assert_eq!(got.json::<Value>().await.unwrap()["title"], title.as_str());
    assert_eq!(list_ids(app, writer).await.first(), Some(&id));
    assert_eq!(app.toggle(writer, id).await.status(), 200);
    let got: Value = app.get(writer, id).await.json().await.unwrap();
    assert_eq!(got["completed"], true, "a toggle is read back");
    assert_eq!(app.delete(writer, id).await.status(), 204);
    assert_eq!(
        app.get(writer, id).await.status(),
        404,
        "a delete is read back"
    );
    assert!(!list_ids(app, writer).await.contains(&id));
}

async fn start_cluster() -> Cluster {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    cluster.wait_streaming().await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_read_their_writes_at_once_and_others_read_from_the_standby() {
    let cluster = start_cluster().await;
    let app = service(&cluster).await;
    let (writer, reader) = (token_for("writer"), token_for("reader"));
    app.create_ok(&reader, "written before the reads").await;

    until_standby_serves(&app, &cluster, &reader).await;
    for round in 0..40 {
        write_then_read(&app, &writer, round).await;
        assert_eq!(app.list_ok(&reader).await.len(), 1);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_standby_never_fails_a_read_and_serves_again_once_back() {
    let cluster = start_cluster().await;
    let app = service(&cluster).await;
    let (writer, reader) = (token_for("writer"), token_for("reader"));
    app.create_ok(&reader, "mine").await;
    until_standby_serves(&app, &cluster, &reader).await;

    // The standby refuses new connections and drops the service's read
    // connections, while the sampler's probe (connected before) still finds
    // it caught up: every read routed there fails and is retried on the
    // primary.
    let (admin, conn) = tokio_postgres::connect(&cluster.standby_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let hba = cluster.root.join("standby").join("pg_hba.conf");
    let allowed = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, "host all all 0.0.0.0/0 reject\n").unwrap();
    admin.simple_query("SELECT pg_reload_conf()").await.unwrap();
    let killed = admin
        .simple_query(
            r#"SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE pid <> pg_backend_pid() AND application_name = 'tasks-server'
                 AND query LIKE '%FROM "tasks"%'"#,
        )
        .await
        .unwrap();
    assert!(
        killed.len() > 1,
        "the service had read connections on the standby"
    );
    for _ in 0..10 {
        let listed = app.list(&reader, "").await;
        assert_eq!(listed.status(), 200, "a read the standby refused");
        assert_eq!(listed.json::<Vec<Value>>().await.unwrap().len(), 1);
    }
    std::fs::write(&hba, allowed).unwrap();
    admin.simple_query("SELECT pg_reload_conf()").await.unwrap();
    drop(admin);

    cluster.stop_standby().await;
    for round in 0..20 {
        write_then_read(&app, &writer, round).await;
        let listed = app.list(&reader, "").await;
        assert_eq!(listed.status(), 200, "a read with the standby down");
        assert_eq!(listed.json::<Vec<Value>>().await.unwrap().len(), 1);
    }

    cluster.start_standby().await;
    cluster.wait_streaming().await;
    until_standby_serves(&app, &cluster, &reader).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_standby_never_hides_a_write_and_loses_the_reads_past_the_max_lag() {
    let cluster = start_cluster().await;
    let app = service(&cluster).await;
    let (writer, reader) = (token_for("writer"), token_for("reader"));
    app.create_ok(&reader, "mine").await;
    until_standby_serves(&app, &cluster, &reader).await;

    assert!(
        query_one(&cluster.standby_url(), "SELECT pg_wal_replay_pause()::text")
            .await
            .is_some()
    );
    // The standby now stays behind every write below, yet still counts as
    // fresh for up to the max lag: the writer's reads must avoid it.
    for round in 0..10 {
        write_then_read(&app, &writer, round).await;
    }

    // Past the max lag, no read goes to the standby: a read served by it
    // would move its last read's start.
    let deadline = Instant::now() + PATIENCE;
    let mut quiet = 0;
    let mut last = last_standby_read(&cluster).await;
    while quiet < 10 {
        assert_eq!(app.list_ok(&reader).await.len(), 1);
        let now = last_standby_read(&cluster).await;
        if now == last {
            quiet += 1;
        } else {
            quiet = 0;
            last = now;
        }
        assert!(
            Instant::now() < deadline,
            "a paused standby kept serving reads past DATABASE_READ_MAX_LAG"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert!(
        query_one(
            &cluster.standby_url(),
            "SELECT pg_wal_replay_resume()::text"
        )
        .await
        .is_some()
    );
    until_standby_serves(&app, &cluster, &reader).await;
    write_then_read(&app, &writer, 99).await;
    app.stop().await;
}
