//! The body of `GET /api/tasks`, streamed.
//!
//! A user may hold `MAX_TASKS_PER_USER` tasks of up to 10,000 characters
//! each, so a whole list can be tens of megabytes. Built in memory per
//! request, a few dozen clients that ask for it and never read took the
//! process to gigabytes. Instead the list is read in keyset batches (`id <
//! last id`, newest first) and written batch by batch: a response holds at
//! most one batch and one chunk in memory, each batch is one short query, and
//! no database connection is held while the client reads. The client gets
//! the same JSON array as before.
//!
//! A list that fits in the first batch (almost all of them) is answered as
//! one ordinary body with a `Content-Length`, exactly as before. A longer one
//! is streamed from its start in small batches, sized from the rows seen so
//! far: the full first batch is let go rather than held, because a client
//! that stops reading at once would otherwise pin up to 128 maximum-size rows
//! (about 5 MB of four-byte characters) for as long as it stalls.
//!
//! Memory per stalled reader is then at most one batch (32 rows at first,
//! then about 256 KB of JSON, never more than 1,000 rows) plus one 64 KB
//! chunk; `CLIENT_WRITE_TIMEOUT` disconnects it.
//!
//! A list that fits in one body carries an `ETag` (see `conditional`) and
//! answers a matching `If-None-Match` with a 304; a streamed one cannot (its
//! headers leave before its rows are read): clients that want revalidation
//! of long lists use pages.
//!
//! Pages (`?limit=`, `?cursor=`) are read in the same keyset batches and
//! built in memory, so that their ETag covers exactly the rows returned; a
//! page stops early at about `PAGE_BYTES` of JSON (the `Link` header then
//! still announces the next one), which keeps a page's memory bounded like a
//! streamed list's.
//!
//! Batches are read one after another, not in one snapshot: a task created
//! while a long list streams is not in it (it is newer than the first
//! batch), and one deleted meanwhile may or may not be.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderMap};
use actix_web::web::Bytes;
use futures_util::stream;
use tasks_domain::{OwnerId, StatusFilter, Task, TaskId};
use tasks_ports::TaskRepository;

use crate::conditional::{encode_cursor, filter_name, list_etag, none_match_hits};
use crate::dto::TaskResponse;
use crate::error::ApiError;

/// Tasks in the first batch. Lists up to this long (the benchmark's users
/// have 100) take one query and one body.
pub const FIRST_BATCH: usize = 128;
/// The first batch of a streamed list, before any row size is known.
const STREAM_FIRST_BATCH: usize = 32;
/// Later batches aim at this many bytes of JSON, from the size of the rows
/// seen so far, between `MIN_BATCH` and `MAX_BATCH` tasks.
const BATCH_BYTES: usize = 256 * 1024;
const MIN_BATCH: usize = 16;
const MAX_BATCH: usize = 1_000;
/// A chunk is handed to the connection once it holds this much.
const CHUNK_BYTES: usize = 64 * 1024;

/// A page ends early once its JSON reaches about this many bytes.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// Which page of the list a request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// At most this many tasks.
    pub limit: u32,
    /// Tasks with an id below this one (from the cursor).
    pub after: Option<TaskId>,
}

/// A body that fits in memory, with its ETag: 304 when `If-None-Match`
/// matches, 200 otherwise. Either carries the ETag and `link`.
fn revalidated(
    headers: &HeaderMap,
    body: &[TaskResponse],
    has_next: bool,
    link: Option<String>,
) -> HttpResponse {
    let etag = list_etag(body, has_next);
    let not_modified = none_match_hits(headers, &etag);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response.insert_header((header::ETAG, etag));
    if let Some(link) = link {
        response.insert_header((header::LINK, link));
    }
    if not_modified {
        response.finish()
    } else {
        response
            .content_type("application/json")
            .body(crate::json::task_array(body))
    }
}

/// The response to a list request.
///
/// # Errors
/// The first batch could not be read (nothing has been sent yet, so the
/// client gets the usual error envelope).
pub async fn respond(
    repo: Arc<dyn TaskRepository>,
    owner: OwnerId,
    filter: StatusFilter,
    page: Option<Page>,
    headers: &HeaderMap,
) -> Result<HttpResponse, ApiError> {
    if let Some(page) = page {
        return respond_page(&*repo, &owner, filter, page, headers).await;
    }
    let first = repo.list(&owner, filter, None, FIRST_BATCH).await?;
    if first.len() < FIRST_BATCH {
        let body = first
            .into_iter()
            .map(|task| owned(task, &owner))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(revalidated(headers, &body, false, None));
    }
    drop(first);
    let listing = Listing {
        repo,
        owner,
        filter,
        pending: VecDeque::new(),
        more: true,
        last_id: None,
        written: 0,
        batch_rows: 0,
        batch_bytes: 0,
        finished: false,
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(stream::try_unfold(listing, Listing::next_chunk)))
}

