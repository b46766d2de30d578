//! Test harness: a fresh database per test, the real app on a free port, one
//! helper per endpoint.

#![allow(
    dead_code,
    reason = "each test binary that includes this file uses a different part of it"
)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::Value;
use tasks_server::{Application, Settings};
use tracing_subscriber::EnvFilter;

/// The six task operations, as (method, path) with a path id of 1.
pub const ENDPOINTS: [(&str, &str); 6] = [
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks"),
    ("GET", "/api/tasks/1"),
    ("PUT", "/api/tasks/1"),
    ("DELETE", "/api/tasks/1"),
    ("PATCH", "/api/tasks/1/complete"),
];

/// A port that was free a moment ago, for processes the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Better Auth's `user` and `session` tables as better-auth 1.7's
/// `getMigrations` creates them on PostgreSQL (camelCase, quoted).
pub const BETTER_AUTH_SCHEMA: &str = r#"
    CREATE TABLE "user" ("id" text PRIMARY KEY, "name" text NOT NULL, "email" text NOT NULL UNIQUE,
        "emailVerified" boolean NOT NULL, "image" text,
        "createdAt" timestamptz DEFAULT CURRENT_TIMESTAMP NOT NULL,
        "updatedAt" timestamptz DEFAULT CURRENT_TIMESTAMP NOT NULL);
    CREATE TABLE "session" ("id" text PRIMARY KEY, "expiresAt" timestamptz NOT NULL,
        "token" text NOT NULL UNIQUE, "createdAt" timestamptz DEFAULT CURRENT_TIMESTAMP NOT NULL,
        "updatedAt" timestamptz NOT NULL, "ipAddress" text, "userAgent" text,
        "userId" text NOT NULL REFERENCES "user" ("id") ON DELETE CASCADE);"#;

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
    /// PostgreSQL through PgBouncer in transaction pooling mode, as behind
    /// Neon's pooled endpoint.
    PgBouncer,
}

/// Generates one `#[tokio::test]` per backend (PostgreSQL, SQLite, and
/// PostgreSQL through PgBouncer) for each named `async fn name(backend:
/// Backend)` in the invoking module.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod pgbouncer {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::PgBouncer).await;
                }
            )*
        }
    };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// Databases of dead test processes are swept once per process, by the
/// first test that creates a database.
static STALE_SWEEP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (prefix, _) = base
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL has a database name");
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

pub async fn admin() -> tokio_postgres::Client {
    let url = admin_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL tests need a server at TEST_DATABASE_URL ({url}); they never skip. Start one (e.g. `pg_ctlcluster 15 main start`). Error: {e}"
            )
        });
    tokio::spawn(conn);
    client
}

/// `TEST_LOG=debug cargo test ...` (any tracing filter; `1` means `info`)
/// sends the in-process server's log to the test output, so a failing test
/// can show what the server did. Off by default: tests stay quiet.
pub fn init_test_log() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let Ok(filter) = std::env::var("TEST_LOG") else {
            return;
        };
        let filter = if filter == "1" {
            "info".to_owned()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// Reads what the server sends until it closes the connection. The bound is
/// only a guard against a hanging test: it fails the test, never passes it.
pub async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until a `tasks-server serve` child says it is listening on its
/// stdout, then keeps draining it on a thread so the server never blocks on
/// a full pipe.
pub fn wait_until_listening(stdout: std::process::ChildStdout) {
    use std::io::BufRead as _;
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .expect("read the server's output");
        if line.contains("listening") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
}

/// A client of the PostgreSQL database at `url`, its connection driven in
/// the background.
pub async fn connect_pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test database: {e}"));
    tokio::spawn(conn);
    client
}

/// Better Auth's database (PostgreSQL; through PgBouncer for that backend)
/// with `schema` applied: the guard, its URL and a client.
pub async fn auth_database(
    backend: Backend,
    schema: &str,
) -> (TestDb, String, tokio_postgres::Client) {
    let via = if backend == Backend::PgBouncer {
        Backend::PgBouncer
    } else {
        Backend::Postgres
    };
    let (db, url) = TestDb::create(via).await;
    let client = connect_pg(&url).await;
    client
        .batch_execute(schema)
        .await
        .expect("apply the Better Auth schema");
    (db, url, client)
}

