//! The six task endpoints. Handlers parse, call the repository port with the
//! caller's owner id, and shape the response; they own no SQL.

use actix_web::{HttpResponse, web};
use tasks_domain::{NewTask, OwnerId, StatusFilter, Task, TaskPatch};

use crate::dto::{CreateTaskRequest, ListQuery, TaskResponse, UpdateTaskRequest};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Caller, JsonBody, TaskIdPath};
use crate::routes::listing::{self, owned};
use crate::routes::responses::{
    AuthenticatedErrors, BodyTooLarge, PartialUpdateResponses, TaskNotFound,
};
use crate::state::AppState;

fn found(task: Option<Task>, caller: &OwnerId) -> Result<HttpResponse, ApiError> {
    let task = task.ok_or(ApiError::TaskNotFound)?;
    Ok(HttpResponse::Ok().json(owned(task, caller)?))
}

/// List the caller's tasks, newest first.
#[utoipa::path(
    get,
    path = "/api/tasks",
    tag = "tasks",
    params(ListQuery),
    security(("bearer_auth" = [])),
    responses(
        (status = 200, description = "The caller's tasks, newest first (descending id)", body = [TaskResponse]),
        (status = 400, description = "Invalid `status` filter", body = ErrorBody),
        AuthenticatedErrors,
    )
)]
pub async fn list_tasks(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = StatusFilter::parse(query.status.as_deref())
        .map_err(|e| ApiError::Validation(e.to_string()))?;
    listing::respond(state.repo.clone(), caller.0, filter).await
}

/// Create a task for the caller.
#[utoipa::path(
    post,
    path = "/api/tasks",
    tag = "tasks",
    request_body = CreateTaskRequest,
    security(("bearer_auth" = [])),
    responses(
        (status = 201, description = "Created", body = TaskResponse,
            headers(("Location" = String, description = "`/api/tasks/{id}` of the new task"))),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 409, description = "The caller already holds `MAX_TASKS_PER_USER` tasks (`task_limit_reached`); nothing was stored", body = ErrorBody),
        BodyTooLarge,
        AuthenticatedErrors,
    )
)]
pub async fn create_task(
    caller: Caller,
    state: web::Data<AppState>,
    body: JsonBody<CreateTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let new = NewTask::try_from(body.0)?;
    let max = state.max_tasks_per_user;
    let task = state
        .repo
        .create(&caller.0, new, max)
        .await?
        .ok_or(ApiError::TaskLimitReached(max))?;
    let body = owned(task, &caller.0)?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/tasks/{}", body.id)))
        .json(body))
}

/// Get one of the caller's tasks.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, description = "Task id", minimum = 1)),
    security(("bearer_auth" = [])),
    responses(
        (status = 200, description = "The task", body = TaskResponse),
        (status = 400, description = "The id is not a valid task id", body = ErrorBody),
        TaskNotFound,
        AuthenticatedErrors,
    )
)]
pub async fn get_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    found(state.repo.get(&caller.0, id.0).await?, &caller.0)
}

/// Update some fields of one of the caller's tasks.
#[utoipa::path(
    put,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, description = "Task id", minimum = 1)),
    request_body = UpdateTaskRequest,
    security(("bearer_auth" = [])),
    responses(PartialUpdateResponses, TaskNotFound, BodyTooLarge, AuthenticatedErrors)
)]
pub async fn update_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
    body: JsonBody<UpdateTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    apply_patch(&state, &caller, id, body.0).await
}

/// Update some fields of one of the caller's tasks (the standard verb for a
/// partial update; the same as `PUT`).
#[utoipa::path(
    patch,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, description = "Task id", minimum = 1)),
    request_body = UpdateTaskRequest,
    security(("bearer_auth" = [])),
    responses(PartialUpdateResponses, TaskNotFound, BodyTooLarge, AuthenticatedErrors)
)]
pub async fn patch_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
    body: JsonBody<UpdateTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    apply_patch(&state, &caller, id, body.0).await
}

/// `PUT` and `PATCH`: absent fields stay, `"description": null` clears.
async fn apply_patch(
    state: &AppState,
    caller: &Caller,
    id: TaskIdPath,
    body: UpdateTaskRequest,
) -> Result<HttpResponse, ApiError> {
    let patch = TaskPatch::try_from(body)?;
    found(state.repo.update(&caller.0, id.0, patch).await?, &caller.0)
}

/// Delete one of the caller's tasks.
#[utoipa::path(
    delete,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, description = "Task id", minimum = 1)),
    security(("bearer_auth" = [])),
    responses(
        (status = 204, description = "Deleted; empty body"),
        (status = 400, description = "The id is not a valid task id", body = ErrorBody),
        TaskNotFound,
        AuthenticatedErrors,
    )
)]
pub async fn delete_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.repo.delete(&caller.0, id.0).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::TaskNotFound)
    }
}

/// Toggle `completed` on one of the caller's tasks (atomically).
#[utoipa::path(
    patch,
    path = "/api/tasks/{id}/complete",
    tag = "tasks",
    params(("id" = i64, Path, description = "Task id", minimum = 1)),
    security(("bearer_auth" = [])),
    responses(
        (status = 200, description = "The task with `completed` flipped", body = TaskResponse),
        (status = 400, description = "The id is not a valid task id", body = ErrorBody),
        TaskNotFound,
        AuthenticatedErrors,
    )
)]
pub async fn toggle_task(
    caller: Caller,
    id: TaskIdPath,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    found(state.repo.toggle(&caller.0, id.0).await?, &caller.0)
}
