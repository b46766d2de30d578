use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
    /// Required `iss`, if any: when set, a token without `iss` is rejected.
    pub issuer: Option<String>,
    /// Required `aud` (one of), if any: when set, a token without `aud` is
    /// rejected. Without it, tokens carrying an `aud` are accepted whatever
    /// it says.
    pub audience: Option<String>,
    /// Longest accepted token lifetime, counted from `iat`
    /// (`JWT_MAX_AGE`). When set, a token without `iat`, or issued more than
    /// this long ago (plus the leeway), is rejected, whatever its `exp`.
    pub max_age_secs: Option<u64>,
}

impl Default for ClaimRules {
    fn default() -> Self {
        Self {
            leeway_secs: 60,
            issuer: None,
            audience: None,
            max_age_secs: None,
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
        // `sub` is checked by `Claims::owner`, which tells a missing subject
        // from one that is not a string; jsonwebtoken reports both as missing.
        // A configured issuer or audience is required, not only checked when
        // the token happens to carry the claim.
        let mut required = vec!["exp"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
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
    /// Already checked by jsonwebtoken (required, a number, not past); read
    /// again only to know how long a verification result may be cached.
    #[serde(default)]
    exp: Option<f64>,
    /// Only read when a maximum token age is configured.
    #[serde(default)]
    iat: Option<serde_json::Value>,
}

impl Claims {
    /// The verified identity and how long it holds: until `exp`, or until
    /// `iat` + the maximum age when that is configured and earlier.
    pub(crate) fn verified(&self, rules: &ClaimRules) -> Result<Verified, VerifyError> {
        let owner = self.owner()?;
        let exp = self
            .exp
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or_else(|| VerifyError::rejected("token has no expiry (exp)"))?;
        let mut valid_until = UNIX_EPOCH + Duration::from_secs_f64(exp.min(1e12));
        if let Some(max_age) = rules.max_age_secs {
            let iat = match &self.iat {
                Some(serde_json::Value::Number(n)) => n
                    .as_f64()
                    .filter(|i| i.is_finite() && *i >= 0.0)
                    .ok_or_else(|| VerifyError::rejected("token issue time (iat) is malformed"))?,
                None => {
                    return Err(VerifyError::rejected(
                        "token has no issue time (iat), required by the maximum token age",
                    ));
                }
                Some(_) => {
                    return Err(VerifyError::rejected(
                        "token issue time (iat) must be a number",
                    ));
                }
            };
            let leeway = rules.leeway_secs.min(60) as f64;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            if iat > now + leeway {
                return Err(VerifyError::rejected(
                    "token issue time (iat) is in the future",
                ));
            }
            let max_age = max_age as f64;
            if now - iat > max_age + leeway {
                return Err(VerifyError::rejected(
                    "token is older than the maximum token age",
                ));
            }
            let age_end = UNIX_EPOCH + Duration::from_secs_f64((iat + max_age).min(1e12));
            valid_until = valid_until.min(age_end);
        }
        Ok(Verified { owner, valid_until })
    }

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

/// A successful verification: who the caller is, and until when this answer
/// may be reused (a JWT's `exp`, a session's expiry or cache TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub owner: OwnerId,
    pub valid_until: SystemTime,
}

/// The parts of a JWS protected header this crate looks at, read before any
/// key is chosen. `jku`, `x5u`, `jwk` and `x5c` are deliberately not read:
/// keys come only from configuration.
#[derive(Debug)]
pub(crate) struct JwtHeader {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    alg: Option<serde_json::Value>,
    #[serde(default)]
    kid: Option<serde_json::Value>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Whether `token` has the shape of a JWS compact serialization.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Decodes the protected header of a compact JWS without trusting it.
pub(crate) fn parse_header(token: &str) -> Result<JwtHeader, VerifyError> {
    let malformed = || VerifyError::rejected("token header is malformed");
    let (encoded, _) = token.split_once('.').ok_or_else(malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if raw.crit.is_some() {
        return Err(VerifyError::rejected(
            "token uses critical header extensions (crit), which are not supported",
        ));
    }
    let alg = match raw.alg {
        Some(serde_json::Value::String(a)) if !a.is_empty() => a,
        _ => return Err(VerifyError::rejected("token header has no algorithm (alg)")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(VerifyError::rejected(
            "token algorithm is not accepted: unsigned tokens (alg none) are refused",
        ));
    }
    let kid = match raw.kid {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k),
        Some(_) => {
            return Err(VerifyError::rejected(
                "token key id (kid) must be a non-empty string",
            ));
        }
    };
    Ok(JwtHeader { alg, kid })
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

/// A client-safe reason for a jsonwebtoken failure. A wrong issuer or
/// audience names the expected value: it is public configuration (Better
/// Auth's origin), and it is what a frontend developer needs to fix it.
pub(crate) fn rejection(err: &jsonwebtoken::errors::Error, rules: &ClaimRules) -> VerifyError {
    let expected = |what: &str, value: &Option<String>, variable: &str| {
        VerifyError::rejected(match value {
            Some(v) => format!(
                "token {what} is not accepted: expected {v:?} ({variable}; for Better Auth jwt() tokens the default is the origin of BETTER_AUTH_URL, which must equal the frontend's BETTER_AUTH_URL origin exactly)"
            ),
            None => format!("token {what} is not accepted"),
        })
    };
    let reason = match err.kind() {
        ErrorKind::InvalidIssuer => return expected("issuer", &rules.issuer, "JWT_ISSUER"),
        ErrorKind::InvalidAudience => return expected("audience", &rules.audience, "JWT_AUDIENCE"),
        ErrorKind::ExpiredSignature => "token has expired",
        ErrorKind::ImmatureSignature => "token is not valid yet",
        ErrorKind::InvalidSignature => "token signature is invalid",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => "token algorithm is not accepted",
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => "token has no expiry (exp)",
        ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => "token has no subject (sub)",
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => "token has no issuer (iss)",
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => "token has no audience (aud)",
        ErrorKind::MissingRequiredClaim(_) => "token is missing a required claim",
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => "token claims are malformed",
        _ => "token is malformed",
    };
    VerifyError::rejected(reason)
}
