//! Crash safety: `kill -9` of the service under a stream of creates and
//! toggles from concurrent clients loses no acknowledged write, and under a
//! stream of creates with `Idempotency-Key`s, retrying every key after the
//! restart makes exactly one task per key; on PostgreSQL and on SQLite (where
//! the writes are group-committed in batches).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message"
)]

#[path = "api/helpers.rs"]
mod helpers;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use helpers::{Backend, SECRET, TestDb, free_port};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tasks-server");

fn start(database_url: &str, port: u16) -> Child {
    start_logged(database_url, port, &[]).0
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(res) = client.get(format!("{base}/ready")).send().await
            && res.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("service did not become ready");
}

/// Acknowledged state: task id -> completed, as last confirmed by a 2xx.
type Acked = Arc<Mutex<HashMap<i64, bool>>>;

async fn writer(client: reqwest::Client, base: String, token: String, acked: Acked) {
    for i in 0.. {
        let Ok(res) = client
            .post(format!("{base}/api/tasks"))
            .bearer_auth(&token)
            .json(&json!({"title": format!("crash test {i}")}))
            .send()
            .await
        else {
            return;
        };
        if res.status() != 201 {
            return;
        }
        let Ok(task) = res.json::<Value>().await else {
            return;
        };
        let id = task["id"].as_i64().unwrap();
        acked.lock().unwrap().insert(id, false);
        let Ok(res) = client
            .patch(format!("{base}/api/tasks/{id}/complete"))
            .bearer_auth(&token)
            .send()
            .await
        else {
            return;
        };
        if res.status() != 200 || res.json::<Value>().await.is_err() {
            return;
        }
        acked.lock().unwrap().insert(id, true);
    }
}

