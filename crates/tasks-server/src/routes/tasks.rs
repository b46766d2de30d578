//! The six task endpoints. Handlers parse, call the repository port with the
//! caller's owner id, and shape the response; they own no SQL.

use actix_web::ResponseError as _;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use tasks_domain::{NewTask, OwnerId, StatusFilter, Task, TaskPatch};
use tasks_ports::{IdempotencyKey, IdempotentCreate, Written};

use crate::conditional::{
    DEFAULT_LIMIT, decode_cursor, if_match, none_match_hits, parse_limit, task_etag,
};
use crate::dto::{CreateTaskRequest, ListQuery, TaskResponse, UpdateTaskRequest};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Caller, JsonBody, TaskIdPath};
use crate::idempotency;
use crate::json;
use crate::routes::listing::{self, Page, owned};
use crate::routes::responses::{
    AuthenticatedErrors, BodyTooLarge, NotModified, PartialUpdateResponses, PreconditionFailed,
    TaskNotFound,
};
use crate::state::AppState;

/// The response to a write on an existing task: the task with its new ETag,
/// 404 or 412.
fn written(outcome: Written<Task>, caller: &OwnerId) -> Result<HttpResponse, ApiError> {
    match outcome {
        Written::Done(task) => {
            let body = owned(task, caller)?;
            Ok(HttpResponse::Ok()
                .insert_header((header::ETAG, task_etag(&body)))
                .content_type("application/json")
                .body(json::task_object(&body)))
        }
        Written::NotFound => Err(ApiError::TaskNotFound),
        Written::PreconditionFailed => Err(ApiError::PreconditionFailed),
    }
}

/// List the caller's tasks, newest first.
#[utoipa::path(
    get,
    path = "/api/tasks",
    tag = "tasks",
    params(
        ListQuery,
        ("If-None-Match" = Option<String>, Header, description = "An ETag of this list (or page) received before: 304 while it is current"),
    ),
    security(("bearer_auth" = [])),
    responses(
        (status = 200, description = "The caller's tasks, newest first (descending id)", body = [TaskResponse],
            headers(
                ("ETag" = String, description = "Strong ETag of exactly these rows; absent on a whole list too long for one body (use pages)"),
                ("Link" = String, description = "With `limit`/`cursor`: `</api/tasks?...&cursor=...>; rel=\"next\"` while another page follows"),
            )),
        NotModified,
        (status = 400, description = "Invalid `status`, `limit` or `cursor`", body = ErrorBody),
        AuthenticatedErrors,
    )
)]
pub async fn list_tasks(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let filter = StatusFilter::parse(query.status.as_deref())
        .map_err(|e| ApiError::Validation(e.to_string()))?;
    let limit = query.limit.as_deref().map(parse_limit).transpose()?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c, &caller.0, filter))
        .transpose()?;
    let page = (limit.is_some() || after.is_some()).then(|| Page {
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        after,
    });
    listing::respond(state.repo.clone(), caller.0, filter, page, req.headers()).await
}

