//! Test keys, token minting, a JWKS served over real HTTP on 127.0.0.1, and
//! throw-away PostgreSQL databases.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A private key and the public JWK the test JWKS publishes for it.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub enc: EncodingKey,
    pub jwk: Value,
}

impl TestKey {
    fn new(kid: &str, alg: Algorithm, enc: EncodingKey) -> Self {
        let jwk = Jwk::from_encoding_key(&enc, alg).unwrap();
        let mut jwk = serde_json::to_value(jwk).unwrap();
        jwk["kid"] = json!(kid);
        Self {
            kid: kid.to_owned(),
            alg,
            enc,
            jwk,
        }
    }

    pub fn ed25519(file: &str, kid: &str) -> Self {
        Self::new(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&fixture(file)).unwrap(),
        )
    }

    pub fn eddsa_a() -> Self {
        Self::ed25519("ed25519-a.pem", "0rcnXgmVYVE2qAs4i5F2x3KiIPNw2u5W")
    }

    pub fn eddsa_b() -> Self {
        Self::ed25519("ed25519-b.pem", "kidBkidBkidBkidBkidBkidBkidBkidB")
    }

    pub fn attacker() -> Self {
        Self::ed25519("ed25519-attacker.pem", "attackerattackerattackerattacker")
    }

    pub fn es256() -> Self {
        Self::new(
            "es256-key",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&fixture("p256.pem")).unwrap(),
        )
    }

    pub fn rsa(alg: Algorithm, kid: &str) -> Self {
        Self::new(
            kid,
            alg,
            EncodingKey::from_rsa_pem(&fixture("rsa2048.pem")).unwrap(),
        )
    }

    /// Better Auth's header: `{alg, kid}`, no `typ`.
    pub fn header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.typ = None;
        h.kid = Some(self.kid.clone());
        h
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(self.header(), claims)
    }

    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.enc).unwrap()
    }
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The claims Better Auth's jwt() plugin puts in a token for user `sub`.
pub fn better_auth_claims(origin: &str, sub: &str) -> Value {
    let now = now();
    json!({
        "iat": now,
        "name": "Test User",
        "email": "test@example.com",
        "emailVerified": false,
        "image": null,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-01-01T00:00:00.000Z",
        "id": sub,
        "sub": sub,
        "exp": now + 900,
        "iss": origin,
        "aud": origin,
    })
}

/// A compact JWS with any header and a junk signature.
pub fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

