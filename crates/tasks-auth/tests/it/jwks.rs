//! JwksVerifier against a JWKS served over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tasks_auth::{ClaimRules, JwksConfig, JwksVerifier};
use tasks_ports::{TokenVerifier, VerifyError};

use crate::support::*;

fn config(server: &JwksServer) -> JwksConfig {
    let rules = ClaimRules {
        issuer: Some(server.origin.clone()),
        audience: Some(server.origin.clone()),
        ..ClaimRules::default()
    };
    let mut c = JwksConfig::new(server.jwks_url(), rules);
    c.fetch_timeout = Duration::from_secs(2);
    c
}

fn verifier(server: &JwksServer) -> JwksVerifier {
    JwksVerifier::new(config(server)).unwrap()
}

fn with(server: &JwksServer, f: impl FnOnce(&mut JwksConfig)) -> JwksVerifier {
    let mut c = config(server);
    f(&mut c);
    JwksVerifier::new(c).unwrap()
}

fn rejected(r: Result<tasks_domain::OwnerId, VerifyError>) -> String {
    match r {
        Err(VerifyError::Rejected(m)) => m,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn unavailable(r: Result<tasks_domain::OwnerId, VerifyError>) {
    assert!(
        matches!(
            r,
            Err(VerifyError::Unavailable(_) | VerifyError::UnavailableBecause { .. })
        ),
        "expected Unavailable, got {r:?}"
    );
}

async fn setup(keys: &[&TestKey]) -> (JwksServer, JwksVerifier) {
    let server = JwksServer::start(&jwks_of(keys)).await;
    let v = verifier(&server);
    (server, v)
}

// ---- accepted tokens -------------------------------------------------------

#[tokio::test]
async fn accepts_better_auth_eddsa_token() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let token = key.sign(&better_auth_claims(&server.origin, "user-a"));
    assert_eq!(v.verify(&token).await.unwrap().as_str(), "user-a");
}

#[tokio::test]
async fn accepts_es256_token() {
    let key = TestKey::es256();
    let (server, v) = setup(&[&key]).await;
    let token = key.sign(&better_auth_claims(&server.origin, "user-es"));
    assert_eq!(v.verify(&token).await.unwrap().as_str(), "user-es");
}

#[tokio::test]
async fn accepts_rs256_token() {
    let key = TestKey::rsa(Algorithm::RS256, "rs");
    let (server, v) = setup(&[&key]).await;
    let token = key.sign(&better_auth_claims(&server.origin, "user-rs"));
    assert_eq!(v.verify(&token).await.unwrap().as_str(), "user-rs");
}

#[tokio::test]
async fn accepts_ps256_token() {
    let key = TestKey::rsa(Algorithm::PS256, "ps");
    let (server, v) = setup(&[&key]).await;
    let token = key.sign(&better_auth_claims(&server.origin, "user-ps"));
    assert_eq!(v.verify(&token).await.unwrap().as_str(), "user-ps");
}

#[tokio::test]
async fn jwk_without_alg_takes_it_from_the_key_type() {
    let mut key = TestKey::eddsa_a();
    key.jwk.as_object_mut().unwrap().remove("alg");
    let (server, v) = setup(&[&key]).await;
    let token = key.sign(&better_auth_claims(&server.origin, "u"));
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn token_without_kid_is_accepted_only_when_one_key_fits() {
    let a = TestKey::eddsa_a();
    let b = TestKey::eddsa_b();
    let mut header = a.header();
    header.kid = None;
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let claims = better_auth_claims(&server.origin, "u");
    let token = a.sign_with(header.clone(), &claims);
    assert!(verifier(&server).verify(&token).await.is_ok());
    server.serve(&jwks_of(&[&a, &b]));
    assert!(rejected(verifier(&server).verify(&token).await).contains("kid"));
}

// ---- rejections ------------------------------------------------------------

#[tokio::test]
async fn rejects_alg_none() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let token = forge(
        &json!({"alg": "none", "kid": key.kid}),
        &better_auth_claims(&server.origin, "u"),
        b"",
    );
    assert!(rejected(v.verify(&token).await).contains("alg none"));
    let token = forge(
        &json!({"alg": "None"}),
        &better_auth_claims(&server.origin, "u"),
        b"",
    );
    assert!(rejected(v.verify(&token).await).contains("algorithm"));
}

#[tokio::test]
async fn rejects_es512_cleanly() {
    let key = TestKey::eddsa_a();
    let mut p521 = json!({"kty": "EC", "crv": "P-521", "alg": "ES512", "kid": "p521",
        "x": "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk",
        "y": "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2"});
    p521["use"] = json!("sig");
    let server = JwksServer::start(&json!({"keys": [key.jwk, p521]})).await;
    let v = verifier(&server);
    let token = forge(
        &json!({"alg": "ES512", "kid": "p521"}),
        &better_auth_claims(&server.origin, "u"),
        &[7u8; 132],
    );
    assert!(rejected(v.verify(&token).await).contains("ES512"));
    // The unusable key did not spoil the set.
    let good = key.sign(&better_auth_claims(&server.origin, "u"));
    assert!(v.verify(&good).await.is_ok());
}

#[tokio::test]
async fn rejects_hs256_signed_with_the_public_key() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let claims = better_auth_claims(&server.origin, "u");
    let x = key.jwk["x"].as_str().unwrap().to_owned();
    let raw_public =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &x).unwrap();
    for secret in [
        raw_public.clone(),
        x.into_bytes(),
        key.jwk.to_string().into_bytes(),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        assert!(rejected(v.verify(&token).await).contains("algorithm"));
    }
}

