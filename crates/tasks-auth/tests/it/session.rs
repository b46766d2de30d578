//! SessionVerifier (and the composite's session cache) against a real,
//! fresh PostgreSQL database shaped like Better Auth's.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tasks_auth::{CompositeVerifier, SessionConfig, SessionVerifier};
use tasks_ports::{TokenVerifier, VerifyError};

use crate::support::{PgRecorder, TestDb};

const SECRET: &str = "better-auth-secret-used-only-by-these-tests";
const TOKEN: &str = "Xq3bK9mZpL2vR7tY1wE5uI8oA4sD6fGh";

fn sign(raw: &str, secret: &str) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(raw.as_bytes());
    format!("{raw}.{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn config(db: &TestDb) -> SessionConfig {
    SessionConfig {
        secret: Some(SECRET.to_owned()),
        query_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(3),
        ..SessionConfig::new(db.url.clone())
    }
}

/// As [`config`], through a recording proxy on `port` (plain TCP, so the
/// proxy can read the protocol).
fn config_via(db: &TestDb, port: u16) -> SessionConfig {
    SessionConfig {
        database_url: format!(
            "postgres://postgres@127.0.0.1:{port}/{}?sslmode=disable",
            db.name
        ),
        ..config(db)
    }
}

async fn db_with_session() -> TestDb {
    let db = TestDb::create().await;
    db.add_user("user-1").await;
    db.add_session(TOKEN, "user-1", 3600).await;
    db
}

