use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use tasks_domain::OwnerId;
use tasks_ports::VerifyError;

/// Tokens longer than this are refused before any parsing: no legitimate
/// token is near it, and it bounds the work an attacker can ask for.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claim checks every JWT verifier applies.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    /// Clock skew tolerated on `exp` (and `nbf`), in seconds; at most 60.
    pub leeway_secs: u64,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required `aud` (one of), if any. Without it, tokens carrying an `aud`
    /// are accepted whatever it says.
    pub audience: Option<String>,
}

impl Default for ClaimRules {
    fn default() -> Self {
        Self {
            leeway_secs: 60,
            issuer: None,
            audience: None,
        }
    }
}

impl ClaimRules {
    pub(crate) fn validation(&self, algorithms: &[Algorithm]) -> Validation {
        let mut v = Validation::new(algorithms.first().copied().unwrap_or(Algorithm::HS256));
        v.algorithms = algorithms.to_vec();
        v.leeway = self.leeway_secs.min(60);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        v
    }
}

/// The claims this service reads. Everything else in the token is ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Claims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
}

impl Claims {
    pub(crate) fn owner(&self) -> Result<OwnerId, VerifyError> {
        match &self.sub {
            None => Err(VerifyError::rejected("token has no subject (sub)")),
            Some(serde_json::Value::String(s)) => OwnerId::parse(s).map_err(|e| {
                VerifyError::rejected(format!("token subject is not acceptable: {e}"))
            }),
            _ => Err(VerifyError::rejected("token subject must be a string")),
        }
    }
}

/// Cheap checks before any decoding.
pub(crate) fn precheck(token: &str) -> Result<(), VerifyError> {
    if token.is_empty() {
        return Err(VerifyError::rejected("bearer token is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::rejected(format!(
            "token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A client-safe reason for a jsonwebtoken failure.
pub(crate) fn rejection(err: &jsonwebtoken::errors::Error) -> VerifyError {
    let reason = match err.kind() {
        ErrorKind::ExpiredSignature => "token has expired",
        ErrorKind::ImmatureSignature => "token is not valid yet",
        ErrorKind::InvalidSignature => "token signature is invalid",
        ErrorKind::InvalidIssuer => "token issuer is not accepted",
        ErrorKind::InvalidAudience => "token audience is not accepted",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => "token algorithm is not accepted",
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => "token has no expiry (exp)",
        ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => "token has no subject (sub)",
        ErrorKind::MissingRequiredClaim(_) => "token is missing a required claim",
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => "token claims are malformed",
        _ => "token is malformed",
    };
    VerifyError::rejected(reason)
}