async fn crash_loses_no_acknowledged_write(backend: Backend) {
    let (_db, url) = TestDb::create(backend).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = helpers::token_for("crash-user");
    let mut child = start(&url, port);
    wait_ready(&client, &base).await;

    let acked: Acked = Arc::default();
    // Sixteen concurrent writers: on SQLite their creates and toggles share
    // group-commit batches, so the kill lands while batches are committing.
    let writers: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(writer(
                client.clone(),
                base.clone(),
                token.clone(),
                acked.clone(),
            ))
        })
        .collect();
    // Let writes flow, then kill without warning while requests are in flight.
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let mut child = start(&url, port);
    wait_ready(&client, &base).await;
    let listed: Vec<Value> = client
        .get(format!("{base}/api/tasks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: HashMap<i64, bool> = listed
        .iter()
        .map(|t| (t["id"].as_i64().unwrap(), t["completed"].as_bool().unwrap()))
        .collect();
    for (id, completed) in &acked {
        let now = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged task {id} lost"));
        if *completed {
            assert!(*now, "acknowledged toggle of task {id} lost");
        }
    }
    assert!(stored.len() >= acked.len());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Keys sent (before the request) and acknowledged (key -> task id).
#[derive(Default)]
struct Keyed {
    sent: Vec<String>,
    acked: HashMap<String, i64>,
}

/// `POST /api/tasks` with `key` as the `Idempotency-Key` and as the title.
async fn post_keyed(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/api/tasks"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "title": key }))
        .send()
        .await
}

async fn keyed_writer(
    client: reqwest::Client,
    base: String,
    token: String,
    w: usize,
    keys: Arc<Mutex<Keyed>>,
) {
    for i in 0.. {
        let key = format!("w{w}-{i}");
        keys.lock().unwrap().sent.push(key.clone());
        let Ok(res) = post_keyed(&client, &base, &token, &key).await else {
            return;
        };
        if res.status() != 201 {
            return;
        }
        let Ok(task) = res.json::<Value>().await else {
            return;
        };
        let id = task["id"].as_i64().unwrap();
        keys.lock().unwrap().acked.insert(key, id);
    }
}

async fn crash_then_retrying_every_key_creates_one_task_per_key(backend: Backend) {
    let (_db, url) = TestDb::create(backend).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = helpers::token_for("keyed-crash-user");
    let mut child = start(&url, port);
    wait_ready(&client, &base).await;

    let keys: Arc<Mutex<Keyed>> = Arc::default();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(keyed_writer(
                client.clone(),
                base.clone(),
                token.clone(),
                w,
                keys.clone(),
            ))
        })
        .collect();
    while keys.lock().unwrap().acked.len() < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL, with creates in flight
    child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let Keyed { sent, acked } = std::mem::take(&mut *keys.lock().unwrap());

    let mut child = start(&url, port);
    wait_ready(&client, &base).await;
    // Every key again, as a client that never saw an answer (or did) would.
    for key in &sent {
        let mut attempts = 0;
        let res = loop {
            let res = post_keyed(&client, &base, &token, key).await.unwrap();
            // The killed instance's transaction may take a moment to be
            // rolled back: "in flight" is a retryable answer.
            if res.status() != 409 || attempts == 100 {
                break res;
            }
            attempts += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(res.status(), 201, "retry of {key}");
        let task: Value = res.json().await.unwrap();
        assert_eq!(task["title"], key.as_str());
        if let Some(id) = acked.get(key) {
            assert_eq!(
                task["id"], *id,
                "the acknowledged task of {key} is replayed"
            );
        }
    }
    let listed: Vec<Value> = client
        .get(format!("{base}/api/tasks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for task in &listed {
        *per_key
            .entry(task["title"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for key in &sent {
        assert_eq!(per_key.get(key), Some(&1), "tasks of key {key}");
    }
    assert_eq!(listed.len(), sent.len(), "no task without a key");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_then_retrying_every_key_creates_one_task_per_key_postgres() {
    crash_then_retrying_every_key_creates_one_task_per_key(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_then_retrying_every_key_creates_one_task_per_key_sqlite() {
    crash_then_retrying_every_key_creates_one_task_per_key(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loses_no_acknowledged_write_postgres() {
    crash_loses_no_acknowledged_write(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loses_no_acknowledged_write_sqlite() {
    crash_loses_no_acknowledged_write(Backend::Sqlite).await;
}

/// A `tasks-server serve` child on `database_url` with `env` on top, whose
/// log (stdout) and stderr (where a panic's message goes) are collected.
fn start_logged(
    database_url: &str,
    port: u16,
    env: &[(&str, &str)],
) -> (Child, Arc<Mutex<String>>) {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", SECRET)
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let outputs: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for output in outputs {
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(output).lines() {
                let Ok(line) = line else { return };
                let mut log = sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
    }
    (child, log)
}

/// Sends `request` and drops the connection at once with a reset (linger
/// 0), while the server is reading the answer from the database.
fn hang_up(addr: std::net::SocketAddr, request: &[u8]) {
    use std::io::Write as _;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream.write_all(request).unwrap();
}

/// SQLite reads abandoned mid-query (clients that hang up while their list
/// or change feed is being read, and reads that run out of
/// `DATABASE_QUERY_TIMEOUT`) never panic the server: the timeouts are 503s,
/// and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_sqlite_reads_never_panic_the_server() {
    const TASKS: usize = 5_000;
    let (_db, url) = TestDb::create(Backend::Sqlite).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let token = helpers::token_for("reader");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (child, log) = start_logged(&url, port, &[("WORKERS", "2")]);
    let server = Server(child);
    wait_ready(&client, &base).await;
    // The reader's tasks, seeded in SQL (the triggers fill the change log).
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::Connection as _;
        use diesel::connection::SimpleConnection as _;
        let mut conn = diesel::sqlite::SqliteConnection::establish(&path).unwrap();
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = 10000;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {TASKS})
             INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)
             SELECT 'reader', 'task ' || i, printf('%.200c', 'd'), i % 2,
                    '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00' FROM n;"
        ))
        .unwrap();
    })
    .await
    .unwrap();

    // Hang-ups: rounds of clients that ask for the whole list or the change
    // feed and disconnect at once.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let requests: Vec<Vec<u8>> = ["/api/tasks", "/api/tasks/changes?since=0&limit=1000"]
        .iter()
        .map(|path| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .into_bytes()
        })
        .collect();
    for round in 0..10 {
        let requests = requests.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..64 {
                hang_up(addr, &requests[(round + i) % 2]);
            }
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reads whose client has gone may still be queued on the reader threads
    // (on a slow machine, seconds of them). Wait until a queued read of our
    // own is answered: the queue is first-in first-out, so everything before
    // it has run. Otherwise a batch of the list below could wait in that
    // queue past the query timeout and end the stream early, which is the
    // timeout doing its job, not what this test looks for.
    let drained = async {
        loop {
            let res = client
                .get(format!("{base}/api/tasks/changes?since=0&limit=1"))
                .bearer_auth(&token)
                .send()
                .await;
            if res.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), drained)
        .await
        .expect("the reader queue drains once the hang-ups stop");
    let res = client
        .get(format!("{base}/api/tasks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A list cut short is a worker that died while streaming it.
    let listed = res
        .json::<Vec<Value>>()
        .await
        .unwrap_or_else(|e| panic!("{e}; server log: {}", log.lock().unwrap()));
    assert_eq!(listed.len(), TASKS);
    let logged = log.lock().unwrap().clone();
    assert!(!logged.contains("panicked"), "after hang-ups: {logged}");
    drop(server);

    // Timeouts: with a query timeout far below a list's time, reads are
    // abandoned by the server itself; each is a 503, never a panic.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (child, log) = start_logged(
        &url,
        port,
        &[
            ("WORKERS", "2"),
            ("DATABASE_QUERY_TIMEOUT", "0.000001"),
            ("DATABASE_POOL_SIZE", "1"),
        ],
    );
    let _server = Server(child);
    // `/ready` reads too (and may time out now): wait for `/health`.
    for _ in 0..200 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut unavailable = 0;
    for _ in 0..20 {
        let reads: Vec<_> = (0..16)
            .map(|i| {
                let (client, token) = (client.clone(), token.clone());
                let url = if i % 2 == 0 {
                    format!("{base}/api/tasks")
                } else {
                    format!("{base}/api/tasks/changes?since=0&limit=1000")
                };
                tokio::spawn(async move {
                    let res = client.get(url).bearer_auth(token).send().await?;
                    let status = res.status().as_u16();
                    let body = res.text().await.unwrap_or_default();
                    Ok::<_, reqwest::Error>((status, body))
                })
            })
            .collect();
        for read in reads {
            // A connection closed without an answer is a worker that died.
            let (status, body) = read
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}; server log: {}", log.lock().unwrap()));
            // A 200 may still end early: its later batches may time out
            // once the head is sent (the stream is then cut).
            assert!(status == 200 || status == 503, "{status}: {body}");
            if status == 503 {
                unavailable += 1;
                let error: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(error["error_type"], "service_unavailable", "{body}");
            }
        }
        if unavailable > 0 {
            break;
        }
    }
    assert!(unavailable > 0, "no read ran out of its 1 us query timeout");
    assert_eq!(
        client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let logged = log.lock().unwrap().clone();
    assert!(!logged.contains("panicked"), "after timeouts: {logged}");
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
