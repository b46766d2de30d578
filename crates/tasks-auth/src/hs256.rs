use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use tasks_domain::OwnerId;
use tasks_ports::{TokenVerifier, VerifyError};

use crate::claims::{ClaimRules, Claims, Verified, precheck, rejection};

/// Verifies HS256 JWTs signed with a shared secret.
pub struct Hs256Verifier {
    key: DecodingKey,
    validation: Validation,
    rules: ClaimRules,
}

impl Hs256Verifier {
    #[must_use]
    pub fn new(secret: &[u8], rules: &ClaimRules) -> Self {
        Self {
            key: DecodingKey::from_secret(secret),
            validation: rules.validation(&[Algorithm::HS256]),
            rules: rules.clone(),
        }
    }

    /// The synchronous core of [`TokenVerifier::verify`].
    ///
    /// # Errors
    /// [`VerifyError::Rejected`] for any token that is not a valid HS256 JWT
    /// signed with this secret, unexpired, with a string `sub`.
    pub fn verify_sync(&self, token: &str) -> Result<OwnerId, VerifyError> {
        self.verify_detailed(token).map(|v| v.owner)
    }

    /// As [`Hs256Verifier::verify_sync`], also telling until when the token
    /// holds (its `exp`).
    ///
    /// # Errors
    /// As [`Hs256Verifier::verify_sync`].
    pub fn verify_detailed(&self, token: &str) -> Result<Verified, VerifyError> {
        precheck(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| rejection(&e, &self.rules))?;
        data.claims.verified(&self.rules)
    }
}

#[async_trait]
impl TokenVerifier for Hs256Verifier {
    async fn verify(&self, token: &str) -> Result<OwnerId, VerifyError> {
        self.verify_sync(token)
    }
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 token for `subject`, valid for `ttl_secs` from now; used by
/// `tasks-server token` and by tests.
///
/// # Errors
/// Only if signing fails, which does not happen for HMAC.
pub fn issue_hs256(
    secret: &[u8],
    subject: &str,
    ttl_secs: u64,
    rules: &ClaimRules,
) -> anyhow::Result<String> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = IssuedClaims {
        sub: subject,
        iat: now,
        exp: now.saturating_add(ttl_secs),
        iss: rules.issuer.as_deref(),
        aud: rules.audience.as_deref(),
    };
    let header = Header::new(Algorithm::HS256);
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"a-test-secret-that-is-long-enough!!";

