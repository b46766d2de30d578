//! What verifying one bearer token costs: EdDSA (Better Auth's default)
//! through the JWKS verifier with and without the verified-token cache, and
//! HS256 with a shared secret. Plain timing loops, no harness:
//!
//! ```text
//! cargo run --release -p tasks-auth --example verify_bench
//! ```
//!
//! The JWKS is served once from 127.0.0.1 and then comes from the key cache,
//! so the figures are signature and claim checks, not HTTP.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark: failing loudly is the point"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tasks_auth::{ClaimRules, CompositeVerifier, Hs256Verifier, JwksConfig, JwksVerifier};
use tasks_ports::TokenVerifier;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HS_SECRET: &[u8] = b"benchmark-shared-secret-0123456789abcdef";

async fn serve_jwks(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    origin
}

async fn measure(name: &str, v: &dyn TokenVerifier, token: &str) {
    // Warm up (fills the key cache and the token cache).
    for _ in 0..200 {
        v.verify(token).await.unwrap();
    }
    // Size the run to about half a second.
    let probe = Instant::now();
    let mut probe_iters = 0u32;
    while probe.elapsed() < Duration::from_millis(50) {
        black_box(v.verify(black_box(token)).await.unwrap());
        probe_iters += 1;
    }
    let iters = probe_iters.saturating_mul(10).max(1000);
    let start = Instant::now();
    for _ in 0..iters {
        black_box(v.verify(black_box(token)).await.unwrap());
    }
    let ns = start.elapsed().as_nanos() / u128::from(iters);
    println!("{name:<40} {ns:>9} ns/op  ({iters} iterations)");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ed25519-a.pem"
    ))
    .expect("test key fixture");
    let enc = EncodingKey::from_ed_pem(&pem).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::EdDSA).unwrap()).unwrap();
    jwk["kid"] = json!("bench-kid");
    let origin = serve_jwks(json!({ "keys": [jwk] }).to_string()).await;

    let rules = ClaimRules {
        issuer: Some(origin.clone()),
        audience: Some(origin.clone()),
        ..ClaimRules::default()
    };
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "iat": now, "name": "Bench", "email": "bench@example.com", "emailVerified": true,
        "image": null, "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-01-01T00:00:00.000Z", "id": "AbCdEfGhIjKlMnOpQrStUvWxYz012345",
        "sub": "AbCdEfGhIjKlMnOpQrStUvWxYz012345", "exp": now + 900,
        "iss": origin, "aud": origin,
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = None;
    header.kid = Some("bench-kid".into());
    let eddsa = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HS_SECRET),
    )
    .unwrap();

    let jwks = || {
        JwksVerifier::new(JwksConfig::new(
            format!("{origin}/api/auth/jwks"),
            rules.clone(),
        ))
        .unwrap()
    };
    let hs = || Hs256Verifier::new(HS_SECRET, &rules);

    println!(
        "token sizes: EdDSA {} bytes, HS256 {} bytes",
        eddsa.len(),
        hs256.len()
    );
    measure("EdDSA, JwksVerifier (no token cache)", &jwks(), &eddsa).await;
    let uncached = CompositeVerifier::new(Some(hs()), Some(jwks()), None, 0);
    measure("EdDSA, composite, token cache off", &uncached, &eddsa).await;
    let cached = CompositeVerifier::new(Some(hs()), Some(jwks()), None, 10_000);
    measure("EdDSA, composite, token cache on", &cached, &eddsa).await;
    measure("HS256, Hs256Verifier (no token cache)", &hs(), &hs256).await;
    measure("HS256, composite, token cache off", &uncached, &hs256).await;
    measure("HS256, composite, token cache on", &cached, &hs256).await;
}
