//! A database outage is a 503 the service recovers from by itself. The
//! database is reached through a TCP proxy the test can cut and restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::helpers::{Backend, TestApp, TestDb, assert_error};

struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    /// Milliseconds added before each chunk the database sends back.
    delay_ms: Arc<AtomicU64>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2, delay2) = (up.clone(), links.clone(), delay_ms.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let delay = delay2.clone();
                let link = tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut server_read, mut server_write) = server.into_split();
                    let (mut client_read, mut client_write) = client.split();
                    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                    let downstream = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = server_read.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            let ms = delay.load(Ordering::SeqCst);
                            if ms > 0 {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            client_write.write_all(&buf[..n]).await?;
                        }
                    };
                    let _ = tokio::join!(upstream, downstream);
                });
                links2.lock().await.push(link);
            }
        });
        Self {
            port,
            up,
            delay_ms,
            links,
        }
    }

    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn proxied_app(extra: &[(&str, &str)]) -> (TestApp, Proxy) {
    let (db, direct_url) = TestDb::create(Backend::Postgres).await;
    let proxy = Proxy::start(pg_host_port()).await;
    let db_name = database_name(&direct_url);
    let proxied = format!("postgres://postgres@127.0.0.1:{}/{db_name}", proxy.port);
    let app = TestApp::spawn_on(Backend::Postgres, Arc::new(db), &proxied, extra).await;
    (app, proxy)
}

async fn wait_until_ready(app: &TestApp) {
    for _ in 0..80 {
        if app
            .client
            .get(app.url("/ready"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the service did not become ready again without a restart");
}

/// The database name in a PostgreSQL URL.
fn database_name(url: &str) -> String {
    let path = url.rsplit('/').next().unwrap_or_default();
    path.split('?').next().unwrap_or_default().to_owned()
}

fn pg_host_port() -> String {
    let url = crate::helpers::admin_url();
    let after_at = url.split('@').nth(1).unwrap_or("127.0.0.1:5432/postgres");
    let host_port = after_at.split('/').next().unwrap_or("127.0.0.1:5432");
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_503_and_the_service_recovers() {
    let (app, proxy) = proxied_app(&[
        ("DATABASE_CONNECT_TIMEOUT", "1"),
        ("DATABASE_QUERY_TIMEOUT", "2"),
    ])
    .await;
    let token = app.token("alice");
    let before = app.create_ok(&token, "written before the outage").await;

    proxy.cut().await;
    for _ in 0..3 {
        let res = app.list(&token, "").await;
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = assert_error(res, 503, "service_unavailable").await;
        assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok()));
        let detail = body["detail"].as_str().unwrap();
        assert!(
            !detail.contains("127.0.0.1") && !detail.to_lowercase().contains("postgres"),
            "{detail}"
        );
    }
    let res = app
        .create(&token, &serde_json::json!({"title": "during"}))
        .await;
    assert_error(res, 503, "service_unavailable").await;
    // A live-update stream registers its user as watched before anything
    // else: that write fails like any other.
    let res = app
        .request(
            reqwest::Method::GET,
            "/api/tasks/events",
            Some(&token),
            None,
        )
        .await;
    assert_error(res, 503, "service_unavailable").await;
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_error(res, 503, "service_unavailable").await;
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "liveness does not depend on the database"
    );

    proxy.restore();
    wait_until_ready(&app).await;
    let tasks: Vec<Value> = app.list(&token, "").await.json().await.unwrap();
    assert_eq!(
        tasks,
        vec![before],
        "the write acknowledged before is there; the failed one is not"
    );
    app.create_ok(&token, "written after the outage").await;
    let res = app
        .request(
            reqwest::Method::GET,
            "/api/tasks/events",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(res.status(), 200, "streams open again");
}

/// A keyed create during an outage is a 503 that is not remembered: the
/// retry after recovery really creates, exactly once, and later retries
/// replay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_create_retried_after_an_outage_creates_exactly_one_task() {
    let (app, proxy) = proxied_app(&[
        ("DATABASE_CONNECT_TIMEOUT", "1"),
        ("DATABASE_QUERY_TIMEOUT", "2"),
    ])
    .await;
    let token = app.token("alice");
    let body = serde_json::json!({"title": "retried"});
    let keyed = || crate::idempotency::post_keyed(&app, "/api/tasks", &token, "outage-1", &body);
    proxy.cut().await;
    assert_error(keyed().await, 503, "service_unavailable").await;
    assert_error(keyed().await, 503, "service_unavailable").await;
    proxy.restore();
    wait_until_ready(&app).await;
    let first = keyed().await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = keyed().await;
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(app.list_ok(&token).await, vec![first]);
}

/// Under a stream of writes the database goes away and comes back: every
/// acknowledged write is stored, none twice, and the stream resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_an_outage_under_load() {
    let (app, proxy) = proxied_app(&[
        ("DATABASE_CONNECT_TIMEOUT", "1"),
        ("DATABASE_QUERY_TIMEOUT", "2"),
    ])
    .await;
    let app = Arc::new(app);
    let token = app.token("loaded");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (app, token, stop) = (app.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), Vec::new());
                let mut resumed = 0_usize;
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let title = format!("w{w}-{i}");
                    i += 1;
                    let res = app
                        .create(&token, &serde_json::json!({"title": title}))
                        .await;
                    match res.status().as_u16() {
                        201 => {
                            if !failed.is_empty() {
                                resumed += 1;
                            }
                            acked.push(title);
                        }
                        503 => failed.push(title),
                        other => panic!("unexpected status {other} during outage"),
                    }
                }
                (acked, failed, resumed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    wait_until_ready(&app).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut acked, mut failed, mut resumed) = (Vec::new(), Vec::new(), 0);
    for w in writers {
        let (a, f, r) = w.await.unwrap();
        acked.extend(a);
        failed.extend(f);
        resumed += r;
    }
    assert!(resumed > 0, "writes succeed again after the outage");
    assert!(!failed.is_empty(), "the outage was observed");
    let listed: Vec<Value> = app.list(&token, "").await.json().await.unwrap();
    let titles: Vec<&str> = listed
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    let unique: std::collections::HashSet<&str> = titles.iter().copied().collect();
    assert_eq!(unique.len(), titles.len(), "no write is stored twice");
    for title in &acked {
        assert!(
            unique.contains(title.as_str()),
            "acknowledged write {title} lost"
        );
    }
}