    fn sign(claims: &serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn verifier() -> Hs256Verifier {
        Hs256Verifier::new(SECRET, &ClaimRules::default())
    }

    fn rejected(r: Result<OwnerId, VerifyError>) -> String {
        match r {
            Err(VerifyError::Rejected(m)) => m,
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn issued_token_round_trips() {
        let t = issue_hs256(SECRET, "user-1", 60, &ClaimRules::default()).unwrap();
        assert_eq!(verifier().verify_sync(&t).unwrap().as_str(), "user-1");
    }

    #[test]
    fn rejects_wrong_secret() {
        let t = issue_hs256(
            b"another-secret-of-some-length!!!",
            "u",
            60,
            &ClaimRules::default(),
        )
        .unwrap();
        assert_eq!(
            rejected(verifier().verify_sync(&t)),
            "token signature is invalid"
        );
    }

    #[test]
    fn rejects_expired_beyond_leeway_but_accepts_within() {
        let v = verifier();
        let old = sign(
            &json!({"sub": "u", "exp": now() - 120}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(rejected(v.verify_sync(&old)), "token has expired");
        let recent = sign(
            &json!({"sub": "u", "exp": now() - 30}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(v.verify_sync(&recent).is_ok());
    }

    #[test]
    fn leeway_is_capped_at_sixty_seconds() {
        let rules = ClaimRules {
            leeway_secs: 3600,
            ..ClaimRules::default()
        };
        let v = Hs256Verifier::new(SECRET, &rules);
        let old = sign(
            &json!({"sub": "u", "exp": now() - 120}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(v.verify_sync(&old).is_err());
    }

    #[test]
    fn requires_exp_and_sub() {
        let v = verifier();
        let no_exp = sign(&json!({"sub": "u"}), Algorithm::HS256, SECRET);
        assert_eq!(
            rejected(v.verify_sync(&no_exp)),
            "token has no expiry (exp)"
        );
        let no_sub = sign(&json!({"exp": now() + 60}), Algorithm::HS256, SECRET);
        assert_eq!(
            rejected(v.verify_sync(&no_sub)),
            "token has no subject (sub)"
        );
    }

    #[test]
    fn sub_must_be_a_non_empty_string() {
        let v = verifier();
        for sub in [
            json!(42),
            json!(""),
            json!(null),
            json!(["a"]),
            json!({"id": "a"}),
        ] {
            let t = sign(
                &json!({"sub": sub, "exp": now() + 60}),
                Algorithm::HS256,
                SECRET,
            );
            assert!(v.verify_sync(&t).is_err(), "sub {sub} accepted");
        }
    }

    #[test]
    fn rejects_other_algorithms() {
        let t = sign(
            &json!({"sub": "u", "exp": now() + 60}),
            Algorithm::HS512,
            SECRET,
        );
        assert_eq!(
            rejected(verifier().verify_sync(&t)),
            "token algorithm is not accepted"
        );
    }

    #[test]
    fn rejects_alg_none_and_garbage() {
        let v = verifier();
        // {"alg":"none","typ":"JWT"} . {"sub":"u","exp":9999999999} . (empty)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(v.verify_sync(none).is_err());
        for junk in ["", "abc", "a.b.c", "....", "eyJ.eyJ.x"] {
            assert!(v.verify_sync(junk).is_err(), "{junk:?} accepted");
        }
    }

    #[test]
    fn rejects_oversized_tokens() {
        let big = "x".repeat(20_000);
        let t = sign(
            &json!({"sub": "u", "exp": now() + 60, "pad": big}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(rejected(verifier().verify_sync(&t)).contains("longer than"));
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let rules = ClaimRules {
            issuer: Some("https://auth.example".into()),
            audience: Some("tasks".into()),
            ..ClaimRules::default()
        };
        let v = Hs256Verifier::new(SECRET, &rules);
        let good = issue_hs256(SECRET, "u", 60, &rules).unwrap();
        assert!(v.verify_sync(&good).is_ok());
        let bad_aud = sign(
            &json!({"sub": "u", "exp": now() + 60, "iss": "https://auth.example", "aud": "other"}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(
            rejected(v.verify_sync(&bad_aud)),
            "token audience is not accepted: expected \"tasks\" (JWT_AUDIENCE; for Better Auth jwt() tokens the default is the origin of BETTER_AUTH_URL, which must equal the frontend's BETTER_AUTH_URL origin exactly)"
        );
        let bad_iss = sign(
            &json!({"sub": "u", "exp": now() + 60, "iss": "https://evil.example", "aud": "tasks"}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(
            rejected(v.verify_sync(&bad_iss)),
            "token issuer is not accepted: expected \"https://auth.example\" (JWT_ISSUER; for Better Auth jwt() tokens the default is the origin of BETTER_AUTH_URL, which must equal the frontend's BETTER_AUTH_URL origin exactly)"
        );
    }

    #[test]
    fn configured_issuer_and_audience_are_required() {
        let rules = ClaimRules {
            issuer: Some("https://auth.example".into()),
            audience: Some("tasks".into()),
            ..ClaimRules::default()
        };
        let v = Hs256Verifier::new(SECRET, &rules);
        let neither = sign(
            &json!({"sub": "u", "exp": now() + 60}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(v.verify_sync(&neither).is_err());
        let no_aud = sign(
            &json!({"sub": "u", "exp": now() + 60, "iss": "https://auth.example"}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(
            rejected(v.verify_sync(&no_aud)),
            "token has no audience (aud)"
        );
        let no_iss = sign(
            &json!({"sub": "u", "exp": now() + 60, "aud": "tasks"}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(
            rejected(v.verify_sync(&no_iss)),
            "token has no issuer (iss)"
        );
        // Only an audience configured: the issuer stays optional.
        let aud_only = Hs256Verifier::new(
            SECRET,
            &ClaimRules {
                audience: Some("tasks".into()),
                ..ClaimRules::default()
            },
        );
        let with_aud = sign(
            &json!({"sub": "u", "exp": now() + 60, "aud": "tasks"}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(aud_only.verify_sync(&with_aud).is_ok());
        assert_eq!(
            rejected(aud_only.verify_sync(&neither)),
            "token has no audience (aud)"
        );
    }

    #[test]
    fn maximum_token_age_counts_from_iat() {
        let rules = ClaimRules {
            max_age_secs: Some(3600),
            ..ClaimRules::default()
        };
        let v = Hs256Verifier::new(SECRET, &rules);
        let t = now();
        let fresh = sign(
            &json!({"sub": "u", "iat": t, "exp": t + 7 * 86400}),
            Algorithm::HS256,
            SECRET,
        );
        // Seven days of `exp` are cut down to the hour since `iat`.
        let verified = v.verify_detailed(&fresh).unwrap();
        let limit = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t + 3600);
        assert!(verified.valid_until <= limit);
        let old = sign(
            &json!({"sub": "u", "iat": t - 3600 - 120, "exp": t + 86400}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(
            rejected(v.verify_sync(&old)),
            "token is older than the maximum token age"
        );
        let no_iat = sign(
            &json!({"sub": "u", "exp": t + 60}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(rejected(v.verify_sync(&no_iat)).contains("no issue time (iat)"));
        let future = sign(
            &json!({"sub": "u", "iat": t + 600, "exp": t + 900}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(rejected(v.verify_sync(&future)).contains("in the future"));
        let text_iat = sign(
            &json!({"sub": "u", "iat": "yesterday", "exp": t + 60}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(v.verify_sync(&text_iat).is_err());
        // Without a maximum age, `iat` is not needed.
        assert!(verifier().verify_sync(&no_iat).is_ok());
    }

    #[test]
    fn without_configured_audience_any_aud_is_accepted() {
        let t = sign(
            &json!({"sub": "u", "exp": now() + 60, "aud": "whatever"}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(verifier().verify_sync(&t).is_ok());
    }
}
