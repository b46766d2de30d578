//! Routing of the composite verifier built from an AuthConfig.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tasks_auth::{AuthConfig, ClaimRules, build_verifier, issue_hs256};
use tasks_ports::VerifyError;

use crate::support::*;

const HS_SECRET: &str = "shared-hs256-secret-for-composite-tests";

fn rejected(r: Result<tasks_domain::OwnerId, VerifyError>) -> String {
    match r {
        Err(VerifyError::Rejected(m)) => m,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn config(server: &JwksServer) -> AuthConfig {
    AuthConfig {
        better_auth_url: Some(server.origin.clone()),
        hs256_secret: Some(HS_SECRET.into()),
        jwks_refresh_cooldown: Duration::ZERO,
        ..AuthConfig::default()
    }
}

#[tokio::test]
async fn routes_eddsa_to_jwks_and_hs256_to_the_shared_secret() {
    let key = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&key])).await;
    let v = build_verifier(&config(&server)).unwrap();
    let ed = key.sign(&better_auth_claims(&server.origin, "ed-user"));
    assert_eq!(v.verify(&ed).await.unwrap().as_str(), "ed-user");
    let hs = issue_hs256(HS_SECRET.as_bytes(), "hs-user", 60, &ClaimRules::default()).unwrap();
    assert_eq!(v.verify(&hs).await.unwrap().as_str(), "hs-user");
}

#[tokio::test]
async fn defaults_iss_and_aud_to_the_better_auth_origin() {
    let key = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&key])).await;
    let mut c = config(&server);
    c.better_auth_url = Some(format!("{}/some/base/path/", server.origin));
    c.jwks_url = Some(server.jwks_url());
    let v = build_verifier(&c).unwrap();
    let ok = key.sign(&better_auth_claims(&server.origin, "u"));
    assert!(v.verify(&ok).await.is_ok());
    let mut claims = better_auth_claims(&server.origin, "u");
    claims["iss"] = json!(format!("{}/some/base/path", server.origin));
    assert!(v.verify(&key.sign(&claims)).await.is_err());
}

#[tokio::test]
async fn hs_token_never_reaches_the_jwks() {
    let key = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&key])).await;
    let v = build_verifier(&AuthConfig {
        better_auth_url: Some(server.origin.clone()),
        ..AuthConfig::default()
    })
    .unwrap();
    let hs = issue_hs256(HS_SECRET.as_bytes(), "u", 60, &ClaimRules::default()).unwrap();
    assert!(rejected(v.verify(&hs).await).contains("HS"));
    // (The background prefetch may have run; a rejected HS token adds nothing.)
    assert!(server.hits() <= 1);
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_rejected_by_the_hs_route() {
    let key = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&key])).await;
    let v = build_verifier(&config(&server)).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(
        &header,
        &better_auth_claims(&server.origin, "u"),
        &EncodingKey::from_secret(key.jwk["x"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        rejected(v.verify(&token).await),
        "token signature is invalid"
    );
}

#[tokio::test]
async fn asymmetric_token_without_jwks_configured_is_rejected() {
    let key = TestKey::eddsa_a();
    let v = build_verifier(&AuthConfig {
        hs256_secret: Some(HS_SECRET.into()),
        ..AuthConfig::default()
    })
    .unwrap();
    let token = key.sign(&better_auth_claims("http://localhost:3000", "u"));
    assert!(rejected(v.verify(&token).await).contains("algorithm"));
}

#[tokio::test]
async fn opaque_token_without_sessions_configured_is_rejected() {
    let v = build_verifier(&AuthConfig {
        hs256_secret: Some(HS_SECRET.into()),
        ..AuthConfig::default()
    })
    .unwrap();
    assert_eq!(
        rejected(v.verify("Xq3bK9mZpL2vR7tY1wE5uI8oA4sD6fGh").await),
        "bearer token is not a JWT"
    );
    assert!(rejected(v.verify("").await).contains("empty"));
    assert!(rejected(v.verify(&"a".repeat(9000)).await).contains("longer than"));
}

#[tokio::test]
async fn nothing_configured_is_an_error() {
    assert!(build_verifier(&AuthConfig::default()).is_err());
}

#[tokio::test]
async fn invalid_urls_are_errors_at_build_time() {
    assert!(
        build_verifier(&AuthConfig {
            jwks_url: Some("ftp://x/jwks".into()),
            ..AuthConfig::default()
        })
        .is_err()
    );
    assert!(
        build_verifier(&AuthConfig {
            session_database_url: Some("postgres://h/db?sslmode=bogus".into()),
            ..AuthConfig::default()
        })
        .is_err()
    );
}

#[tokio::test]
async fn starts_while_better_auth_is_down_then_recovers() {
    let key = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&key])).await;
    server.fail_with(503, "not yet");
    let v = build_verifier(&config(&server)).unwrap();
    let token = key.sign(&better_auth_claims(&server.origin, "u"));
    assert!(matches!(
        v.verify(&token).await,
        Err(VerifyError::UnavailableBecause { .. })
    ));
    server.serve(&jwks_of(&[&key]));
    assert_eq!(v.verify(&token).await.unwrap().as_str(), "u");
}

#[tokio::test]
async fn debug_output_hides_secrets() {
    let c = AuthConfig {
        hs256_secret: Some("hs-secret-value".into()),
        better_auth_secret: Some("ba-secret-value".into()),
        session_database_url: Some("postgres://u:db-password@h/db".into()),
        jwks_url: Some("https://u:jwks-password@auth.example/jwks".into()),
        better_auth_url: Some("https://u:ba-url-password@auth.example".into()),
        ..AuthConfig::default()
    };
    let dump = format!("{c:?} {:?}", c.jwks().unwrap());
    for s in [
        "hs-secret-value",
        "ba-secret-value",
        "db-password",
        "jwks-password",
        "ba-url-password",
    ] {
        assert!(!dump.contains(s), "{dump}");
    }
}