/// Create a task for the caller.
#[utoipa::path(
    post,
    path = "/api/tasks",
    tag = "tasks",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Opt-in: makes a retried create safe (draft-ietf-httpapi-idempotency-key-header). 1 to 255 visible ASCII characters, bare (`abc`) or as a structured-field string (`\"abc\"`); scoped to the caller and this operation. The same key with the same body within `IDEMPOTENCY_KEY_TTL_SECS` (24 h) returns the first response (201 or the task limit's 409) with `Idempotent-Replayed: true` and creates nothing; with another body it is a 422; while the first is still running, a 409. A 503 is not remembered: retry with the same key. A user holds at most `IDEMPOTENCY_MAX_KEYS_PER_USER` unexpired keys (a new one beyond is a 429).", pattern = r#"^(?:[!#-~][!-~]{0,254}|"(?:[!#-\[\]-~]|\\["\\]){1,255}")$"#),
    ),
    request_body = CreateTaskRequest,
    security(("bearer_auth" = [])),
    responses(
        (status = 201, description = "Created (or, with `Idempotent-Replayed: true`, the replay of the first response to this `Idempotency-Key`)", body = TaskResponse,
            headers(
                ("Location" = String, description = "`/api/tasks/{id}` of the new task"),
                ("ETag" = String, description = "The new task's strong ETag"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the stored response to an earlier request with the same `Idempotency-Key`; absent otherwise"),
            )),
        (status = 400, description = "Invalid body, or a malformed `Idempotency-Key`", body = ErrorBody),
        (status = 409, description = "The caller already holds `MAX_TASKS_PER_USER` tasks (`task_limit_reached`; with `Idempotent-Replayed: true` when replayed), or a request with the same `Idempotency-Key` is still being processed (`idempotency_key_in_flight`, with `Retry-After`); nothing was stored", body = ErrorBody,
            headers(
                ("Retry-After" = u32, description = "On `idempotency_key_in_flight`: seconds before a retry may get the first request's response"),
                ("Idempotent-Replayed" = String, description = "`true` when this 409 is the stored response to an earlier request with the same `Idempotency-Key`"),
            )),
        (status = 422, description = "The `Idempotency-Key` was already used with a different body (`idempotency_key_reused`); nothing was stored", body = ErrorBody),
        BodyTooLarge,
        AuthenticatedErrors,
        // After the shared errors: it replaces their 429 with one that
        // names both causes.
        (status = 429, description = "Per-user rate limit exceeded (`rate_limited`, only when RATE_LIMIT_PER_MINUTE is set), or a new `Idempotency-Key` while the caller holds `IDEMPOTENCY_MAX_KEYS_PER_USER` unexpired ones (`idempotency_key_limit_reached`); nothing was stored", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds until a request will be accepted (for `idempotency_key_limit_reached`: until the caller's oldest key expires)"))),
    )
)]
pub async fn create_task(
    caller: Caller,
    state: web::Data<AppState>,
    body: JsonBody<CreateTaskRequest>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency::parse_key(req.headers())?;
    let new = NewTask::try_from(body.0)?;
    let max = state.max_tasks_per_user;
    let Some(key) = key else {
        let task = state
            .repo
            .create(&caller.0, new, max)
            .await?
            .ok_or(ApiError::TaskLimitReached(max))?;
        return created(task, &caller.0);
    };
    let claim = IdempotencyKey {
        scope: idempotency::CREATE_SCOPE,
        key: &key,
        fingerprint: idempotency::fingerprint(idempotency::CREATE_SCOPE, &new),
        ttl: state.idempotency_key_ttl,
        max_keys: state.idempotency_max_keys_per_user,
    };
    let (outcome, replayed) = match state
        .repo
        .create_idempotent(&caller.0, new, max, claim)
        .await?
    {
        IdempotentCreate::First(outcome) => (outcome, false),
        IdempotentCreate::Replayed(outcome) => (outcome, true),
        IdempotentCreate::FingerprintMismatch => return Err(ApiError::IdempotencyKeyReused),
        IdempotentCreate::InFlight => return Err(ApiError::IdempotencyKeyInFlight),
        IdempotentCreate::TooManyKeys { retry_after } => {
            return Err(ApiError::IdempotencyKeyLimitReached {
                max: state.idempotency_max_keys_per_user,
                retry_after: retry_after.as_secs().max(1),
            });
        }
    };
    let mut response = match outcome {
        Some(task) => created(task, &caller.0)?,
        None => ApiError::TaskLimitReached(max).error_response(),
    };
    if replayed {
        response.headers_mut().insert(
            idempotency::IDEMPOTENT_REPLAYED.clone(),
            header::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// The 201 of a create: the task, its `Location` and its ETag.
fn created(task: Task, caller: &OwnerId) -> Result<HttpResponse, ApiError> {
    let body = owned(task, caller)?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/tasks/{}", body.id)))
        .insert_header((header::ETAG, task_etag(&body)))
        .content_type("application/json")
        .body(json::task_object(&body)))
}

/// Get one of the caller's tasks.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(
        ("id" = i64, Path, description = "Task id", minimum = 1),
        ("If-None-Match" = Option<String>, Header, description = "An ETag of this task received before: 304 while it is current"),
    ),
    security(("bearer_auth" = [])),
    responses(
        (status = 200, description = "The task", body = TaskResponse,
            headers(("ETag" = String, description = "The task's strong ETag"))),
        NotModified,
        (status = 400, description = "The id is not a valid task id", body = ErrorBody),
        TaskNotFound,
        AuthenticatedErrors,
    )
)]
pub async fn get_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let task = state
        .repo
        .get(&caller.0, id.0)
        .await?
        .ok_or(ApiError::TaskNotFound)?;
    let body = owned(task, &caller.0)?;
    let etag = task_etag(&body);
    if none_match_hits(req.headers(), &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .content_type("application/json")
        .body(json::task_object(&body)))
}