#[tokio::test]
async fn rejects_header_alg_that_differs_from_the_keys() {
    let ed = TestKey::eddsa_a();
    let rs = TestKey::rsa(Algorithm::RS256, "rs-only");
    let (server, v) = setup(&[&ed, &rs]).await;
    let claims = better_auth_claims(&server.origin, "u");
    // Signed PS256 by the RSA key that the JWKS pins to RS256.
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some(rs.kid.clone());
    let token = rs.sign_with(header, &claims);
    assert!(rejected(v.verify(&token).await).contains("does not match"));
    // An EdDSA kid with an ES256 header.
    let es = TestKey::es256();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(ed.kid.clone());
    let token = es.sign_with(header, &claims);
    assert!(rejected(v.verify(&token).await).contains("does not match"));
}

#[tokio::test]
async fn rejects_unknown_kid_after_a_refetch() {
    let key = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&key])).await;
    let v = with(&server, |c| c.refresh_cooldown = Duration::ZERO);
    let ok = key.sign(&better_auth_claims(&server.origin, "u"));
    v.verify(&ok).await.unwrap();
    assert_eq!(server.hits(), 1);
    let stranger = TestKey::attacker();
    let token = stranger.sign(&better_auth_claims(&server.origin, "u"));
    assert!(rejected(v.verify(&token).await).contains("kid"));
    assert_eq!(server.hits(), 2, "an unknown kid causes one refetch");
}

#[tokio::test]
async fn rejects_wrong_issuer() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let mut claims = better_auth_claims(&server.origin, "u");
    claims["iss"] = json!("http://evil.example");
    assert_eq!(
        rejected(v.verify(&key.sign(&claims)).await),
        format!(
            "token issuer is not accepted: expected {:?} (JWT_ISSUER; for Better Auth jwt() tokens the default is the origin of BETTER_AUTH_URL, which must equal the frontend's BETTER_AUTH_URL origin exactly)",
            server.origin
        )
    );
}

#[tokio::test]
async fn rejects_wrong_audience() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let mut claims = better_auth_claims(&server.origin, "u");
    claims["aud"] = json!("http://other-app.example");
    assert_eq!(
        rejected(v.verify(&key.sign(&claims)).await),
        format!(
            "token audience is not accepted: expected {:?} (JWT_AUDIENCE; for Better Auth jwt() tokens the default is the origin of BETTER_AUTH_URL, which must equal the frontend's BETTER_AUTH_URL origin exactly)",
            server.origin
        )
    );
}

#[tokio::test]
async fn rejects_missing_issuer_or_audience() {
    // Better Auth always sets both; a token without them was minted by
    // something else with the same key, for another purpose.
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    for (claim, reason) in [
        ("aud", "token has no audience (aud)"),
        ("iss", "token has no issuer (iss)"),
    ] {
        let mut claims = better_auth_claims(&server.origin, "u");
        claims.as_object_mut().unwrap().remove(claim);
        assert_eq!(rejected(v.verify(&key.sign(&claims)).await), reason);
    }
    let mut claims = better_auth_claims(&server.origin, "u");
    claims.as_object_mut().unwrap().remove("aud");
    claims.as_object_mut().unwrap().remove("iss");
    assert!(v.verify(&key.sign(&claims)).await.is_err());
}

