//! The JWT attack list (RFC 8725 and the usual tools), over HTTP against the
//! running service: every forged token is a 401, and nothing is fetched from
//! URLs a token names. (Algorithm confusion against the JWKS verifier is
//! covered in tasks-auth's tests and the Better Auth interop tests.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::helpers::{Backend, SECRET, TestApp, assert_error, b64, now};
use crate::on_both_backends;

/// A token from raw header and payload text, HMAC-SHA256-signed with `key`.
fn raw_token(header: &str, payload: &str, key: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(key),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{signing_input}.{sig}")
}

async fn rejected(app: &TestApp, token: &str) {
    let res = app
        .client
        .get(app.url("/api/tasks"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "authentication_error").await;
}

fn claims() -> String {
    json!({"sub": "alice", "exp": now() + 600}).to_string()
}

async fn none_and_unsigned_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}").as_bytes());
        rejected(&app, &format!("{header}.{}.", b64(claims().as_bytes()))).await;
        rejected(&app, &format!("{header}.{}", b64(claims().as_bytes()))).await;
    }
    // A valid header and payload with the signature stripped.
    let good = raw_token(r#"{"alg":"HS256"}"#, &claims(), SECRET.as_bytes());
    let (unsigned, _) = good.rsplit_once('.').unwrap();
    rejected(&app, &format!("{unsigned}.")).await;
}

async fn kid_injection_is_harmless(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for kid in [
        "../../../../dev/null",
        "/dev/null",
        "' OR '1'='1",
        "x'; DROP TABLE tasks; --",
        "../../etc/passwd\u{0}",
    ] {
        let header = json!({"alg": "HS256", "kid": kid}).to_string();
        // The classic: the attacker expects the key to become empty (or a
        // known file) and signs accordingly.
        for key in [&b""[..], b"\n", b"root:x:0:0:root:/root:/bin/bash\n"] {
            rejected(&app, &raw_token(&header, &claims(), key)).await;
        }
    }
    // And nothing happened to the data.
    let token = app.token("alice");
    assert_eq!(app.list(&token, "").await.status(), 200);
}

async fn jku_x5u_and_embedded_keys_are_never_followed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A server that would hand out the attacker's key; it must never be asked.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let attacker_key = b"attacker-controlled-secret-000000";
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    for header in [
        json!({"alg": "HS256", "jku": url}),
        json!({"alg": "HS256", "x5u": url}),
        json!({"alg": "HS256", "jwk": {"kty": "oct", "k": b64(attacker_key)}}),
        json!({"alg": "HS256", "jku": url, "kid": "attacker"}),
    ] {
        rejected(
            &app,
            &raw_token(&header.to_string(), &claims(), attacker_key),
        )
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the service fetched a URL named by a token"
    );
}

async fn malformed_claims_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let exp = now() + 600;
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let key = SECRET.as_bytes();
    // Correctly signed (the attacker is assumed to have a valid signing path,
    // e.g. a confused issuer), but the claims themselves are hostile.
    for payload in [
        format!(r#"{{"sub":"alice","sub":"mallory","exp":{exp}}}"#),
        format!(r#"{{"sub":"alice","exp":{exp},"exp":9999999999}}"#),
        format!(r#"{{"sub":["alice","mallory"],"exp":{exp}}}"#),
        format!(r#"{{"sub":"alice","exp":"{exp}"}}"#),
        format!(r#"{{"sub":"alice","exp":{exp}.5e400}}"#),
        format!(r#"{{"sub":"{}","exp":{exp}}}"#, "a".repeat(300)),
        format!(r#"{{"sub":"alice\u0000","exp":{exp}}}"#),
        "[1,2,3]".to_owned(),
        "\"just a string\"".to_owned(),
        "not json at all".to_owned(),
    ] {
        rejected(&app, &raw_token(header, &payload, key)).await;
    }
    // Huge claims: refused by size before any parsing. (16 KiB: over the
    // verifier's 8 KiB token limit, under the 32 KiB header limit that
    // answers 431 first; see api/limits.rs.)
    let huge = format!(
        r#"{{"sub":"alice","exp":{exp},"pad":"{}"}}"#,
        "x".repeat(16 * 1024)
    );
    rejected(&app, &raw_token(header, &huge, key)).await;
}

async fn nested_and_confused_types_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let inner = raw_token(r#"{"alg":"HS256"}"#, &claims(), SECRET.as_bytes());
    // Nested JWT: the payload is itself a (valid) token.
    let nested = raw_token(r#"{"alg":"HS256","cty":"JWT"}"#, &inner, SECRET.as_bytes());
    rejected(&app, &nested).await;
    // Encrypted-looking (JWE) five-part token, and tokens with extra parts.
    rejected(&app, &format!("{inner}.extra.parts")).await;
    rejected(&app, &format!("{}.", inner)).await;
    // Header claiming another HMAC size with our secret.
    for alg in ["HS384", "HS512"] {
        let t = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(if alg == "HS384" {
                Algorithm::HS384
            } else {
                Algorithm::HS512
            }),
            &serde_json::from_str::<Value>(&claims()).unwrap(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        rejected(&app, &t).await;
    }
}

on_both_backends!(
    none_and_unsigned_tokens,
    kid_injection_is_harmless,
    jku_x5u_and_embedded_keys_are_never_followed,
    malformed_claims_are_rejected,
    nested_and_confused_types_are_rejected,
);
