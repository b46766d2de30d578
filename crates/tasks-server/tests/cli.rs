//! The binary as a user runs it: `serve`, `token`, `migrate`, configuration
//! errors and graceful shutdown.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message"
)]

#[path = "api/helpers.rs"]
mod helpers;

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
        helpers::wait_until_listening(child.stdout.take().unwrap());
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
    in_flight_request_finishes_after("-TERM", "graceful_term").await;
}

/// Ctrl-C (SIGINT) is as graceful as SIGTERM (actix alone would drop
/// accepted requests on SIGINT; the service handles the signals itself).
#[tokio::test]
async fn sigint_lets_in_flight_requests_finish() {
    in_flight_request_finishes_after("-INT", "graceful_int").await;
}

async fn in_flight_request_finishes_after(signal: &str, tag: &str) {
    let dir = TempDir::new(tag);
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
    // A slow upload: the request is accepted, then the signal arrives while
    // its body is still arriving; it must still complete. The client asks
    // for `100 Continue` and sends the signal only once it came: the server
    // has then taken the request in (however slow the machine), so the
    // signal cannot land before that.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = br#"{"title":"finished during shutdown"}"#;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let head = format!(
        "POST /api/tasks HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\
         expect: 100-continue\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut interim = Vec::new();
    let mut byte = [0_u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut byte))
            .await
            .expect("100 Continue within 30 s")
            .unwrap();
        assert_eq!(n, 1, "connection closed before 100 Continue");
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    let pid = server.child.id().to_string();
    Command::new("kill").args([signal, &pid]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(body).await.unwrap();
    let response = helpers::read_until_closed(&mut conn).await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("finished during shutdown"), "{response}");
    let status = server.terminate();
    assert!(status.success());
}

/// An open event stream never finishes by itself: SIGTERM must end it at
/// once, so that shutdown is not held up for the whole `SHUTDOWN_TIMEOUT`
/// (30 s here; `terminate` gives up after 10 s).
#[tokio::test]
async fn sigterm_ends_open_event_streams() {
    use futures_util::StreamExt as _;
    let dir = TempDir::new("sse_shutdown");
    let mut cmd = command(&dir);
    cmd.env("JWT_SECRET", "graceful-shutdown-secret-0123456789")
        .env("SHUTDOWN_TIMEOUT", "30");
    let mut server = Server::start(cmd);
    let token = tasks_auth::issue_hs256(
        b"graceful-shutdown-secret-0123456789",
        "u",
        60,
        &tasks_auth::ClaimRules::default(),
    )
    .unwrap();
    let res = reqwest::Client::new()
        .get(server.url("/api/tasks/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"retry:"), "{first:?}");
    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    // The stream ended (cleanly or by the connection closing).
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended with the server");
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
fn production_refuses_weak_settings_naming_the_variable() {
    let dir = TempDir::new("prod_weak");
    let strong = "k".repeat(32);
    for (env, name) in [
        (vec![("JWT_SECRET", "a")], "JWT_SECRET"),
        (
            vec![("BETTER_AUTH_URL", "http://auth.example.com")],
            "BETTER_AUTH_URL",
        ),
        (
            vec![
                ("BETTER_AUTH_URL", "https://auth.example.com"),
                ("JWKS_URL", "http://user:pw-canary@auth.example.com/jwks"),
            ],
            "JWKS_URL",
        ),
        (
            vec![
                ("JWT_SECRET", strong.as_str()),
                ("LOG_DRIVER_DEBUG", "true"),
            ],
            "LOG_DRIVER_DEBUG",
        ),
    ] {
        let mut cmd = command(&dir);
        cmd.env("APP_ENV", "production");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{env:?} accepted in production");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{env:?}: {stderr}");
        assert!(!stderr.contains("pw-canary"), "{stderr}");
    }
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

/// Starts `serve` in a fresh directory with `env`, at debug level and in
/// JSON, runs `requests` against its base URL, stops it, and returns
/// everything it printed.
fn debug_logs_of<F, Fut>(tag: &str, env: &[(&str, &str)], requests: F) -> String
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = TempDir::new(tag);
    let port = free_port();
    let mut cmd = command(&dir);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let child = cmd
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "debug")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let client = reqwest::Client::new();
            let base = format!("http://127.0.0.1:{port}");
            for _ in 0..100 {
                if client.get(format!("{base}/health")).send().await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            requests(base).await;
        });
    }));
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
    if let Err(panic) = outcome {
        eprintln!("{logs}");
        std::panic::resume_unwind(panic);
    }
    assert!(
        logs.contains("request finished"),
        "logs were captured: {logs}"
    );
    assert_eq!(
        logs.matches("\"token verifiers\"").count(),
        1,
        "one start-up line says which verifiers are active: {logs}"
    );
    logs
}

/// Neither the text nor its bytes as a driver prints a bound parameter
/// (`[99, 97, 110, ...]`) appear in `logs`; nor does tokio_postgres's
/// parameter-printing debug line.
fn assert_absent(logs: &str, needles: &[&str]) {
    for needle in needles {
        assert!(!logs.contains(needle), "log contains {needle:?}");
        let bytes = needle
            .bytes()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            !logs.contains(&bytes),
            "log contains the bytes of {needle:?}"
        );
    }
    assert!(
        !logs.contains("executing statement"),
        "driver debug lines (statement parameters) were logged"
    );
}