#[tokio::test]
async fn maximum_token_age_applies_to_better_auth_tokens() {
    let key = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&key])).await;
    let v = with(&server, |c| c.rules.max_age_secs = Some(900));
    // Better Auth's default: 15 minutes from iat.
    let fresh = key.sign(&better_auth_claims(&server.origin, "u"));
    assert_eq!(v.verify(&fresh).await.unwrap().as_str(), "u");
    let mut old = better_auth_claims(&server.origin, "u");
    old["iat"] = json!(now() - 3600);
    old["exp"] = json!(now() + 86_400);
    assert_eq!(
        rejected(v.verify(&key.sign(&old)).await),
        "token is older than the maximum token age"
    );
    let mut no_iat = better_auth_claims(&server.origin, "u");
    no_iat.as_object_mut().unwrap().remove("iat");
    assert!(rejected(v.verify(&key.sign(&no_iat)).await).contains("iat"));
}

#[tokio::test]
async fn credentials_in_the_jwks_url_never_reach_error_messages() {
    let a = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let token = a.sign(&better_auth_claims(&server.origin, "u"));
    let url = server
        .jwks_url()
        .replace("http://", "http://jwks-user:jwks-pa55word@")
        + "?access_token=query-secret";
    let mut with_credentials = config(&server);
    with_credentials.url = url;
    with_credentials.refresh_cooldown = Duration::ZERO;
    assert!(!format!("{with_credentials:?}").contains("pa55word"));
    let make = || JwksVerifier::new(with_credentials.clone()).unwrap();
    // An HTTP error status, then a refused connection (reqwest's own error).
    server.fail_with(503, "down");
    let first = make().verify(&token).await;
    server.stop().await;
    let second = make().verify(&token).await;
    for result in [first, second] {
        let Err(VerifyError::UnavailableBecause { detail, source: e }) = result else {
            panic!("expected Unavailable, got {result:?}");
        };
        // The client-facing detail says what failed, with the URL redacted.
        assert!(
            detail.contains("signing keys could not be fetched"),
            "{detail}"
        );
        let message = format!("{detail} {e:#} {e:?}");
        assert!(message.contains("jwks-user:***@"), "{message}");
        for secret in ["jwks-pa55word", "query-secret"] {
            assert!(!message.contains(secret), "{message}");
        }
    }
}

#[tokio::test]
async fn rejects_missing_exp() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let mut claims = better_auth_claims(&server.origin, "u");
    claims.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        rejected(v.verify(&key.sign(&claims)).await),
        "token has no expiry (exp)"
    );
}

#[tokio::test]
async fn rejects_expired_token() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let mut claims = better_auth_claims(&server.origin, "u");
    claims["exp"] = json!(now() - 3600);
    assert_eq!(
        rejected(v.verify(&key.sign(&claims)).await),
        "token has expired"
    );
}

#[tokio::test]
async fn rejects_non_string_sub() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let mut claims = better_auth_claims(&server.origin, "u");
    claims["sub"] = json!(12345);
    assert_eq!(
        rejected(v.verify(&key.sign(&claims)).await),
        "token subject must be a string"
    );
}

#[tokio::test]
async fn rejects_empty_sub() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let claims = better_auth_claims(&server.origin, "");
    assert!(rejected(v.verify(&key.sign(&claims)).await).contains("subject"));
}

#[tokio::test]
async fn rejects_token_over_8_kib() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let mut claims = better_auth_claims(&server.origin, "u");
    claims["pad"] = json!("x".repeat(9000));
    assert!(rejected(v.verify(&key.sign(&claims)).await).contains("longer than"));
    assert_eq!(server.hits(), 0, "rejected before any key lookup");
}

#[tokio::test]
async fn rejects_bad_signature() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let token = key.sign(&better_auth_claims(&server.origin, "u"));
    let (head, _) = token.rsplit_once('.').unwrap();
    let other = key.sign(&better_auth_claims(&server.origin, "someone-else"));
    let (_, sig) = other.rsplit_once('.').unwrap();
    assert_eq!(
        rejected(v.verify(&format!("{head}.{sig}")).await),
        "token signature is invalid"
    );
}

#[tokio::test]
async fn rejects_crit_header() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let token = forge(
        &json!({"alg": "EdDSA", "kid": key.kid, "crit": ["exp"]}),
        &better_auth_claims(&server.origin, "u"),
        &[0u8; 64],
    );
    assert!(rejected(v.verify(&token).await).contains("crit"));
}

