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
    Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", SECRET)
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
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
