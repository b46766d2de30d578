//! A database outage is a 503 the service recovers from by itself. The
//! database is reached through a TCP proxy the test can cut and restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::helpers::{Backend, TestApp, TestDb, assert_error};

struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
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
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().await.push(link);
            }
        });
        Self { port, up, links }
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
    let (db, direct_url) = TestDb::create(Backend::Postgres).await;
    let proxy = Proxy::start(pg_host_port()).await;
    let db_name = direct_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let proxied = format!("postgres://postgres@127.0.0.1:{}/{db_name}", proxy.port);
    let app = TestApp::spawn_on(
        Backend::Postgres,
        Arc::new(db),
        &proxied,
        &[
            ("DATABASE_CONNECT_TIMEOUT", "1"),
            ("DATABASE_QUERY_TIMEOUT", "2"),
        ],
    )
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
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_error(res, 503, "service_unavailable").await;
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "liveness does not depend on the database"
    );

    proxy.restore();
    let mut ready = false;
    for _ in 0..60 {
        if app
            .client
            .get(app.url("/ready"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ready, "the service becomes ready again without a restart");
    let tasks: Vec<Value> = app.list(&token, "").await.json().await.unwrap();
    assert_eq!(
        tasks,
        vec![before],
        "the write acknowledged before is there; the failed one is not"
    );
    app.create_ok(&token, "written after the outage").await;
}
