//! Error responses shared by several operations, documented once. Each
//! variant is the envelope (`ErrorBody`) with the status and headers the
//! service really sends.

use utoipa::IntoResponses;

use crate::dto::TaskResponse;
use crate::error::ErrorBody;

/// What any operation that needs a token may answer besides its own
/// results.
#[derive(IntoResponses)]
pub enum AuthenticatedErrors {
    /// Missing or invalid bearer token
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer`, with `error=\"invalid_token\"` for a bad token"))
    )]
    Unauthorized(ErrorBody),
    /// Per-user rate limit exceeded (only when RATE_LIMIT_PER_MINUTE is set)
    #[response(
        status = 429,
        headers(("Retry-After" = u32, description = "Seconds until a request will be accepted"))
    )]
    RateLimited(ErrorBody),
    /// Database unavailable; retry after `Retry-After` seconds
    #[response(
        status = 503,
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    Unavailable(ErrorBody),
}

/// No such task for this caller (also a task of another user: the two are
/// indistinguishable).
#[derive(IntoResponses)]
#[response(status = 404, description = "No such task for this caller")]
pub struct TaskNotFound(pub ErrorBody);

/// A request body over `MAX_BODY_BYTES`.
#[derive(IntoResponses)]
#[response(status = 413, description = "Body too large")]
pub struct BodyTooLarge(pub ErrorBody);

/// The outcomes of a partial update (`PUT` and `PATCH` alike) besides the
/// shared errors.
#[derive(IntoResponses)]
pub enum PartialUpdateResponses {
    /// The updated task
    #[response(
        status = 200,
        headers(("ETag" = String, description = "The task's new strong ETag"))
    )]
    Updated(TaskResponse),
    /// Invalid id or body
    #[response(status = 400)]
    Invalid(ErrorBody),
}

/// An `If-Match` that does not match the task's current ETag (also a weak
/// tag, which never matches); nothing was written.
#[derive(IntoResponses)]
#[response(
    status = 412,
    description = "`If-Match` does not match the task's current ETag (`precondition_failed`); nothing was written"
)]
pub struct PreconditionFailed(pub ErrorBody);

/// The task has not changed since the ETag in `If-None-Match`.
#[derive(IntoResponses)]
#[response(
    status = 304,
    description = "Not modified: the ETag in `If-None-Match` is current; no body",
    headers(("ETag" = String, description = "The current ETag"))
)]
pub struct NotModified;

/// A change-feed cursor that cannot be continued (`sync_reset_required`).
#[derive(IntoResponses)]
#[response(
    status = 410,
    description = "`sync_reset_required`: the cursor is older than the deletions kept (`CHANGE_LOG_RETENTION_SECS`, `MAX_TOMBSTONES_PER_USER`) or newer than the change log (a restored database). The `error_type` is the hint: drop the local copy and sync again without `since`."
)]
pub struct SyncResetRequired(pub ErrorBody);
