//! Extractors: the only ways handlers receive the caller, path ids and bodies.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;
use tasks_domain::{OwnerId, TaskId};

use crate::cookie::CookieAuth;
use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller: the owner id proven by the bearer token. Handlers
/// get the user id from here and from nowhere else.
#[derive(Debug)]
pub struct Caller(pub OwnerId);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let credential = state
            .as_ref()
            .map(|state| credential(req, state.cookie_auth.as_ref()));
        // On the `/api/{user_id}/tasks...` aliases.
        let path_user = req.match_info().get("user_id").map(str::to_owned);
        Box::pin(async move {
            let state = state
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
            let owner = match credential {
                Some(Ok(Credential::Bearer(token))) => state.verifier.verify(&token).await?,
                Some(Ok(Credential::Cookie(value))) => state.verifier.verify_cookie(&value).await?,
                Some(Err(e)) => return Err(e),
                None => return Err(ApiError::Internal(anyhow::anyhow!("no credential"))),
            };
            if let Some(limiter) = &state.rate_limiter {
                limiter.check(&owner).await.map_err(ApiError::RateLimited)?;
            }
            // Another user's id in the path answers exactly as a task that
            // does not exist: nothing tells a prober whether that user exists.
            if path_user.is_some_and(|user| user != owner.as_str()) {
                return Err(ApiError::TaskNotFound);
            }
            Ok(Self(owner))
        })
    }
}

/// What a request authenticated with, kept by an event stream to check it
/// again while the stream is open.
pub enum Credential {
    Bearer(String),
    Cookie(String),
}

impl Credential {
    /// The request's credential, as [`Caller`] reads it.
    ///
    /// # Errors
    /// As [`Caller`]'s: no or malformed credential, or the CSRF rule.
    pub fn of(req: &HttpRequest, state: &AppState) -> Result<Self, ApiError> {
        credential(req, state.cookie_auth.as_ref())
    }

    /// Verifies it again, through the same verifier (and its cache).
    ///
    /// # Errors
    /// The verifier's refusal or unavailability.
    pub async fn verify(
        &self,
        verifier: &dyn tasks_ports::TokenVerifier,
    ) -> Result<OwnerId, tasks_ports::VerifyError> {
        match self {
            Self::Bearer(token) => verifier.verify(token).await,
            Self::Cookie(value) => verifier.verify_cookie(value).await,
        }
    }

    /// The `exp` of a bearer JWT, read from its payload without checking
    /// the signature: only ever called on a token the verifier has just
    /// accepted. `None` for opaque session tokens and cookies (their end is
    /// found by verifying again).
    #[must_use]
    pub fn jwt_expiry(&self) -> Option<std::time::SystemTime> {
        use base64::Engine as _;
        let Self::Bearer(token) = self else {
            return None;
        };
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let exp = claims.get("exp")?.as_f64()?;
        if !exp.is_finite() || exp < 0.0 {
            return None;
        }
        std::time::UNIX_EPOCH.checked_add(Duration::from_secs_f64(exp.min(1e12)))
    }
}

/// The `Authorization` header when there is one (it always wins), else
/// Better Auth's session cookie when cookie sessions are on and the CSRF
/// rule is met.
fn credential(req: &HttpRequest, cookies: Option<&CookieAuth>) -> Result<Credential, ApiError> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return bearer_token(req).map(|t| Credential::Bearer(t.to_owned()));
    }
    match cookies {
        Some(cookies) => match cookies.session_cookie(req) {
            Some(value) => {
                cookies.check_origin(req)?;
                Ok(Credential::Cookie(value))
            }
            None => Err(ApiError::MissingToken(
                "send Authorization: Bearer <token> or Better Auth's session cookie",
            )),
        },
        None if crate::cookie::has_session_cookie_like(req) => Err(ApiError::MissingToken(
            "send Authorization: Bearer <token> (a Better Auth session cookie was sent, but the tasks service reads it only with AUTH_COOKIE=true)",
        )),
        None => Err(ApiError::MissingToken("send Authorization: Bearer <token>")),
    }
}

fn bearer_token(req: &HttpRequest) -> Result<&str, ApiError> {
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let value = values
        .next()
        .ok_or_else(|| ApiError::MissingToken("send Authorization: Bearer <token>"))?;
    if values.next().is_some() {
        return Err(ApiError::InvalidToken(
            "more than one Authorization header".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::InvalidToken("Authorization header is not ASCII".into()))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingToken(
            "the Authorization scheme must be Bearer",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::MissingToken("the token is empty"));
    }
    Ok(token)
}

/// A task id from the path, parsed: non-integers and ids beyond the valid
/// range are a 400, not a 404.
#[derive(Debug, Clone, Copy)]
pub struct TaskIdPath(pub TaskId);

impl FromRequest for TaskIdPath {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let raw = req.match_info().get("id").unwrap_or_default();
        std::future::ready(
            TaskId::parse(raw)
                .map(Self)
                .map_err(|e| ApiError::Validation(format!("Invalid task id: {e}"))),
        )
    }
}