/// A database that is dropped when the guard is.
pub enum TestDb {
    Postgres { name: String },
    Sqlite { dir: PathBuf },
}

impl TestDb {
    pub async fn create(backend: Backend) -> (Self, String) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        match backend {
            Backend::Postgres | Backend::PgBouncer => {
                let client = admin().await;
                STALE_SWEEP
                    .get_or_init(|| drop_stale_databases(&client))
                    .await;
                let name = format!("tasks_t_{pid}_{n}");
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let url = if backend == Backend::PgBouncer {
                    format!("postgres://postgres@127.0.0.1:{}/{name}", pgbouncer_port())
                } else {
                    with_database(&admin_url(), &name)
                };
                (Self::Postgres { name }, url)
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("tasks_t_{pid}_{n}"));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("create temp dir");
                let url = format!("sqlite://{}", dir.join("tasks.db").display());
                (Self::Sqlite { dir }, url)
            }
        }
    }
}

/// Databases left behind by test processes that died (killed, aborted).
async fn drop_stale_databases(client: &tokio_postgres::Client) {
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'tasks\\_t\\_%'",
            &[],
        )
        .await
        .expect("list databases");
    let me = std::process::id().to_string();
    let mut stale = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).unwrap_or("");
        if pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            stale.push(name);
        }
    }
    for name in stale {
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            Self::Postgres { name } => {
                let name = name.clone();
                // Drop runs outside any async context we may block; use a
                // private runtime on a private thread.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        if let Ok((client, conn)) =
                            tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await
                        {
                            tokio::spawn(conn);
                            let _ = client
                                .batch_execute(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await;
                        }
                    });
                })
                .join();
            }
            Self::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub backend: Backend,
    pub database_url: String,
    /// The `/metrics` listener's port, when the test set `METRICS_PORT`.
    pub metrics_port: Option<u16>,
    handle: actix_web::dev::ServerHandle,
    _db: Arc<TestDb>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts the app with extra settings (`NAME`, value) on top of the test
    /// defaults.
    pub async fn spawn_with(backend: Backend, extra: &[(&str, &str)]) -> Self {
        let (db, url) = TestDb::create(backend).await;
        Self::spawn_on(backend, Arc::new(db), &url, extra).await
    }

    pub async fn spawn_on(
        backend: Backend,
        db: Arc<TestDb>,
        url: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        init_test_log();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("DATABASE_URL", url),
            ("JWT_SECRET", SECRET),
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("WORKERS", "2"),
            (
                "CORS_ORIGINS",
                "http://localhost:3000,https://app.example.com",
            ),
        ];
        if backend == Backend::PgBouncer {
            pairs.push(("DATABASE_PREPARED_STATEMENTS", "false"));
        }
        pairs.extend_from_slice(extra);
        let settings = Settings::from_pairs(pairs).expect("test settings");
        let app = Application::build(settings).await.expect("build app");
        let port = app.port();
        let metrics_port = app.metrics_port();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            backend,
            database_url: url.to_owned(),
            metrics_port,
            handle,
            _db: db,
        }
    }

    pub fn token(&self, user: &str) -> String {
        token_for(user)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.expect("request sent")
    }

    /// The status of `GET path` without a token (`/health`, `/ready`).
    pub async fn probe(&self, path: &str) -> u16 {
        let res = self.client.get(self.url(path)).send().await;
        res.expect("request sent").status().as_u16()
    }

    pub async fn create(&self, token: &str, body: &Value) -> Response {
        self.request(Method::POST, "/api/tasks", Some(token), Some(body))
            .await
    }

    /// Creates a task and returns its JSON, asserting 201.
    pub async fn create_ok(&self, token: &str, title: &str) -> Value {
        let res = self
            .create(token, &serde_json::json!({ "title": title }))
            .await;
        assert_eq!(res.status(), 201, "create {title:?}");
        res.json().await.expect("task json")
    }

    pub async fn list(&self, token: &str, query: &str) -> Response {
        self.request(
            Method::GET,
            &format!("/api/tasks{query}"),
            Some(token),
            None,
        )
        .await
    }

    pub async fn list_ok(&self, token: &str) -> Vec<Value> {
        let res = self.list(token, "").await;
        assert_eq!(res.status(), 200);
        res.json().await.expect("list json")
    }

    pub async fn get(&self, token: &str, id: impl std::fmt::Display) -> Response {
        self.request(Method::GET, &format!("/api/tasks/{id}"), Some(token), None)
            .await
    }

    pub async fn update(&self, token: &str, id: impl std::fmt::Display, body: &Value) -> Response {
        self.request(
            Method::PUT,
            &format!("/api/tasks/{id}"),
            Some(token),
            Some(body),
        )
        .await
    }

    pub async fn delete(&self, token: &str, id: impl std::fmt::Display) -> Response {
        self.request(
            Method::DELETE,
            &format!("/api/tasks/{id}"),
            Some(token),
            None,
        )
        .await
    }

    pub async fn toggle(&self, token: &str, id: impl std::fmt::Display) -> Response {
        self.request(
            Method::PATCH,
            &format!("/api/tasks/{id}/complete"),
            Some(token),
            None,
        )
        .await
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

pub fn token_for(user: &str) -> String {
    tasks_auth::issue_hs256(
        SECRET.as_bytes(),
        user,
        600,
        &tasks_auth::ClaimRules::default(),
    )
    .expect("token")
}

/// Signs arbitrary claims with the test secret.
pub fn sign(claims: &Value) -> String {
    sign_with(claims, jsonwebtoken::Algorithm::HS256, SECRET.as_bytes())
}

pub fn sign_with(claims: &Value, alg: jsonwebtoken::Algorithm, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

pub fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).expect("time")
}

