//! The one error type at the HTTP edge, and the JSON envelope every error
//! response carries: `{"detail": str, "status_code": int, "error_type": str}`.
//!
//! 5xx bodies are deliberately vague; their causes go to the log with the
//! request id, never to the client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use tasks_ports::{RepoError, VerifyError};
use utoipa::ToSchema;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 2;

/// Seconds a client should wait before retrying a request whose
/// `Idempotency-Key` is still in flight.
pub const IN_FLIGHT_RETRY_AFTER_SECS: u64 = 1;
/// Seconds a client should wait before opening an event stream again after
/// a 429 for too many open streams.
pub const STREAMS_RETRY_AFTER_SECS: u64 = 10;

/// The error envelope.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[schema(example = json!({"detail": "title must not be empty", "status_code": 400, "error_type": "validation_error"}))]
pub struct ErrorBody {
    /// Human-readable explanation, safe to show to the user.
    pub detail: String,
    /// The HTTP status code, repeated.
    pub status_code: u16,
    /// Machine-readable category; see docs/API.md for the vocabulary.
    pub error_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    /// No usable `Authorization: Bearer` header: the challenge is a plain
    /// `Bearer`.
    #[error("Missing bearer token: {0}")]
    MissingToken(&'static str),
    /// A token was sent and refused: `Bearer error="invalid_token"`.
    #[error("Invalid token: {0}")]
    InvalidToken(String),
    #[error("Task not found")]
    TaskNotFound,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// An `If-Match` that does not match the task's current ETag: nothing
    /// was written.
    #[error("The task has changed since the ETag in If-Match was issued; fetch it again")]
    PreconditionFailed,
    /// A change-feed cursor the log cannot continue from: older than the
    /// tombstones kept, or newer than the log (a restored database).
    #[error(
        "This cursor can no longer be continued: drop the local copy and sync again from the start (no cursor)"
    )]
    SyncResetRequired,
    #[error("Task limit reached: a user may hold at most {0} tasks; delete some first")]
    TaskLimitReached(u32),
    /// The `Idempotency-Key` was used before with another request body.
    #[error(
        "This Idempotency-Key was already used with a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// A request with the same `Idempotency-Key` is still being processed.
    #[error(
        "A request with this Idempotency-Key is still being processed; retry shortly to get its response"
    )]
    IdempotencyKeyInFlight,
    /// The caller already holds the most live `Idempotency-Key`s allowed;
    /// retry in `retry_after` seconds, when the oldest expires.
    #[error(
        "Too many idempotency keys: a user may hold at most {max} unexpired keys; retry in {retry_after} s, or create without a key"
    )]
    IdempotencyKeyLimitReached { max: u32, retry_after: u64 },
    /// The client did not send its body in time; the connection is closed.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("Too many requests; retry in {0} s")]
    RateLimited(u64),
    /// `SSE_MAX_STREAMS_PER_USER` event streams of this user are open.
    #[error(
        "Too many open event streams for this user (at most {0} per instance); close one (another tab or device) or retry later"
    )]
    TooManyStreams(usize),
    /// A cookie-authenticated request refused by the CSRF rule.
    #[error("{0}")]
    Forbidden(String),
    #[error("The service is temporarily unavailable; retry shortly")]
    Unavailable(#[source] anyhow::Error),
    /// A 503 with a detail that is safe and useful to show (what could not
    /// be reached, URLs redacted).
    #[error("{detail}")]
    UnavailableBecause {
        detail: String,
        #[source]
        cause: anyhow::Error,
    },
    #[error("Internal server error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    #[must_use]
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation_error",
            Self::MissingToken(_) | Self::InvalidToken(_) => "authentication_error",
            Self::TaskNotFound | Self::NotFound(_) => "not_found",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::TaskLimitReached(_) => "task_limit_reached",
            Self::PreconditionFailed => "precondition_failed",
            Self::SyncResetRequired => "sync_reset_required",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            Self::IdempotencyKeyLimitReached { .. } => "idempotency_key_limit_reached",
            Self::RequestTimeout(_) => "request_timeout",
            Self::RateLimited(_) => "rate_limited",
            Self::TooManyStreams(_) => "too_many_streams",
            Self::Forbidden(_) => "forbidden",
            Self::Unavailable(_) | Self::UnavailableBecause { .. } => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

/// The `error_type` a bare status code gets when no handler chose one, e.g.
/// for errors raised inside actix-web itself.
#[must_use]
pub fn error_type_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "validation_error",
        401 => "authentication_error",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        412 => "precondition_failed",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        431 => "headers_too_large",
        503 => "service_unavailable",
        500..=599 => "internal_error",
        _ => "http_error",
    }
}

/// An envelope response with the given status.
#[must_use]
pub fn envelope(status: StatusCode, error_type: &str, detail: impl Into<String>) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
    }
    response.json(ErrorBody {
        detail: detail.into(),
        status_code: status.as_u16(),
        error_type: error_type.to_owned(),
    })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::MissingToken(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::TaskNotFound | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TaskLimitReached(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::SyncResetRequired => StatusCode::GONE,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::IdempotencyKeyInFlight => StatusCode::CONFLICT,
            Self::IdempotencyKeyLimitReached { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited(_) | Self::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) | Self::UnavailableBecause { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unavailable(cause) | Self::UnavailableBecause { cause, .. } => tracing::warn!(
                error = format!("{cause:#}"),
                "request failed: dependency unavailable"
            ),
            Self::Internal(cause) => tracing::error!(
                error = format!("{cause:#}"),
                "request failed: internal error"
            ),
            _ => {}
        }
        let mut response = envelope(self.status_code(), self.error_type(), self.to_string());
        if let Self::RequestTimeout(_) = self {
            // The rest of the body may still arrive: the connection cannot
            // carry another request.
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        if let Self::IdempotencyKeyInFlight = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(IN_FLIGHT_RETRY_AFTER_SECS),
            );
        }
        if let Self::IdempotencyKeyLimitReached { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let Self::RateLimited(seconds) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
        }
        if let Self::TooManyStreams(_) = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(STREAMS_RETRY_AFTER_SECS),
            );
        }
        let challenge = match self {
            Self::MissingToken(_) => Some("Bearer"),
            Self::InvalidToken(_) => Some("Bearer error=\"invalid_token\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<RepoError> for ApiError {
    fn from(err: RepoError) -> Self {
        match err {
            RepoError::Unavailable(e) => Self::Unavailable(e),
            RepoError::Unexpected(e) => Self::Internal(e),
        }
    }
}

impl From<VerifyError> for ApiError {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::Rejected(reason) => Self::InvalidToken(reason),
            VerifyError::Unavailable(e) => Self::Unavailable(e),
            VerifyError::UnavailableBecause { detail, source } => Self::UnavailableBecause {
                detail,
                cause: source,
            },
            // Not an outage: a 503 would invite retries that cannot help.
            VerifyError::Misconfigured(e) => Self::Internal(e),
        }
    }
}
