//! One event stream: replay from the client's cursor, then live.
//!
//! The stream is pulled: actix asks for the next chunk only when the socket
//! has taken the previous one, and each chunk is produced on demand (one
//! page of the change log, at most [`PAGE_LIMIT`] tasks). A client that
//! reads slowly therefore holds at most one page in memory, however much
//! changes meanwhile; one that stops reading is disconnected by
//! `CLIENT_WRITE_TIMEOUT`, and resumes with `Last-Event-ID` without missing
//! anything.
//!
//! Events (docs/API.md, "Live updates"):
//! - `ready` (id = the current cursor): first event when the client gave no
//!   cursor; changes follow from there.
//! - unnamed (`message`, id = cursor): one page of changes, the JSON of the
//!   change feed `{tasks, deleted, cursor, has_more}`.
//! - `reset` (id = the current cursor): the client's cursor is too old (or
//!   unknown): reload everything (`GET /api/tasks`); changes follow from the
//!   current cursor.
//! - `expired`: the credential expired or was refused on re-verification;
//!   the stream ends (reconnecting with the same credential gets 401).
//! - comment lines (`: heartbeat`) after `SSE_HEARTBEAT_INTERVAL` of silence.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::web::{self, Bytes};
use serde::Serialize;
use tasks_domain::OwnerId;
use tasks_ports::{ChangePage, Changes, RepoError};
use tokio::time::Instant;

use super::{Hub, Subscription};
use crate::dto::ChangesResponse;
use crate::error::ApiError;
use crate::extract::Credential;
use crate::routes::listing::owned;
use crate::state::AppState;
use crate::sync;

/// Most tasks in one event (one page of the change log).
pub const PAGE_LIMIT: usize = 100;

/// The live-updates part of the application state.
pub struct Live {
    pub hub: Arc<Hub>,
    /// `SSE_HEARTBEAT_INTERVAL`.
    pub heartbeat: Duration,
    /// `SSE_REVERIFY_INTERVAL`.
    pub reverify: Duration,
    /// `SSE_RETRY`.
    pub retry: Duration,
    /// `SSE_WATCH_TTL` on PostgreSQL, where a stream registers its owner as
    /// watched before its first read (see `super::watch`); `None` on
    /// SQLite, where nothing notifies.
    pub watch_ttl: Option<Duration>,
}

/// One open stream.
pub struct EventStream {
    state: web::Data<AppState>,
    owner: OwnerId,
    credential: Credential,
    subscription: Subscription,
    /// Everything up to this version has been sent.
    cursor: i64,
    /// The log may hold more after `cursor`: read it before waiting.
    stale: bool,
    pending: VecDeque<Bytes>,
    ended: bool,
    expires: Option<Instant>,
    next_heartbeat: Instant,
    next_reverify: Instant,
}

/// What woke a waiting stream.
enum Wake {
    Shutdown,
    Expired,
    Changed,
    Heartbeat,
    Reverify,
}

