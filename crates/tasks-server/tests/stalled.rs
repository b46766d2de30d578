//! The release-shaped binary against the attack that took it to gigabytes: a
//! user at the task limit with maximum-size tasks (10,000 × (200 + 10,000)
//! characters, a 100 MB list) and 50 clients that ask for that list and
//! never read. Peak RSS stays under a documented bound, each stalled
//! connection is cut after `CLIENT_WRITE_TIMEOUT`, and a client that does
//! read still gets the whole list.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message"
)]

#[path = "api/helpers.rs"]
mod helpers;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use helpers::{Backend, SECRET, TestDb, free_port, token_for};

const BIN: &str = env!("CARGO_BIN_EXE_tasks-server");
const TASKS: usize = 10_000;
const STALLED: usize = 50;
/// The documented bound (docs/RELIABILITY.md), for a debug build.
const PEAK_RSS_LIMIT_MB: u64 = 150;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024
}

/// A client that sends the request and never reads, with a small receive
/// buffer so the server's writes stall early.
fn stalled_reader(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.write_all(request).unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_of_a_maximal_list_stay_within_memory_and_are_cut_off() {
    let (_db, url) = TestDb::create(Backend::Postgres).await;
    let port = free_port();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &url)
        .env("JWT_SECRET", SECRET)
        .env("PORT", port.to_string())
        .env("WORKERS", "2")
        .env("CLIENT_WRITE_TIMEOUT", "2")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "warn,tasks_server=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let pid = child.id();
    let _server = Server(child);
    helpers::wait_until_listening(stdout);

    // The hoarder's tasks, at the limit and at the maximum size, seeded in SQL
    // (creating them over HTTP is what the attacker did; it only takes longer).
    let client = helpers::connect_pg(&url).await;
    client
        .batch_execute(&format!(
            "INSERT INTO tasks (user_id, title, description)
             SELECT 'hoarder', rpad('task ' || i, 200, '.'), rpad(md5(i::text), 10000, md5((-i)::text))
             FROM generate_series(1, {TASKS}) AS i;
             INSERT INTO task_counts (user_id, tasks) VALUES ('hoarder', {TASKS});"
        ))
        .await
        .unwrap();
    let token = token_for("hoarder");
    let rss_before = peak_rss_mb(pid);

    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let request = format!(
        "GET /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| stalled_reader(addr, request.as_bytes()))
        .collect();

    // Meanwhile a client that reads gets every task, newest first.
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/api/tasks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(tasks.len(), TASKS);
    assert_eq!(tasks[0]["title"].as_str().unwrap().chars().count(), 200);
    assert_eq!(
        tasks[0]["description"].as_str().unwrap().chars().count(),
        10_000
    );
    assert!(
        tasks
            .windows(2)
            .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64())
    );
    let full_length = body.len();
    drop((tasks, body));

    // Each stalled connection is cut: draining it now ends in an error or
    // EOF well before the full body.
    let started = Instant::now();
    let cut = tokio::task::spawn_blocking(move || {
        stalled
            .into_iter()
            .map(|mut stream| {
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let mut received = 0usize;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => return (received, true),
                        Ok(n) => received += n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            return (received, false);
                        }
                        Err(_) => return (received, true),
                    }
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (received, closed) in &cut {
        assert!(
            closed,
            "a stalled reader was still connected after {:?}",
            started.elapsed()
        );
        assert!(
            *received < full_length,
            "a stalled reader got the whole list ({received} bytes)"
        );
    }

    let peak = peak_rss_mb(pid);
    eprintln!(
        "peak RSS: {rss_before} MB before, {peak} MB with {STALLED} stalled readers of a {} MB list",
        full_length / (1024 * 1024)
    );
    assert!(
        peak < PEAK_RSS_LIMIT_MB,
        "peak RSS {peak} MB (limit {PEAK_RSS_LIMIT_MB} MB)"
    );
}