/// A JSON request body. Unlike `web::Json` it accepts a missing
/// `Content-Type` (as FastAPI does), answers every failure with the error
/// envelope, and names the offending field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// The body size limit, set once at start-up.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The deadline for receiving a whole request body (`CLIENT_BODY_TIMEOUT`),
/// counted from when the service starts reading it, right after the headers.
/// Without it a client that sends most of a body and stalls holds its
/// connection and its buffered bytes for as long as it likes.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type_ok = match req.headers().get(header::CONTENT_TYPE) {
            None => true,
            Some(value) => value.to_str().ok().is_some_and(is_json_media_type),
        };
        let limit = req.app_data::<BodyLimit>().map_or(256 * 1024, |l| l.0);
        let deadline = req
            .app_data::<BodyTimeout>()
            .map_or(Duration::from_secs(10), |t| t.0);
        let declared_too_large = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|len| len > limit as u64);
        let mut payload = payload.take();
        Box::pin(async move {
            if declared_too_large {
                return Err(too_large(limit));
            }
            if !content_type_ok {
                return Err(ApiError::Validation(
                    "Content-Type must be application/json".into(),
                ));
            }
            let body = tokio::time::timeout(deadline, read_body(&mut payload, limit))
                .await
                .map_err(|_| {
                    ApiError::RequestTimeout(format!(
                        "The request body was not received within {} s",
                        deadline.as_secs_f64()
                    ))
                })??;
            // serde's derived structs would also accept a JSON array (fields
            // by position): only an object is a valid body.
            if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return Err(ApiError::Validation(
                    "Request body must be a JSON object".into(),
                ));
            }
            let de = &mut serde_json::Deserializer::from_slice(&body);
            let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let what = if inner.is_syntax() || inner.is_eof() {
                    format!("Malformed JSON: {inner}")
                } else if path == "." {
                    format!("Request body must be a JSON object: {inner}")
                } else {
                    format!("Invalid value for `{path}`: {inner}")
                };
                ApiError::Validation(what)
            })?;
            de.end()
                .map_err(|e| ApiError::Validation(format!("Malformed JSON: {e}")))?;
            Ok(Self(value))
        })
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
async fn read_body(payload: &mut Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = futures_util::StreamExt::next(payload).await {
        let chunk = chunk.map_err(|e| payload_error(&e, limit))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A clean message for each way reading a body can fail. actix's own
/// `Display` of these errors is not for clients: it prints Rust debug text
/// such as `payload reached EOF before completing: None`.
fn payload_error(err: &PayloadError, limit: usize) -> ApiError {
    let detail = match err {
        PayloadError::Overflow => return too_large(limit),
        PayloadError::Incomplete(_) => "The request body ended before it was complete",
        PayloadError::EncodingCorrupted => {
            "The request body is malformed: its transfer or content encoding is corrupt"
        }
        PayloadError::UnknownLength => "The request body has no determinable length",
        _ => "The request body could not be read",
    };
    ApiError::Validation(detail.to_owned())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("Request body is larger than {limit} bytes"))
}

/// `application/json`, optionally with parameters, or any `+json` type.
fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_errors_never_show_debug_text() {
        let errors = [
            PayloadError::Incomplete(None),
            PayloadError::Incomplete(Some(std::io::Error::other("secret detail"))),
            PayloadError::EncodingCorrupted,
            PayloadError::UnknownLength,
            PayloadError::Io(std::io::Error::other("secret detail")),
        ];
        for err in &errors {
            let api = payload_error(err, 1024);
            assert!(matches!(api, ApiError::Validation(_)), "{err:?}");
            let text = api.to_string();
            assert!(
                !text.contains("None") && !text.contains("secret") && !text.contains("payload"),
                "{text}"
            );
        }
        assert!(matches!(
            payload_error(&PayloadError::Overflow, 1024),
            ApiError::PayloadTooLarge(_)
        ));
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("Application/JSON"));
        assert!(is_json_media_type("application/merge-patch+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
        assert!(!is_json_media_type("multipart/form-data; boundary=x"));
        assert!(!is_json_media_type(""));
    }
}