/// One page: up to `page.limit` tasks (fewer once `PAGE_BYTES` of JSON is
/// reached), read in keyset batches, and whether another follows; the
/// next page's URL goes into `Link: <...>; rel="next"`.
async fn respond_page(
    repo: &dyn TaskRepository,
    owner: &OwnerId,
    filter: StatusFilter,
    page: Page,
    headers: &HeaderMap,
) -> Result<HttpResponse, ApiError> {
    let limit = page.limit as usize;
    let mut body: Vec<TaskResponse> = Vec::new();
    let mut bytes = 0;
    let mut before = page.after;
    let mut has_next = false;
    loop {
        // One row more than the page still needs tells whether another
        // page follows without a second query.
        let want = (limit - body.len()).min(FIRST_BATCH) + 1;
        let batch = repo.list(owner, filter, before, want).await?;
        let full = batch.len() == want;
        for task in batch {
            if body.len() == limit || bytes >= PAGE_BYTES {
                has_next = true;
                break;
            }
            before = Some(task.id);
            let task = owned(task, owner)?;
            // An estimate (the fixed fields take well under 200 bytes).
            bytes += 200 + task.title.len() + task.description.as_ref().map_or(0, String::len);
            body.push(task);
        }
        if has_next || !full {
            break;
        }
    }
    let link = match (has_next, before) {
        (true, Some(last)) => Some(format!(
            "</api/tasks?status={}&limit={}&cursor={}>; rel=\"next\"",
            filter_name(filter),
            page.limit,
            encode_cursor(owner, filter, last)
        )),
        _ => None,
    };
    Ok(revalidated(headers, &body, has_next, link))
}

/// Defence in depth: the store filters by owner in SQL; this check makes sure
/// that even a faulty adapter cannot hand one user's task to another.
pub fn owned(task: Task, caller: &OwnerId) -> Result<TaskResponse, ApiError> {
    if task.is_visible_to(caller) {
        Ok(task.into())
    } else {
        tracing::error!(task_id = %task.id, "store returned a task of another owner; withheld");
        Err(ApiError::TaskNotFound)
    }
}

/// A list being streamed.
struct Listing {
    repo: Arc<dyn TaskRepository>,
    owner: OwnerId,
    filter: StatusFilter,
    /// The rest of the current batch.
    pending: VecDeque<Task>,
    /// Whether the last batch was full, so another may follow.
    more: bool,
    last_id: Option<TaskId>,
    /// Tasks written so far.
    written: usize,
    /// Rows and JSON bytes of the current batch, to size the next one.
    batch_rows: usize,
    batch_bytes: usize,
    finished: bool,
}

impl Listing {
    /// The next chunk of the JSON array, or `None` after its closing `]`.
    /// An error after the first chunk can no longer become a status code:
    /// actix-web then drops the connection, so the client sees a truncated
    /// body, never a short list that looks complete.
    async fn next_chunk(mut self) -> Result<Option<(Bytes, Self)>, actix_web::Error> {
        if self.finished {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 1024);
        if self.written == 0 {
            buf.push(b'[');
        }
        while buf.len() < CHUNK_BYTES {
            let Some(task) = self.pending.pop_front() else {
                if self.more {
                    self.fetch().await?;
                    continue;
                }
                buf.push(b']');
                self.finished = true;
                break;
            };
            self.last_id = Some(task.id);
            if self.written > 0 {
                buf.push(b',');
            }
            let before = buf.len();
            crate::json::write_task(&mut buf, &owned(task, &self.owner)?);
            self.written += 1;
            self.batch_rows += 1;
            self.batch_bytes += buf.len() - before;
        }
        Ok(Some((Bytes::from(buf), self)))
    }

    async fn fetch(&mut self) -> Result<(), ApiError> {
        let limit = match self.batch_bytes.checked_div(self.batch_rows) {
            None => STREAM_FIRST_BATCH,
            Some(per_row) => (BATCH_BYTES / per_row.max(1)).clamp(MIN_BATCH, MAX_BATCH),
        };
        let batch = self
            .repo
            .list(&self.owner, self.filter, self.last_id, limit)
            .await
            .inspect_err(|e| {
                tracing::warn!(error = %e, tasks_sent = self.written, "list aborted mid-stream");
            })?;
        self.more = batch.len() == limit;
        self.pending = batch.into();
        self.batch_rows = 0;
        self.batch_bytes = 0;
        Ok(())
    }
}
