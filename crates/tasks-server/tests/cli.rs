//! The binary as a user runs it: `serve`, `token`, `migrate`, configuration
//! errors and graceful shutdown.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message"
)]

#[path = "api/helpers.rs"]
mod helpers;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use helpers::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_tasks-server");

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tasks_cli_{tag}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command with a clean environment: only what the test sets.
fn command(dir: &TempDir) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(&dir.0);
    cmd
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts `serve` and waits until its log says it is listening.
    fn start(mut cmd: Command) -> Self {
        let port = free_port();
        let mut child = cmd
            .env("PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if line.contains("listening") {
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn development_mode_token_works_against_serve_on_sqlite() {
    let dir = TempDir::new("dev");
    let mut server = Server::start(command(&dir));
    assert!(
        dir.0.join("data/tasks.db").exists(),
        "SQLite file created under ./data"
    );
    let secret = dir.0.join("data/dev-jwt-secret");
    assert!(secret.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "secret readable by its owner only");
    }
    let out = command(&dir).args(["token", "dev-user"]).output().unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3);

    let client = reqwest::Client::new();
    let res = client
        .post(server.url("/api/tasks"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"title": "from the CLI token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let task: serde_json::Value = res.json().await.unwrap();
    assert_eq!(task["user_id"], "dev-user");

    let check = command(&dir)
        .env("PORT", server.port.to_string())
        .arg("healthcheck")
        .output()
        .unwrap();
    assert!(check.status.success(), "healthcheck against a ready server");

    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    let check = command(&dir)
        .env("PORT", server.port.to_string())
        .arg("healthcheck")
        .output()
        .unwrap();
    assert!(
        !check.status.success(),
        "healthcheck against a stopped server fails"
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let dir = TempDir::new("graceful");
    let mut cmd = command(&dir);
    cmd.env("JWT_SECRET", "graceful-shutdown-secret-0123456789");
    let mut server = Server::start(cmd);
    let token = tasks_auth::issue_hs256(
        b"graceful-shutdown-secret-0123456789",
        "u",
        60,
        &tasks_auth::ClaimRules::default(),
    )
    .unwrap();
    // A slow upload: the request is accepted, then SIGTERM arrives while its
    // body is still arriving; it must still complete.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let client = reqwest::Client::new();
    let request = tokio::spawn(
        client
            .post(server.url("/api/tasks"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send(),
    );
    tx.send(Ok(b"{\"title\":".to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(b"\"finished during shutdown\"}".to_vec()))
        .await
        .unwrap();
    drop(tx);
    let res = request.await.unwrap().unwrap();
    assert_eq!(res.status(), 201);
    let status = server.terminate();
    assert!(status.success());
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[test]
fn invalid_configuration_fails_naming_the_variable() {
    let dir = TempDir::new("badconf");
    for (name, value) in [
        ("PORT", "eighty"),
        ("DATABASE_URL", "mysql://nope"),
        ("CORS_ORIGINS", "not a url"),
        ("DATABASE_POOL_SIZE", "-3"),
        ("JWT_LEEWAY", "999"),
    ] {
        let out = command(&dir).env(name, value).output().unwrap();
        assert!(!out.status.success(), "{name}={value} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
}

#[test]
fn production_refuses_to_start_without_auth() {
    let dir = TempDir::new("prod");
    for cmd in [
        {
            let mut c = command(&dir);
            c.arg("--production");
            c
        },
        {
            let mut c = command(&dir);
            c.env("APP_ENV", "production");
            c
        },
    ] {
        let mut cmd = cmd;
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("JWT_SECRET") && stderr.contains("BETTER_AUTH_URL"),
            "{stderr}"
        );
    }
    assert!(
        !dir.0.join("data/dev-jwt-secret").exists(),
        "no development secret in production"
    );
}

#[test]
fn migrate_subcommand_is_idempotent() {
    let dir = TempDir::new("migrate");
    let first = command(&dir).arg("migrate").output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let shipped = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/sqlite"
    ))
    .unwrap()
    .count();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains(&format!("applied {shipped} migration(s)")),
        "{stdout}"
    );
    let second = command(&dir).arg("migrate").output().unwrap();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("up to date"));
}

#[test]
fn logs_never_contain_tokens_or_secrets() {
    let dir = TempDir::new("logs");
    let secret = "log-leak-canary-secret-0123456789abcdef";
    let port = free_port();
    let child = command(&dir)
        .env("JWT_SECRET", secret)
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "debug")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let token = tasks_auth::issue_hs256(
        secret.as_bytes(),
        "canary-user",
        60,
        &tasks_auth::ClaimRules::default(),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if client.get(format!("{base}/health")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let res = client
            .post(format!("{base}/api/tasks"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"title": "canary-title-text", "description": "canary-description-text"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let _ = client.get(format!("{base}/api/tasks")).bearer_auth("garbage.token.value").send().await;
    });
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logs.contains("request finished"),
        "logs were captured: {logs}"
    );
    for needle in [
        secret,
        token.as_str(),
        "canary-title-text",
        "canary-description-text",
        "garbage.token.value",
    ] {
        assert!(!logs.contains(needle), "log contains {needle:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_completes_accepted_requests_and_exits_in_time() {
    let dir = TempDir::new("graceful_load");
    let secret = "graceful-load-secret-0123456789abcdef";
    let mut cmd = command(&dir);
    cmd.env("JWT_SECRET", secret).env("SHUTDOWN_TIMEOUT", "5");
    let mut server = Server::start(cmd);
    let token = tasks_auth::issue_hs256(
        secret.as_bytes(),
        "u",
        60,
        &tasks_auth::ClaimRules::default(),
    )
    .unwrap();
    let url = server.url("/api/tasks");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (url, token, stop) = (url.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut ok, mut refused) = (0_u32, 0_u32);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let res = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&serde_json::json!({"title": format!("load {i}-{n}")}))
                        .send()
                        .await;
                    match res {
                        // Every request the server answered, it answered well.
                        Ok(r) => {
                            assert_eq!(
                                r.status(),
                                201,
                                "a request answered during shutdown failed"
                            );
                            ok += 1;
                        }
                        // Not accepted any more: the listener is closed.
                        Err(e) if e.is_connect() || e.is_request() => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("unexpected client error: {e}"),
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // `terminate` fails the test unless the process exits within 10 s of
    // SIGTERM, while the clients keep sending: the 5 s grace period bounds it.
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total_ok = 0;
    for c in clients {
        total_ok += c.await.unwrap().0;
    }
    assert!(status.success(), "clean exit: {status:?}");
    assert!(total_ok > 0);
}