pub fn jwks_of(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

struct Reply {
    status: u16,
    body: String,
}

/// A minimal HTTP/1.1 server answering every request with the current reply,
/// counting requests and remembering their paths.
pub struct JwksServer {
    pub origin: String,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(jwks: &Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            body: jwks.to_string(),
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let task = {
            let (reply, hits, paths, delay_ms) =
                (reply.clone(), hits.clone(), paths.clone(), delay_ms.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (reply, hits, paths, delay_ms) =
                        (reply.clone(), hits.clone(), paths.clone(), delay_ms.clone());
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16_384 {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let request = String::from_utf8_lossy(&buf);
                        let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                        paths.lock().unwrap().push(path);
                        hits.fetch_add(1, Ordering::SeqCst);
                        let delay = delay_ms.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let (status, body) = {
                            let r = reply.lock().unwrap();
                            (r.status, r.body.clone())
                        };
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
            })
        };
        Self {
            origin,
            reply,
            hits,
            paths,
            delay_ms,
            task,
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/api/auth/jwks", self.origin)
    }

    pub fn serve(&self, jwks: &Value) {
        *self.reply.lock().unwrap() = Reply {
            status: 200,
            body: jwks.to_string(),
        };
    }

    pub fn fail_with(&self, status: u16, body: &str) {
        *self.reply.lock().unwrap() = Reply {
            status,
            body: body.to_owned(),
        };
    }

    pub fn delay(&self, d: Duration) {
        self.delay_ms
            .store(u64::try_from(d.as_millis()).unwrap(), Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    /// Stops accepting: later connections are refused.
    pub async fn stop(&self) {
        self.task.abort();
        while !self.task.is_finished() {
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Admin connection to the local PostgreSQL used by the session tests.
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database with Better Auth's `user` and `session` tables, dropped
/// when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub client: tokio_postgres::Client,
}

static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls)
        .await
        .expect("the session tests need PostgreSQL at postgres://postgres@127.0.0.1:5432");
    tokio::spawn(conn);
    client
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!(
            "tasks_auth_test_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        // As better-auth 1.7's getMigrations creates them on PostgreSQL.
        client
            .batch_execute(
                r#"
                CREATE TABLE "user" (
                    "id" text NOT NULL PRIMARY KEY,
                    "name" text NOT NULL,
                    "email" text NOT NULL UNIQUE,
                    "emailVerified" boolean NOT NULL,
                    "image" text,
                    "createdAt" timestamptz DEFAULT CURRENT_TIMESTAMP NOT NULL,
                    "updatedAt" timestamptz DEFAULT CURRENT_TIMESTAMP NOT NULL
                );
                CREATE TABLE "session" (
                    "id" text NOT NULL PRIMARY KEY,
                    "expiresAt" timestamptz NOT NULL,
                    "token" text NOT NULL UNIQUE,
                    "createdAt" timestamptz DEFAULT CURRENT_TIMESTAMP NOT NULL,
                    "updatedAt" timestamptz NOT NULL,
                    "ipAddress" text,
                    "userAgent" text,
                    "userId" text NOT NULL REFERENCES "user" ("id") ON DELETE CASCADE
                );
                CREATE INDEX "session_userId_idx" ON "session" ("userId");
                "#,
            )
            .await
            .unwrap();
        Self { name, url, client }
    }

    pub async fn add_user(&self, id: &str) {
        self.client
            .execute(
                r#"INSERT INTO "user" ("id", "name", "email", "emailVerified") VALUES ($1, 'n', $2, false)"#,
                &[&id, &format!("{id}@example.com")],
            )
            .await
            .unwrap();
    }

    /// A session for `user_id` expiring `expires_in_secs` from now (negative: past).
    pub async fn add_session(&self, token: &str, user_id: &str, expires_in_secs: i64) {
        self.client
            .execute(
                r#"INSERT INTO "session" ("id", "expiresAt", "token", "updatedAt", "userId")
                   VALUES (md5(random()::text), now() + make_interval(secs => $2::float8), $1, now(), $3)"#,
                &[&token, &(expires_in_secs as f64), &user_id],
            )
            .await
            .unwrap();
    }

    /// What Better Auth's sign-out does.
    pub async fn sign_out(&self, token: &str) {
        let n = self
            .client
            .execute(r#"DELETE FROM "session" WHERE "token" = $1"#, &[&token])
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    pub async fn session_count(&self) -> i64 {
        self.client
            .query_one(r#"SELECT count(*) FROM "session""#, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Drops the database now (terminating connections), as an outage would.
    pub async fn drop_now(&self) {
        admin()
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: clean up from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

impl TestDb {
    /// Makes `"expiresAt"` a `timestamp` (no time zone) column, as Drizzle
    /// and Prisma schemas for Better Auth declare it.
    pub async fn expires_at_without_time_zone(&self) {
        self.client
            .batch_execute(
                r#"ALTER TABLE "session" ALTER COLUMN "expiresAt" TYPE timestamp USING "expiresAt" AT TIME ZONE 'UTC'"#,
            )
            .await
            .unwrap();
    }

    /// Sets the database's default time zone: new connections use it.
    pub async fn set_time_zone(&self, zone: &str) {
        self.client
            .batch_execute(&format!(
                "ALTER DATABASE {} SET timezone TO '{zone}'",
                self.name
            ))
            .await
            .unwrap();
    }

    /// A session whose `"expiresAt"` (a `timestamp` column) holds the UTC
    /// wall-clock time `expires_in_secs` from now, as an ORM writing UTC does.
    pub async fn add_utc_wall_clock_session(
        &self,
        token: &str,
        user_id: &str,
        expires_in_secs: i64,
    ) {
        self.client
            .execute(
                r#"INSERT INTO "session" ("id", "expiresAt", "token", "updatedAt", "userId")
                   VALUES (md5(random()::text),
                           (now() AT TIME ZONE 'UTC') + make_interval(secs => $2::float8),
                           $1, now(), $3)"#,
                &[&token, &(expires_in_secs as f64), &user_id],
            )
            .await
            .unwrap();
    }

    /// Backends of the session verifier connected to this database.
    pub async fn verifier_backends(
        &self,
        admin: &tokio_postgres::Client,
        only_waiting_on_locks: bool,
    ) -> i64 {
        let sql = if only_waiting_on_locks {
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tasks-server-sessions' AND wait_event_type = 'Lock'"
        } else {
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tasks-server-sessions'"
        };
        admin.query_one(sql, &[&self.name]).await.unwrap().get(0)
    }

    /// A new connection to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

/// A TCP proxy in front of the local PostgreSQL that records what the client
/// sends: each frontend message's type byte and, for `Parse`, the statement
/// name (empty for an unnamed statement). The startup message is recorded
/// as `b'0'` with the value of its `options` parameter.
pub struct PgRecorder {
    pub port: u16,
    messages: Arc<Mutex<Vec<(u8, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PgRecorder {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// As PgBouncer does without `options` in `ignore_startup_parameters`:
    /// a connection whose startup message sets `options` is refused with
    /// "unsupported startup parameter: options" (recorded as `b'!'`).
    pub async fn refusing_startup_options() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(refuse_options: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let recorded = messages.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let server = tokio::net::TcpStream::connect("127.0.0.1:5432")
                        .await
                        .unwrap();
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    // The startup message has no type byte (the URL says
                    // sslmode=disable, so no SSLRequest comes first).
                    let mut len = [0u8; 4];
                    if from_client.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                    from_client.read_exact(&mut body).await.unwrap();
                    let params: Vec<&[u8]> = body[4..].split(|b| *b == 0).collect();
                    let options = params
                        .chunks(2)
                        .find(|kv| kv[0] == b"options")
                        .and_then(|kv| kv.get(1))
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    let sets_options = options.is_some();
                    recorded
                        .lock()
                        .unwrap()
                        .push((b'0', options.unwrap_or_default()));
                    if refuse_options && sets_options {
                        recorded.lock().unwrap().push((b'!', "options".to_owned()));
                        let mut fields = Vec::new();
                        for (code, value) in [
                            (b'S', "FATAL"),
                            (b'V', "FATAL"),
                            (b'C', "08P01"),
                            (b'M', "unsupported startup parameter: options"),
                        ] {
                            fields.push(code);
                            fields.extend_from_slice(value.as_bytes());
                            fields.push(0);
                        }
                        fields.push(0);
                        let mut error = vec![b'E'];
                        error.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
                        error.extend_from_slice(&fields);
                        let _ = to_client.write_all(&error).await;
                        return;
                    }
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    to_server.write_all(&len).await.unwrap();
                    to_server.write_all(&body).await.unwrap();
                    loop {
                        let mut head = [0u8; 5];
                        if from_client.read_exact(&mut head).await.is_err() {
                            return;
                        }
                        let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                        let mut body = vec![0u8; n - 4];
                        if from_client.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let name = if head[0] == b'P' {
                            let end = body.iter().position(|b| *b == 0).unwrap_or(0);
                            String::from_utf8_lossy(&body[..end]).into_owned()
                        } else {
                            String::new()
                        };
                        recorded.lock().unwrap().push((head[0], name));
                        if to_server.write_all(&head).await.is_err()
                            || to_server.write_all(&body).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            messages,
            task,
        }
    }

    pub fn messages(&self) -> Vec<(u8, String)> {
        self.messages.lock().unwrap().clone()
    }
}

impl Drop for PgRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
