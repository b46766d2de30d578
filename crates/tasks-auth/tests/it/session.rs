//! SessionVerifier (and the composite's session cache) against a real,
//! fresh PostgreSQL database shaped like Better Auth's.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tasks_auth::{CompositeVerifier, SessionConfig, SessionVerifier};
use tasks_ports::{TokenVerifier, VerifyError};

use crate::support::TestDb;

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
async fn rejections_are_not_cached() {
    let db = TestDb::create().await;
    db.add_user("user-1").await;
    let session = SessionVerifier::new(&config(&db)).unwrap();
    let v = CompositeVerifier::new(None, None, Some(session), 100);
    assert!(v.verify(TOKEN).await.is_err());
    db.add_session(TOKEN, "user-1", 3600).await;
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