/// Base64url without padding, as in JWTs.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JSON value as a base64url JWT segment.
pub fn b64_json(v: &Value) -> String {
    b64(&serde_json::to_vec(v).expect("json"))
}

/// Asserts the error envelope and returns its body.
pub async fn assert_error(res: Response, status: u16, error_type: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["status_code"], status, "{body}");
    assert_eq!(body["error_type"], error_type, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert_eq!(
        body.as_object().map(serde_json::Map::len),
        Some(3),
        "{body}"
    );
    body
}

static PGBOUNCER: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

/// Starts one PgBouncer for this test process (transaction pooling, every
/// database of the test server), and returns its port. A small watchdog
/// stops it when the test process exits, however it exits.
pub fn pgbouncer_port() -> u16 {
    *PGBOUNCER.get_or_init(|| {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("PgBouncer is needed for the scale-out tests: apt-get install pgbouncer (scripts/test.sh does)");
        let admin = admin_url();
        let after_at = admin.split('@').nth(1).unwrap_or("127.0.0.1:5432/postgres");
        let host_port = after_at.split('/').next().unwrap_or("127.0.0.1:5432");
        let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
        let user = admin
            .split("://")
            .nth(1)
            .and_then(|r| r.split('@').next())
            .and_then(|u| u.split(':').next())
            .unwrap_or("postgres");
        let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("tasks_pgbouncer_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={host} port={port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = transaction\nmax_client_conn = 2000\ndefault_pool_size = 20\nignore_startup_parameters = extra_float_digits,options\n",
                dir.join("userlist.txt").display()
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for f in ["", "userlist.txt", "pgbouncer.ini"] {
                let mode = if f.is_empty() { 0o755 } else { 0o644 };
                std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        let as_user = if std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n")) {
            "-u postgres"
        } else {
            ""
        };
        let script = format!(
            "{binary} {as_user} {ini} >/dev/null 2>&1 & pgb=$!; while kill -0 {me} 2>/dev/null && kill -0 $pgb 2>/dev/null; do sleep 1; done; kill $pgb 2>/dev/null; rm -rf {dir}",
            ini = dir.join("pgbouncer.ini").display(),
            me = std::process::id(),
            dir = dir.display(),
        );
        let mut watchdog = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start PgBouncer");
        std::thread::spawn(move || watchdog.wait());
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                return listen;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PgBouncer did not start on port {listen}");
    })
}
