//! Crash safety: `kill -9` of the service under a stream of creates and
//! toggles from concurrent clients loses no acknowledged write, on PostgreSQL
//! and on SQLite (where the writes are group-committed in batches).

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loses_no_acknowledged_write_postgres() {
    crash_loses_no_acknowledged_write(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loses_no_acknowledged_write_sqlite() {
    crash_loses_no_acknowledged_write(Backend::Sqlite).await;
}