#[tokio::test]
async fn ignores_jku_x5u_and_embedded_jwk_headers() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    let evil_server = JwksServer::start(&jwks_of(&[&TestKey::attacker()])).await;
    let attacker = TestKey::attacker();
    let mut header = attacker.header();
    header.jku = Some(evil_server.jwks_url());
    header.x5u = Some(evil_server.jwks_url());
    header.jwk = Some(serde_json::from_value(attacker.jwk.clone()).unwrap());
    let token = attacker.sign_with(header, &better_auth_claims(&server.origin, "u"));
    assert!(rejected(v.verify(&token).await).contains("kid"));
    assert_eq!(evil_server.hits(), 0, "jku/x5u must never be fetched");
    // Even with the kid of a trusted key, the embedded jwk is not used.
    let mut header = attacker.header();
    header.kid = Some(key.kid.clone());
    header.jwk = Some(serde_json::from_value(attacker.jwk.clone()).unwrap());
    let token = attacker.sign_with(header, &better_auth_claims(&server.origin, "u"));
    assert_eq!(
        rejected(v.verify(&token).await),
        "token signature is invalid"
    );
}

#[tokio::test]
async fn kid_is_only_compared_with_cached_kids() {
    let key = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&key])).await;
    let v = with(&server, |c| c.refresh_cooldown = Duration::ZERO);
    for kid in [
        "../../../etc/passwd",
        "' OR '1'='1",
        "%2e%2e/jwks?x=",
        "http://evil.example/k",
    ] {
        let mut header = key.header();
        header.kid = Some(kid.to_owned());
        let token = key.sign_with(header, &better_auth_claims(&server.origin, "u"));
        assert!(rejected(v.verify(&token).await).contains("kid"));
    }
    assert!(
        server.paths().iter().all(|p| p == "/api/auth/jwks"),
        "{:?}",
        server.paths()
    );
}

