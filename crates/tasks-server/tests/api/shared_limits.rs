//! The per-user rate limit shared through Redis (`RATE_LIMIT_REDIS_URL`),
//! against the local Redis (127.0.0.1:6379, or `TEST_REDIS_URL`).

use std::sync::Arc;

use crate::helpers::{Backend, TestApp, TestDb, free_port};

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test (or run) uses; its keys are deleted by
/// [`Prefix::clean`] (and expire by themselves within a refill period).
struct Prefix(String);

impl Prefix {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self(format!("tasks-test:{test}:{}:{nanos}:", std::process::id()))
    }

    async fn connection() -> redis::aio::MultiplexedConnection {
        let url = redis_url();
        let client = redis::Client::open(url.as_str()).unwrap();
        client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| {
                panic!("these tests need Redis at TEST_REDIS_URL ({url}); they never skip: {e}")
            })
    }

    async fn keys(&self) -> Vec<String> {
        let mut conn = Self::connection().await;
        redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    async fn clean(&self) {
        let keys = self.keys().await;
        if !keys.is_empty() {
            let mut conn = Self::connection().await;
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// Sends `n` list requests for `token`, the i-th to `apps[i % len]`, and
/// returns how many were allowed; every other answer must be a 429.
async fn allowed(apps: &[&TestApp], token: &str, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        let status = apps[i % apps.len()].list(token, "").await.status();
        match status.as_u16() {
            200 => ok += 1,
            429 => {}
            other => panic!("request {i}: {other}, expected 200 or 429"),
        }
    }
    ok
}

/// Two instances on one database, with `extra` settings.
async fn two_instances(extra: &[(&str, &str)]) -> (TestApp, TestApp) {
    let (db, url) = TestDb::create(Backend::Postgres).await;
    let db = Arc::new(db);
    let a = TestApp::spawn_on(Backend::Postgres, Arc::clone(&db), &url, extra).await;
    let b = TestApp::spawn_on(Backend::Postgres, db, &url, extra).await;
    (a, b)
}

/// One request a minute with a burst of 5: nothing refills during the test,
/// so the number allowed is exactly the burst.
const LIMIT: [(&str, &str); 2] = [("RATE_LIMIT_PER_MINUTE", "1"), ("RATE_LIMIT_BURST", "5")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_limit_is_the_same_on_one_instance_or_two() {
    let prefix = Prefix::new("shared");
    let url = redis_url();
    let mut extra = LIMIT.to_vec();
    extra.extend([
        ("RATE_LIMIT_REDIS_URL", url.as_str()),
        ("RATE_LIMIT_REDIS_PREFIX", prefix.0.as_str()),
        // Generous, so that a busy test machine never falls back.
        ("RATE_LIMIT_REDIS_TIMEOUT", "10"),
    ]);
    let (a, b) = two_instances(&extra).await;

    let alice = a.token("alice");
    assert_eq!(allowed(&[&a], &alice, 8).await, 5, "one instance");
    let bob = a.token("bob");
    assert_eq!(allowed(&[&a, &b], &bob, 8).await, 5, "alternating");
    // A 429 from either instance says when to come back.
    let res = b.list(&bob, "").await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let mut keys = prefix.keys().await;
    keys.sort();
    assert_eq!(
        keys,
        [format!("{}alice", prefix.0), format!("{}bob", prefix.0)],
        "the buckets live in Redis"
    );

    // Without Redis each instance has its own bucket: alternating doubles it.
    let (c, d) = two_instances(&LIMIT).await;
    let carol = c.token("carol");
    assert_eq!(allowed(&[&c, &d], &carol, 12).await, 10);
    prefix.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_down_or_silent_never_fails_requests() {
    // Down: a closed port.
    let closed = format!("redis://127.0.0.1:{}", free_port());
    let mut extra = LIMIT.to_vec();
    extra.push(("RATE_LIMIT_REDIS_URL", closed.as_str()));
    let app = TestApp::spawn_with(Backend::Postgres, &extra).await;
    let alice = app.token("alice");
    assert_eq!(
        allowed(&[&app], &alice, 8).await,
        5,
        "the local limit applies"
    );

    // Silent: accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("redis://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let mut extra = LIMIT.to_vec();
    extra.extend([
        ("RATE_LIMIT_REDIS_URL", silent_url.as_str()),
        ("RATE_LIMIT_REDIS_TIMEOUT", "0.2"),
    ]);
    let app = TestApp::spawn_with(Backend::Postgres, &extra).await;
    let bob = app.token("bob");
    assert_eq!(
        allowed(&[&app], &bob, 8).await,
        5,
        "the local limit applies"
    );
    held.abort();
}