/// Update some fields of one of the caller's tasks.
#[utoipa::path(
    put,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(
        ("id" = i64, Path, description = "Task id", minimum = 1),
        ("If-Match" = Option<String>, Header, description = "Strong ETag(s) of the task, or `*`: the write happens only if one matches (412 otherwise)"),
    ),
    request_body = UpdateTaskRequest,
    security(("bearer_auth" = [])),
    responses(PartialUpdateResponses, TaskNotFound, PreconditionFailed, BodyTooLarge, AuthenticatedErrors)
)]
pub async fn update_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
    body: JsonBody<UpdateTaskRequest>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    apply_patch(&state, &caller, id, body.0, &req).await
}

/// Update some fields of one of the caller's tasks (the standard verb for a
/// partial update; the same as `PUT`).
#[utoipa::path(
    patch,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(
        ("id" = i64, Path, description = "Task id", minimum = 1),
        ("If-Match" = Option<String>, Header, description = "Strong ETag(s) of the task, or `*`: the write happens only if one matches (412 otherwise)"),
    ),
    request_body = UpdateTaskRequest,
    security(("bearer_auth" = [])),
    responses(PartialUpdateResponses, TaskNotFound, PreconditionFailed, BodyTooLarge, AuthenticatedErrors)
)]
pub async fn patch_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
    body: JsonBody<UpdateTaskRequest>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    apply_patch(&state, &caller, id, body.0, &req).await
}

/// `PUT` and `PATCH`: absent fields stay, `"description": null` clears.
async fn apply_patch(
    state: &AppState,
    caller: &Caller,
    id: TaskIdPath,
    body: UpdateTaskRequest,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let patch = TaskPatch::try_from(body)?;
    let expected = if_match(req.headers(), id.0);
    let outcome = state
        .repo
        .update(&caller.0, id.0, patch, expected.as_deref())
        .await?;
    written(outcome, &caller.0)
}

/// Delete one of the caller's tasks.
#[utoipa::path(
    delete,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(
        ("id" = i64, Path, description = "Task id", minimum = 1),
        ("If-Match" = Option<String>, Header, description = "Strong ETag(s) of the task, or `*`: the write happens only if one matches (412 otherwise)"),
    ),
    security(("bearer_auth" = [])),
    responses(
        (status = 204, description = "Deleted; empty body"),
        (status = 400, description = "The id is not a valid task id", body = ErrorBody),
        TaskNotFound,
        PreconditionFailed,
        AuthenticatedErrors,
    )
)]
pub async fn delete_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(req.headers(), id.0);
    match state
        .repo
        .delete(&caller.0, id.0, expected.as_deref())
        .await?
    {
        Written::Done(()) => Ok(HttpResponse::NoContent().finish()),
        Written::NotFound => Err(ApiError::TaskNotFound),
        Written::PreconditionFailed => Err(ApiError::PreconditionFailed),
    }
}

/// Toggle `completed` on one of the caller's tasks (atomically).
#[utoipa::path(
    patch,
    path = "/api/tasks/{id}/complete",
    tag = "tasks",
    params(
        ("id" = i64, Path, description = "Task id", minimum = 1),
        ("If-Match" = Option<String>, Header, description = "Strong ETag(s) of the task, or `*`: the write happens only if one matches (412 otherwise)"),
    ),
    security(("bearer_auth" = [])),
    responses(
        (status = 200, description = "The task with `completed` flipped", body = TaskResponse,
            headers(("ETag" = String, description = "The task's new strong ETag"))),
        (status = 400, description = "The id is not a valid task id", body = ErrorBody),
        TaskNotFound,
        PreconditionFailed,
        AuthenticatedErrors,
    )
)]
pub async fn toggle_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(req.headers(), id.0);
    let outcome = state
        .repo
        .toggle(&caller.0, id.0, expected.as_deref())
        .await?;
    written(outcome, &caller.0)
}