#[tokio::test]
async fn jwks_keys_unfit_for_signatures_are_skipped() {
    let key = TestKey::eddsa_a();
    let mut enc = TestKey::eddsa_b().jwk;
    enc["use"] = json!("enc");
    let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "oct", "alg": "HS256"});
    let server = JwksServer::start(&json!({"keys": [oct, enc, key.jwk]})).await;
    let v = verifier(&server);
    let claims = better_auth_claims(&server.origin, "u");
    assert!(v.verify(&key.sign(&claims)).await.is_ok());
    assert!(v.verify(&TestKey::eddsa_b().sign(&claims)).await.is_err());
    let hs = jsonwebtoken::encode(
        &Header {
            kid: Some("oct".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims,
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert!(rejected(v.verify(&hs).await).contains("algorithm"));
}

// ---- key cache -------------------------------------------------------------

#[tokio::test]
async fn nothing_is_fetched_at_construction() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    tokio::task::yield_now().await;
    assert_eq!(server.hits(), 0);
    assert_eq!(v.fetch_count(), 0);
}

#[tokio::test]
async fn keys_are_cached() {
    let key = TestKey::eddsa_a();
    let (server, v) = setup(&[&key]).await;
    for i in 0..20 {
        let token = key.sign(&better_auth_claims(&server.origin, &format!("u{i}")));
        v.verify(&token).await.unwrap();
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn unknown_kid_triggers_a_refetch_after_rotation() {
    let a = TestKey::eddsa_a();
    let b = TestKey::eddsa_b();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let v = with(&server, |c| c.refresh_cooldown = Duration::ZERO);
    v.verify(&a.sign(&better_auth_claims(&server.origin, "u")))
        .await
        .unwrap();
    server.serve(&jwks_of(&[&b, &a]));
    let token_b = b.sign(&better_auth_claims(&server.origin, "u"));
    assert_eq!(v.verify(&token_b).await.unwrap().as_str(), "u");
    assert_eq!(server.hits(), 2);
    // Both keys now come from the cache.
    v.verify(&a.sign(&better_auth_claims(&server.origin, "u")))
        .await
        .unwrap();
    v.verify(&token_b).await.unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_100_tokens_with_a_new_kid_causes_one_fetch() {
    let a = TestKey::eddsa_a();
    let b = TestKey::eddsa_b();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let v = with(&server, |c| c.refresh_cooldown = Duration::ZERO);
    v.verify(&a.sign(&better_auth_claims(&server.origin, "u")))
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);
    server.serve(&jwks_of(&[&a, &b]));
    server.delay(Duration::from_millis(100));
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (v, barrier) = (v.clone(), barrier.clone());
        let token = b.sign(&better_auth_claims(&server.origin, &format!("u{i}")));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            v.verify(&token).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_ok());
    }
    assert_eq!(server.hits(), 2, "exactly one fetch for the burst");
    assert_eq!(v.fetch_count(), 2);
}

#[tokio::test]
async fn cooldown_limits_refetches_for_unknown_kids() {
    let a = TestKey::eddsa_a();
    let b = TestKey::eddsa_b();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let v = with(&server, |c| c.refresh_cooldown = Duration::from_secs(3600));
    v.verify(&a.sign(&better_auth_claims(&server.origin, "u")))
        .await
        .unwrap();
    server.serve(&jwks_of(&[&a, &b]));
    let token_b = b.sign(&better_auth_claims(&server.origin, "u"));
    for _ in 0..5 {
        assert!(rejected(v.verify(&token_b).await).contains("kid"));
        let stranger = TestKey::attacker().sign(&better_auth_claims(&server.origin, "u"));
        assert!(rejected(v.verify(&stranger).await).contains("kid"));
    }
    assert_eq!(server.hits(), 1, "no refetch within the cooldown");
}

#[tokio::test]
async fn stale_key_set_is_refreshed_on_next_use() {
    let a = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let v = with(&server, |c| {
        c.max_age = Duration::ZERO;
        c.refresh_cooldown = Duration::ZERO;
    });
    let token = a.sign(&better_auth_claims(&server.origin, "u"));
    v.verify(&token).await.unwrap();
    v.verify(&token).await.unwrap();
    // The refresh runs in the background: wait for it, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.hits() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.hits() >= 2);
}

#[tokio::test]
async fn endpoint_down_cached_keys_keep_working() {
    let a = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let v = with(&server, |c| {
        c.max_age = Duration::ZERO; // every use wants a refresh
        c.refresh_cooldown = Duration::ZERO;
    });
    let token = a.sign(&better_auth_claims(&server.origin, "u"));
    v.verify(&token).await.unwrap();
    server.fail_with(503, "down");
    for _ in 0..5 {
        assert_eq!(v.verify(&token).await.unwrap().as_str(), "u");
    }
    server.stop().await;
    for _ in 0..5 {
        assert_eq!(v.verify(&token).await.unwrap().as_str(), "u");
    }
}

#[tokio::test]
async fn endpoint_down_unknown_kid_is_unavailable_not_rejected() {
    let a = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let v = with(&server, |c| c.refresh_cooldown = Duration::ZERO);
    v.verify(&a.sign(&better_auth_claims(&server.origin, "u")))
        .await
        .unwrap();
    server.stop().await;
    let token_b = TestKey::eddsa_b().sign(&better_auth_claims(&server.origin, "u"));
    unavailable(v.verify(&token_b).await);
}

#[tokio::test]
async fn endpoint_down_and_nothing_cached_is_unavailable() {
    let a = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let token = a.sign(&better_auth_claims(&server.origin, "u"));
    let v = verifier(&server);
    server.stop().await;
    unavailable(v.verify(&token).await);
}

#[tokio::test]
async fn endpoint_erroring_and_nothing_cached_is_unavailable() {
    let a = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    let token = a.sign(&better_auth_claims(&server.origin, "u"));
    server.fail_with(500, "{\"error\":\"boom\"}");
    unavailable(
        with(&server, |c| c.refresh_cooldown = Duration::ZERO)
            .verify(&token)
            .await,
    );
    server.serve(&json!({"keys": "not-a-list"}));
    unavailable(
        with(&server, |c| c.refresh_cooldown = Duration::ZERO)
            .verify(&token)
            .await,
    );
    server.serve(&json!({"keys": []}));
    unavailable(
        with(&server, |c| c.refresh_cooldown = Duration::ZERO)
            .verify(&token)
            .await,
    );
}

#[tokio::test]
async fn service_recovers_when_better_auth_comes_up_later() {
    let a = TestKey::eddsa_a();
    let server = JwksServer::start(&jwks_of(&[&a])).await;
    server.fail_with(502, "starting");
    let v = with(&server, |c| c.refresh_cooldown = Duration::ZERO);
    let token = a.sign(&better_auth_claims(&server.origin, "u"));
    unavailable(v.verify(&token).await);
    server.serve(&jwks_of(&[&a]));
    assert_eq!(v.verify(&token).await.unwrap().as_str(), "u");
}