impl EventStream {
    /// Opens a stream for `owner` and reads its first page, so that an
    /// outage is a 503 and not an empty stream. `since`: the client's
    /// cursor, if any.
    ///
    /// On PostgreSQL the owner is first registered as watched: every write
    /// committed before the registration is in the log read next, and
    /// every later one notifies (the proof is in the store's `changes.rs`).
    /// `subscription` is taken before, so no poke after the registration is
    /// lost either.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn open(
        state: web::Data<AppState>,
        owner: OwnerId,
        credential: Credential,
        subscription: Subscription,
        since: Option<i64>,
    ) -> Result<Self, ApiError> {
        let live = &state.live;
        let now = Instant::now();
        let expires = credential.jwt_expiry().map(|exp| {
            now + exp
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
        let mut stream = Self {
            pending: VecDeque::from([Bytes::from(format!(
                "retry: {}\n\n",
                live.retry.as_millis()
            ))]),
            next_heartbeat: now + live.heartbeat,
            next_reverify: now + live.reverify,
            state,
            owner,
            credential,
            subscription,
            cursor: 0,
            stale: false,
            ended: false,
            expires,
        };
        if let Some(ttl) = stream.state.live.watch_ttl {
            stream
                .state
                .repo
                .watch(std::slice::from_ref(&stream.owner), ttl)
                .await?;
        }
        match since {
            Some(since) => {
                stream.cursor = since;
                stream.read().await?;
            }
            None => {
                stream.cursor = stream.head().await?;
                let id = sync::encode(stream.cursor);
                stream.push("ready", &id, &serde_json::json!({ "cursor": id }));
            }
        }
        Ok(stream)
    }

    /// The chunks of the response body.
    pub fn into_body(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
        futures_util::stream::unfold(self, |mut stream| async move {
            let chunk = stream.next().await?;
            Some((Ok(chunk), stream))
        })
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                self.next_heartbeat = Instant::now() + self.state.live.heartbeat;
                return Some(chunk);
            }
            if self.ended {
                return None;
            }
            if self.stale {
                if let Err(e) = self.read().await {
                    // The client reconnects after `retry` and resumes from
                    // its last id: nothing is lost.
                    tracing::warn!(error = %e, "event stream ended: the change log could not be read");
                    self.ended = true;
                }
                continue;
            }
            match self.wait().await {
                Wake::Shutdown => self.ended = true,
                Wake::Expired => self.expire("the token has expired"),
                Wake::Changed => self.stale = true,
                Wake::Heartbeat => self
                    .pending
                    .push_back(Bytes::from_static(b": heartbeat\n\n")),
                Wake::Reverify => {
                    self.next_reverify = Instant::now() + self.state.live.reverify;
                    match self.credential.verify(self.state.verifier.as_ref()).await {
                        Ok(owner) if owner == self.owner => {}
                        Ok(_) => self.expire("the credential now names another user"),
                        Err(e) => {
                            tracing::info!(reason = %e, "event stream ended: its credential is no longer accepted");
                            self.expire("the credential is no longer accepted");
                        }
                    }
                }
            }
        }
    }

    async fn wait(&mut self) -> Wake {
        let expiry = self.expires;
        let subscription = &mut self.subscription;
        tokio::select! {
            biased;
            _ = subscription.shutdown.wait_for(|stop| *stop) => Wake::Shutdown,
            () = until(expiry) => Wake::Expired,
            changed = subscription.pokes.changed() => match changed {
                Ok(()) => Wake::Changed,
                Err(_) => Wake::Shutdown,
            },
            changed = subscription.reconcile.changed() => match changed {
                Ok(()) => Wake::Changed,
                Err(_) => Wake::Shutdown,
            },
            () = tokio::time::sleep_until(self.next_reverify) => Wake::Reverify,
            () = tokio::time::sleep_until(self.next_heartbeat) => Wake::Heartbeat,
        }
    }

    /// Reads the next page after `cursor` and queues its event, if any.
    async fn read(&mut self) -> Result<(), ApiError> {
        match self.changes(self.cursor, PAGE_LIMIT).await? {
            Changes::Page(page) => {
                self.stale = page.has_more;
                if page.version == self.cursor && page.tasks.is_empty() && page.deleted.is_empty() {
                    return Ok(());
                }
                self.cursor = page.version;
                let body = self.page_body(page)?;
                self.push_message(&body.cursor.clone(), &body);
            }
            Changes::Reset => {
                self.cursor = self.head().await?;
                self.stale = false;
                let id = sync::encode(self.cursor);
                self.push(
                    "reset",
                    &id,
                    &serde_json::json!({
                        "cursor": id,
                        "detail": "The cursor is too old or unknown: reload the tasks (GET /api/tasks); changes follow from this cursor",
                    }),
                );
            }
        }
        Ok(())
    }

    /// The owner's current version: the end of the log.
    async fn head(&self) -> Result<i64, ApiError> {
        Ok(self.state.repo.change_head(&self.owner).await?)
    }

    async fn changes(&self, since: i64, limit: usize) -> Result<Changes, ApiError> {
        self.state
            .repo
            .changes(&self.owner, since, limit)
            .await
            .map_err(|e| match e {
                RepoError::Unavailable(e) => ApiError::Unavailable(e),
                RepoError::Unexpected(e) => ApiError::Internal(e),
            })
    }

    fn page_body(&self, page: ChangePage) -> Result<ChangesResponse, ApiError> {
        Ok(ChangesResponse {
            tasks: page
                .tasks
                .into_iter()
                .map(|task| owned(task, &self.owner))
                .collect::<Result<_, _>>()?,
            deleted: page.deleted.into_iter().map(|id| id.get()).collect(),
            cursor: sync::encode(page.version),
            has_more: page.has_more,
        })
    }

    fn expire(&mut self, detail: &str) {
        self.pending.push_back(Bytes::from(format!(
            "event: expired\ndata: {}\n\n",
            serde_json::json!({ "detail": detail })
        )));
        self.ended = true;
    }

    fn push(&mut self, event: &str, id: &str, data: &impl Serialize) {
        let data = serde_json::to_string(data).unwrap_or_default();
        self.pending.push_back(Bytes::from(format!(
            "event: {event}\nid: {id}\ndata: {data}\n\n"
        )));
    }

    fn push_message(&mut self, id: &str, data: &impl Serialize) {
        let data = serde_json::to_string(data).unwrap_or_default();
        self.pending
            .push_back(Bytes::from(format!("id: {id}\ndata: {data}\n\n")));
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