/// A slow database makes requests time out with 503 instead of piling up,
/// and the service is fast again once the database is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_database_is_503_not_a_pile_up() {
    let (app, proxy) = proxied_app(&[
        ("DATABASE_CONNECT_TIMEOUT", "1"),
        ("DATABASE_QUERY_TIMEOUT", "1"),
    ])
    .await;
    let token = app.token("alice");
    app.create_ok(&token, "before").await;
    proxy.delay_ms.store(3000, Ordering::SeqCst);
    let requests = (0..20).map(|_| app.list(&token, ""));
    let responses = futures_util::future::join_all(requests).await;
    for res in responses {
        assert_error(res, 503, "service_unavailable").await;
    }
    proxy.delay_ms.store(0, Ordering::SeqCst);
    wait_until_ready(&app).await;
    assert_eq!(app.list(&token, "").await.status(), 200);
}

/// Scale-out: two instances on one database, the second through PgBouncer in
/// transaction pooling mode; a write through either is read through the
/// other at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_direct_and_through_pgbouncer_agree() {
    let (db, direct_url) = TestDb::create(Backend::Postgres).await;
    let db = Arc::new(db);
    let name = database_name(&direct_url);
    let pooled_url = format!(
        "postgres://postgres@127.0.0.1:{}/{name}",
        crate::helpers::pgbouncer_port()
    );
    let direct = TestApp::spawn_on(Backend::Postgres, db.clone(), &direct_url, &[]).await;
    let pooled = TestApp::spawn_on(Backend::PgBouncer, db, &pooled_url, &[]).await;
    let token = direct.token("alice");
    for i in 0..20 {
        let (writer, reader) = if i % 2 == 0 {
            (&direct, &pooled)
        } else {
            (&pooled, &direct)
        };
        let task = writer.create_ok(&token, &format!("task {i}")).await;
        let read: Value = reader.get(&token, &task["id"]).await.json().await.unwrap();
        assert_eq!(read, task);
        let toggled: Value = reader
            .toggle(&token, &task["id"])
            .await
            .json()
            .await
            .unwrap();
        let seen: Value = writer.get(&token, &task["id"]).await.json().await.unwrap();
        assert_eq!(seen, toggled);
    }
    assert_eq!(direct.list_ok(&token).await, pooled.list_ok(&token).await);
    assert_eq!(direct.list_ok(&token).await.len(), 20);
}
