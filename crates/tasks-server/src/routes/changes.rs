//! `GET /api/tasks/changes`: the caller's change feed, for offline catch-up.
//!
//! A client keeps the `cursor` of its last answer and asks for what changed
//! since; it follows `cursor` while `has_more` is true. Versions come from
//! the store's change log (a per-owner counter bumped under the owner's row
//! lock in each write's transaction), so following cursors never skips a
//! change; see `tasks_store`'s `changes` module for why.
//!
//! A page is read from the store in chunks of up to `CHUNK` entries, each
//! one consistent snapshot, and ends early at about `PAGE_BYTES` of JSON,
//! so its memory stays bounded like a page of the list (a chunk ends where
//! it ends: at most `CHUNK` maximum-size tasks beyond the mark). Chunks
//! continue from one another exactly as a client's requests would, so a page
//! made of several is as complete as one; a task that changes between two
//! chunks is reported once, as it is in the later one.

use std::collections::HashSet;

use actix_web::{HttpResponse, web};
use tasks_ports::Changes;

use crate::conditional::{DEFAULT_LIMIT, parse_limit};
use crate::dto::{ChangesQuery, ChangesResponse, TaskResponse};
use crate::error::{ApiError, ErrorBody};
use crate::extract::Caller;
use crate::routes::listing::{PAGE_BYTES, owned};
use crate::routes::responses::{AuthenticatedErrors, SyncResetRequired};
use crate::state::AppState;
use crate::sync;

/// Entries read from the store at a time.
const CHUNK: usize = 100;

/// What changed in the caller's tasks since a cursor.
#[utoipa::path(
    get,
    path = "/api/tasks/changes",
    tag = "tasks",
    params(ChangesQuery),
    security(("bearer_auth" = [])),
    responses(
        (status = 200, description = "The caller's changes after `since`, oldest first: changed or created tasks as they are now, deleted ids, the next cursor. Never cached (`Cache-Control: no-store`).", body = ChangesResponse),
        (status = 400, description = "Invalid `since` (not a cursor) or `limit`", body = ErrorBody),
        SyncResetRequired,
        AuthenticatedErrors,
    )
)]
pub async fn list_changes(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ChangesQuery>,
) -> Result<HttpResponse, ApiError> {
    let since = query
        .since
        .as_deref()
        .map_or(Ok(sync::START), sync::decode)?;
    let limit = query
        .limit
        .as_deref()
        .map(parse_limit)
        .transpose()?
        .unwrap_or(DEFAULT_LIMIT) as usize;
    let owner = &caller.0;

    let mut tasks: Vec<TaskResponse> = Vec::new();
    let mut deleted: Vec<i64> = Vec::new();
    let mut cursor = since;
    let mut bytes = 0;
    let has_more = loop {
        let want = (limit - tasks.len() - deleted.len()).min(CHUNK);
        let page = match state.repo.changes(owner, cursor, want).await? {
            Changes::Page(page) => page,
            Changes::Reset => return Err(ApiError::SyncResetRequired),
        };
        // What this chunk reports replaces what earlier ones said of the
        // same tasks (only possible when they changed in between).
        let newer: HashSet<i64> = page
            .tasks
            .iter()
            .map(|t| t.id.get())
            .chain(page.deleted.iter().map(|id| id.get()))
            .collect();
        if cursor != since {
            tasks.retain(|t| !newer.contains(&t.id));
            deleted.retain(|id| !newer.contains(id));
        }
        for task in page.tasks {
            let task = owned(task, owner)?;
            // An estimate, as for list pages.
            bytes += 200 + task.title.len() + task.description.as_ref().map_or(0, String::len);
            tasks.push(task);
        }
        deleted.extend(page.deleted.iter().map(|id| id.get()));
        bytes += 24 * page.deleted.len();
        cursor = page.version;
        let full = tasks.len() + deleted.len() >= limit;
        if !page.has_more || full || bytes >= PAGE_BYTES {
            break page.has_more;
        }
    };
    Ok(HttpResponse::Ok().json(ChangesResponse {
        tasks,
        deleted,
        cursor: sync::encode(cursor),
        has_more,
    }))
}