fn rejected(r: Result<tasks_domain::OwnerId, VerifyError>) -> String {
    match r {
        Err(VerifyError::Rejected(m)) => m,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn accepts_raw_session_token() {
    let db = db_with_session().await;
    let v = SessionVerifier::new(&config(&db)).unwrap();
    assert_eq!(v.verify(TOKEN).await.unwrap().as_str(), "user-1");
}

#[tokio::test]
async fn accepts_signed_session_token() {
    let db = db_with_session().await;
    let v = SessionVerifier::new(&config(&db)).unwrap();
    let signed = sign(TOKEN, SECRET);
    assert!(signed.ends_with('='), "Better Auth pads: {signed}");
    assert_eq!(v.verify(&signed).await.unwrap().as_str(), "user-1");
}

#[tokio::test]
async fn accepts_percent_encoded_signed_session_token() {
    let db = db_with_session().await;
    let v = SessionVerifier::new(&config(&db)).unwrap();
    let encoded = sign(TOKEN, SECRET)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(v.verify(&encoded).await.unwrap().as_str(), "user-1");
}

#[tokio::test]
async fn rejects_signature_from_another_secret() {
    let db = db_with_session().await;
    let v = SessionVerifier::new(&config(&db)).unwrap();
    let forged = sign(TOKEN, "not-the-better-auth-secret-at-all");
    assert_eq!(
        rejected(v.verify(&forged).await),
        "session token signature is invalid"
    );
}

#[tokio::test]
async fn rejects_unknown_session() {
    let db = db_with_session().await;
    let v = SessionVerifier::new(&config(&db)).unwrap();
    assert_eq!(
        rejected(v.verify("NoSuchSessionTokenNoSuchSession0").await),
        "session is unknown or has expired"
    );
}

#[tokio::test]
async fn rejects_expired_session() {
    let db = TestDb::create().await;
    db.add_user("user-1").await;
    db.add_session("ExpiredSessionTokenExpiredSessio", "user-1", -60)
        .await;
    let v = SessionVerifier::new(&config(&db)).unwrap();
    assert_eq!(
        rejected(v.verify("ExpiredSessionTokenExpiredSessio").await),
        "session is unknown or has expired"
    );
}

#[tokio::test]
async fn hostile_token_text_is_only_a_parameter() {
    let db = db_with_session().await;
    let v = SessionVerifier::new(&config(&db)).unwrap();
    for t in [
        "'OR'1'='1",
        "x';DELETE%20FROM%20\"session\";--",
        "\"token\"",
    ] {
        assert!(v.verify(t).await.is_err(), "{t}");
    }
    assert_eq!(db.session_count().await, 1);
}

#[tokio::test]
async fn sign_out_takes_effect_after_the_cache_ttl() {
    let db = db_with_session().await;
    let ttl = Duration::from_millis(800);
    let session = SessionVerifier::new(&SessionConfig {
        cache_ttl: ttl,
        ..config(&db)
    })
    .unwrap();
    let v = CompositeVerifier::new(None, None, Some(session), 100);
    let signed = sign(TOKEN, SECRET);
    assert_eq!(v.verify(&signed).await.unwrap().as_str(), "user-1");
    db.sign_out(TOKEN).await;
    // Within the TTL the cached answer stands...
    assert_eq!(v.verify(&signed).await.unwrap().as_str(), "user-1");
    // ...and once it has passed, the sign-out is seen.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(
        rejected(v.verify(&signed).await),
        "session is unknown or has expired"
    );
}

#[tokio::test]
async fn sign_out_is_immediate_without_the_cache() {
    let db = db_with_session().await;
    let session = SessionVerifier::new(&config(&db)).unwrap();
    let v = CompositeVerifier::new(None, None, Some(session), 0);
    assert!(v.verify(TOKEN).await.is_ok());
    db.sign_out(TOKEN).await;
    assert!(rejected(v.verify(TOKEN).await).contains("session"));
}

#[tokio::test]
async fn rejections_are_not_cached_when_the_negative_cache_is_off() {
    let db = TestDb::create().await;
    db.add_user("user-1").await;
    let session = SessionVerifier::new(&SessionConfig {
        negative_cache_ttl: Duration::ZERO,
        ..config(&db)
    })
    .unwrap();
    let v = CompositeVerifier::new(None, None, Some(session), 100);
    assert!(v.verify(TOKEN).await.is_err());
    db.add_session(TOKEN, "user-1", 3600).await;
    assert_eq!(v.verify(TOKEN).await.unwrap().as_str(), "user-1");
}

#[tokio::test]
async fn unknown_tokens_are_answered_from_memory_for_the_negative_ttl() {
    let db = TestDb::create().await;
    db.add_user("user-1").await;
    let ttl = Duration::from_millis(800);
    let recorder = PgRecorder::start().await;
    let v = SessionVerifier::new(&SessionConfig {
        negative_cache_ttl: ttl,
        ..config_via(&db, recorder.port)
    })
    .unwrap();
    // The session table is found once (one query) before any lookup.
    v.discover().await.unwrap();
    let before = recorder.messages().len();
    let lookups = || {
        recorder.messages()[before..]
            .iter()
            .filter(|(t, _)| *t == b'S')
            .count()
    };
    // A made-up token costs one query, then none while it is remembered...
    assert_eq!(
        rejected(v.verify(TOKEN).await),
        "session is unknown or has expired"
    );
    assert_eq!(lookups(), 1);
    for _ in 0..20 {
        assert_eq!(
            rejected(v.verify(TOKEN).await),
            "session is unknown or has expired"
        );
    }
    // ...also in its signed form (the cache is keyed by the raw token).
    assert!(v.verify(&sign(TOKEN, SECRET)).await.is_err());
    assert_eq!(
        lookups(),
        1,
        "repeated rejections were answered from memory"
    );
    // A session created meanwhile is seen once the rejection has expired.
    db.add_session(TOKEN, "user-1", 3600).await;
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(v.verify(TOKEN).await.unwrap().as_str(), "user-1");
    assert_eq!(lookups(), 2);
    // Rejections that never reached the database are not remembered, and
    // accepted tokens are not affected by others' rejections.
    assert!(
        v.verify(&sign(TOKEN, "wrong-secret-wrong-secret"))
            .await
            .is_err()
    );
    assert_eq!(v.verify(TOKEN).await.unwrap().as_str(), "user-1");
}

#[tokio::test]
async fn lookups_are_one_round_trip_with_unnamed_statements() {
    // Named statements (prepared in one round trip, executed in another)
    // break behind a PgBouncer in transaction mode; unnamed ones do not.
    let db = db_with_session().await;
    let recorder = PgRecorder::start().await;
    let v = SessionVerifier::new(&SessionConfig {
        negative_cache_ttl: Duration::ZERO,
        pool_size: 2,
        ..config_via(&db, recorder.port)
    })
    .unwrap();
    // Finding the session table is one unnamed statement too, once.
    v.discover().await.unwrap();
    let before = recorder.messages();
    assert_eq!(
        before.iter().filter(|(t, _)| *t == b'P').count(),
        1,
        "{before:?}"
    );
    assert!(before.iter().all(|(t, name)| *t != b'P' || name.is_empty()));
    for i in 0..10 {
        assert_eq!(v.verify(TOKEN).await.unwrap().as_str(), "user-1");
        assert!(v.verify(&format!("UnknownToken{i:020}")).await.is_err());
    }
    let messages = recorder.messages()[before.len()..].to_vec();
    let parses: Vec<&String> = messages
        .iter()
        .filter(|(t, _)| *t == b'P')
        .map(|(_, name)| name)
        .collect();
    assert_eq!(parses.len(), 20, "{messages:?}");
    assert!(
        parses.iter().all(|name| name.is_empty()),
        "named statements: {parses:?}"
    );
    let syncs = messages.iter().filter(|(t, _)| *t == b'S').count();
    assert_eq!(syncs, 20, "one round trip (one Sync) per lookup");
}

#[tokio::test]
async fn a_pooler_refusing_startup_options_still_gets_lookups() {
    // PgBouncer without `options` in ignore_startup_parameters refuses the
    // server-side timeouts; the verifier then connects without them.
    let db = db_with_session().await;
    let recorder = PgRecorder::refusing_startup_options().await;
    let v = SessionVerifier::new(&SessionConfig {
        negative_cache_ttl: Duration::ZERO,
        pool_size: 2,
        ..config_via(&db, recorder.port)
    })
    .unwrap();
    for _ in 0..5 {
        assert_eq!(v.verify(TOKEN).await.unwrap().as_str(), "user-1");
    }
    let refused = recorder
        .messages()
        .iter()
        .filter(|(t, _)| *t == b'!')
        .count();
    assert_eq!(refused, 1, "asked once with the options, then without");
}

#[tokio::test]
async fn connections_ask_for_server_side_statement_and_lock_timeouts() {
    let db = db_with_session().await;
    let recorder = PgRecorder::start().await;
    let v = SessionVerifier::new(&SessionConfig {
        query_timeout: Duration::from_millis(1500),
        ..config_via(&db, recorder.port)
    })
    .unwrap();
    assert!(v.verify(TOKEN).await.is_ok());
    let startup: Vec<String> = recorder
        .messages()
        .into_iter()
        .filter(|(t, _)| *t == b'0')
        .map(|(_, options)| options)
        .collect();
    assert_eq!(
        startup,
        ["-c statement_timeout=1500 -c lock_timeout=1500"],
        "the startup options of the verifier's one connection"
    );
}

#[tokio::test]
async fn expiry_of_a_timestamp_column_is_compared_in_utc() {
    // `"expiresAt" timestamp` holding UTC wall-clock times, and a database
    // time zone west of UTC: compared through the session's time zone, a
    // session that expired an hour ago would look valid for four more hours.
    let db = TestDb::create().await;
    db.add_user("user-1").await;
    db.expires_at_without_time_zone().await;
    db.set_time_zone("America/New_York").await;
    db.add_utc_wall_clock_session("ExpiredAnHourAgoExpiredAnHourAgo", "user-1", -3600)
        .await;
    db.add_utc_wall_clock_session("ValidForAnHourValidForAnHour0000", "user-1", 3600)
        .await;
    let v = SessionVerifier::new(&SessionConfig {
        negative_cache_ttl: Duration::ZERO,
        ..config(&db)
    })
    .unwrap();
    assert_eq!(
        rejected(v.verify("ExpiredAnHourAgoExpiredAnHourAgo").await),
        "session is unknown or has expired"
    );
    let ok = v
        .verify_detailed("ValidForAnHourValidForAnHour0000")
        .await
        .unwrap();
    assert_eq!(ok.owner.as_str(), "user-1");
    // And east of UTC, a valid session is not cut short either.
    db.set_time_zone("Asia/Tokyo").await;
    let v = SessionVerifier::new(&SessionConfig {
        negative_cache_ttl: Duration::ZERO,
        ..config(&db)
    })
    .unwrap();
    assert!(v.verify("ValidForAnHourValidForAnHour0000").await.is_ok());
    assert!(v.verify("ExpiredAnHourAgoExpiredAnHourAgo").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_session_table_never_grows_backends_past_the_pool() {
    let db = db_with_session().await;
    let pool_size = 2;
    let v = Arc::new(
        SessionVerifier::new(&SessionConfig {
            pool_size,
            query_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(3),
            negative_cache_ttl: Duration::ZERO,
            ..config(&db)
        })
        .unwrap(),
    );
    // Warm the pool up, then lock Better Auth's table for longer than many
    // query timeouts.
    assert!(v.verify(TOKEN).await.is_ok());
    let locker = db.connect().await;
    locker
        .batch_execute(r#"BEGIN; LOCK TABLE "session" IN ACCESS EXCLUSIVE MODE"#)
        .await
        .unwrap();
    let monitor = db.connect().await;
    let clients: Vec<_> = (0..10)
        .map(|i| {
            let v = v.clone();
            tokio::spawn(async move {
                let mut unavailable = 0;
                for j in 0..5 {
                    match v
                        .verify(&format!("Concurrent{i:02}Lookup{j:02}000000000000"))
                        .await
                    {
                        Err(VerifyError::Unavailable(_)) => unavailable += 1,
                        other => panic!("expected Unavailable under the lock, got {other:?}"),
                    }
                }
                unavailable
            })
        })
        .collect();
    let mut most = 0;
    let mut samples = 0;
    while !clients.iter().all(tokio::task::JoinHandle::is_finished) {
        most = most.max(db.verifier_backends(&monitor, false).await);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut unavailable = 0;
    for c in clients {
        unavailable += c.await.unwrap();
    }
    assert_eq!(unavailable, 50);
    eprintln!("verifier backends: at most {most} in {samples} samples (pool {pool_size})");
    assert!(
        samples > 5 && most >= 1,
        "the monitor saw the verifier ({samples} samples)"
    );
    assert!(
        most <= pool_size as i64,
        "{most} backends for a pool of {pool_size}"
    );
    // Every timed-out lookup was cancelled on the server: while the lock is
    // still held, none of the verifier's backends is waiting for it.
    assert_eq!(db.verifier_backends(&monitor, true).await, 0);
    assert!(db.verifier_backends(&monitor, false).await <= pool_size as i64);
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(v.verify(TOKEN).await.unwrap().as_str(), "user-1");
}

#[tokio::test]
async fn database_down_without_cache_is_unavailable() {
    let v = SessionVerifier::new(&SessionConfig {
        connect_timeout: Duration::from_secs(2),
        ..SessionConfig::new("postgres://postgres@127.0.0.1:1/none")
    })
    .unwrap();
    let r = v.verify(TOKEN).await;
    assert!(matches!(r, Err(VerifyError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn cached_session_survives_a_database_outage() {
    let db = db_with_session().await;
    let session = SessionVerifier::new(&config(&db)).unwrap();
    let v = CompositeVerifier::new(None, None, Some(session), 100);
    assert!(v.verify(TOKEN).await.is_ok());
    db.drop_now().await;
    assert_eq!(v.verify(TOKEN).await.unwrap().as_str(), "user-1");
    let other = v.verify("AnotherTokenAnotherTokenAnother0").await;
    assert!(
        matches!(other, Err(VerifyError::Unavailable(_))),
        "{other:?}"
    );
}