/// Creates a task (201) and lists (200) with `token`.
async fn create_and_list(base: &str, token: &str) {
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{base}/api/tasks"))
        .bearer_auth(token)
        .json(&serde_json::json!({"title": "canary-title-text", "description": "canary-description-text"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = client
        .get(format!("{base}/api/tasks"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn expect_status(base: &str, token: &str, status: u16) {
    let res = reqwest::Client::new()
        .get(format!("{base}/api/tasks"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), status);
}

#[test]
fn logs_never_contain_tokens_or_secrets() {
    let secret = "log-leak-canary-secret-0123456789abcdef";
    let token = tasks_auth::issue_hs256(
        secret.as_bytes(),
        "canary-user",
        60,
        &tasks_auth::ClaimRules::default(),
    )
    .unwrap();
    let sent = token.clone();
    let logs = debug_logs_of("logs", &[("JWT_SECRET", secret)], |base| async move {
        create_and_list(&base, &sent).await;
        expect_status(&base, "garbage.token.value", 401).await;
    });
    assert_absent(
        &logs,
        &[
            secret,
            token.as_str(),
            "canary-title-text",
            "canary-description-text",
            "garbage.token.value",
        ],
    );
}

/// Better Auth session mode on PostgreSQL (tasks and Better Auth's tables
/// in one database, as in a shared-database set-up), at debug level: the
/// drivers' debug lines, which print statement parameters, stay out.
#[test]
fn session_mode_logs_never_contain_session_tokens() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, url) = rt.block_on(helpers::TestDb::create(helpers::Backend::Postgres));
    let session_token = "SessionCanaryTokenSessionCanary0";
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                r#"{schema}
                   INSERT INTO "user" VALUES ('canary-user', 'n', 'c@example.com', false, NULL, now(), now());
                   INSERT INTO "session" ("id", "expiresAt", "token", "updatedAt", "userId")
                       VALUES ('s1', now() + interval '1 hour', '{session_token}', now(), 'canary-user');"#,
                schema = helpers::BETTER_AUTH_SCHEMA
            ))
            .await
            .unwrap();
    });
    drop(rt);
    // A password in the URL (ignored by the trust authentication of the
    // test server) that must never be printed.
    let with_password = url.replacen("postgres@", "postgres:canary-db-password@", 1);
    let secret = "better-auth-canary-secret-0123456789";
    let logs = debug_logs_of(
        "session_logs",
        &[
            ("DATABASE_URL", with_password.as_str()),
            ("BETTER_AUTH_DATABASE_URL", with_password.as_str()),
            ("BETTER_AUTH_SECRET", secret),
        ],
        |base| async move {
            create_and_list(&base, session_token).await;
            expect_status(&base, "MadeUpSessionTokenMadeUpSession0", 401).await;
        },
    );
    drop(db);
    assert_absent(
        &logs,
        &[
            session_token,
            "MadeUpSessionTokenMadeUpSession0",
            secret,
            "canary-db-password",
            "canary-title-text",
            "canary-description-text",
        ],
    );
    assert!(
        logs.contains("BETTER_AUTH_SECRET is not accepted as an HS256 key"),
        "{logs}"
    );
}

/// A one-thread HTTP server on 127.0.0.1 answering every request with 503
/// for the first `failures` requests, then with `body`.
fn serve_jwks(body: String, failures: usize) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let (status, body) = if n < failures {
                ("503 Service Unavailable", "{}")
            } else {
                ("200 OK", body.as_str())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// JWKS mode with credentials in `JWKS_URL`, at debug level: the URL's
/// password shows up nowhere, not even in the warning about a failed fetch.
#[test]
fn jwks_mode_logs_never_contain_tokens_or_url_credentials() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tasks-auth/tests/fixtures/ed25519-a.pem"
    ))
    .unwrap();
    let key = EncodingKey::from_ed_pem(&pem).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::EdDSA).unwrap()).unwrap();
    jwk["kid"] = serde_json::json!("canary-kid");
    // The start-up prefetch fails (a warning that names the URL), the next
    // fetch succeeds.
    let port = serve_jwks(serde_json::json!({ "keys": [jwk] }).to_string(), 1);
    let origin = format!("http://127.0.0.1:{port}");
    let jwks_url = format!("http://jwks-user:jwks-canary-password@127.0.0.1:{port}/api/auth/jwks");
    let now = jsonwebtoken::get_current_timestamp();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("canary-kid".into());
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "canary-user", "iat": now, "exp": now + 900, "iss": origin, "aud": origin}),
        &key,
    )
    .unwrap();
    let signature = token.rsplit('.').next().unwrap().to_owned();
    let logs = debug_logs_of(
        "jwks_logs",
        &[
            ("BETTER_AUTH_URL", origin.as_str()),
            ("JWKS_URL", jwks_url.as_str()),
            ("JWKS_REFRESH_COOLDOWN_SECS", "1"),
        ],
        |base| async move {
            // Until the verifier's retry interval has passed, the key set
            // is unavailable (503); then the token works.
            let client = reqwest::Client::new();
            let mut status = 0;
            for _ in 0..100 {
                status = client
                    .get(format!("{base}/api/tasks"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                if status != 503 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(status, 200);
            create_and_list(&base, &token).await;
        },
    );
    assert!(logs.contains("could not fetch the JWKS"), "{logs}");
    assert!(logs.contains("jwks-user:***@"), "{logs}");
    assert_absent(
        &logs,
        &[
            "jwks-canary-password",
            &signature,
            "canary-title-text",
            "canary-description-text",
        ],
    );
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
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (url, token, stop) = (url.clone(), token.clone(), stop.clone());
            let answered = answered.clone();
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
                            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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
    // SIGTERM once every client is under way (however slow the machine),
    // so that it lands among requests in every state.
    for _ in 0..600 {
        if answered.load(std::sync::atomic::Ordering::SeqCst) >= 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
