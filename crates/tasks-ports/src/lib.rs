//! Ports: what the task service needs from the outside world, as traits.
//!
//! The delivery layer talks only to these traits; adapters (the Diesel store,
//! the token verifiers) implement them. Each method documents the errors an
//! adapter MUST return, so that an outage, a missing task and a bad token mean
//! the same thing whichever adapter is plugged in.

use async_trait::async_trait;
use tasks_domain::{NewTask, OwnerId, StatusFilter, Task, TaskId, TaskPatch};

/// The `updated_at` values a conditional write accepts (from the strong
/// ETags of an `If-Match`): the write happens only if the task's current
/// `updated_at` is one of them, checked in the write's own `WHERE` clause so
/// that the check and the write are one atomic step. An empty list matches
/// nothing. `None` in place of a precondition means "unconditionally".
pub type Precondition<'a> = &'a [chrono::DateTime<chrono::Utc>];

/// The outcome of a write on an existing task.
#[derive(Debug, PartialEq, Eq)]
pub enum Written<T> {
    /// The write took effect.
    Done(T),
    /// The task does not exist or belongs to another owner (indistinguishable).
    NotFound,
    /// The task exists but its `updated_at` is not one the precondition
    /// accepts; nothing was written.
    PreconditionFailed,
}

/// One page of an owner's change log after a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePage {
    /// The current state of the tasks created or changed after `since`, in
    /// version order (a task appears once, at its latest version).
    pub tasks: Vec<Task>,
    /// Tasks deleted after `since` (tombstones). A task changed and then
    /// deleted appears here only. A full sync (`since` = 0) leaves
    /// tombstones out.
    pub deleted: Vec<TaskId>,
    /// The cursor to continue from: the highest version included, or the
    /// owner's current version when `has_more` is false (`since` itself
    /// when nothing is new).
    pub version: i64,
    /// Whether more changes follow `version` already.
    pub has_more: bool,
}

/// The answer to a change-log read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    Page(ChangePage),
    /// `since` cannot be continued from: it is older than the tombstones
    /// still kept (`purged_through`), or newer than the owner's current
    /// version (e.g. a database restored from a backup). The client must
    /// drop its copy and start again from 0.
    Reset,
}

/// An `Idempotency-Key` claimed by a create, scoped to one owner (the
/// caller of [`TaskRepository::create_idempotent`]) and one `scope`.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    /// The operation the key belongs to, e.g. `POST /api/tasks`: the same
    /// key sent to another operation is another key.
    pub scope: &'a str,
    /// The client's key, 1 to 255 visible ASCII characters.
    pub key: &'a str,
    /// A digest of the whole request (method, route, parsed body). It MUST
    /// cover every field of the `NewTask` it comes with: two requests with
    /// the same fingerprint create the same task, which is how a replay is
    /// rebuilt without storing the body.
    pub fingerprint: [u8; 32],
    /// How long the key is remembered after its first use.
    pub ttl: std::time::Duration,
    /// Most live (unexpired) keys one owner may hold, all scopes together:
    /// a new key beyond it is refused ([`IdempotentCreate::TooManyKeys`]).
    pub max_keys: u32,
}

/// The outcome of [`TaskRepository::create_idempotent`].
#[derive(Debug, PartialEq, Eq)]
pub enum IdempotentCreate {
    /// The key was not in use: this call did what [`TaskRepository::create`]
    /// does (`Some(task)`, or `None` for the task limit), and the key now
    /// remembers that outcome.
    First(Option<Task>),
    /// The key was used before, within its time to live, with the same
    /// fingerprint: nothing was written now; this is the outcome of the
    /// first call (the task as it was created, or `None` for the task
    /// limit).
    Replayed(Option<Task>),
    /// The key was used before with a different fingerprint; nothing was
    /// written.
    FingerprintMismatch,
    /// Another call with the same owner, scope and key has not finished
    /// yet; nothing was written. Retrying later gets its outcome.
    InFlight,
    /// The key is new but the owner already holds `max_keys` live keys;
    /// nothing was written. The oldest of them expires in `retry_after`.
    TooManyKeys { retry_after: std::time::Duration },
}

/// Errors a [`TaskRepository`] may return. A task that does not exist, or that
/// belongs to someone else, is never an error: it is `None` / `false`, and the
/// two cases MUST be indistinguishable.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database cannot be reached, is overloaded, is out of disk space,
    /// or did not answer in time. Retrying later may succeed; the operation
    /// did not take effect.
    #[error("task storage is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a bug, a schema mismatch, corrupt data.
    #[error("unexpected task storage error")]
    Unexpected(#[source] anyhow::Error),
}

/// Durable storage of tasks, partitioned by owner.
///
/// Every method takes the owner and MUST filter by it inside the query itself
/// (never by loading and checking afterwards), so that no code path can read or
/// change another owner's task.
///
/// # Errors
/// Every method returns [`RepoError::Unavailable`] when the database is down,
/// saturated or too slow, and [`RepoError::Unexpected`] for anything else that
/// is not a normal outcome.
#[async_trait]
pub trait TaskRepository: Send + Sync + 'static {
    /// One keyset batch of the owner's tasks that pass `filter`, newest first
    /// (descending id): at most `limit` tasks, all with an id below `before`
    /// when it is given. A batch shorter than `limit` is the last one. Each
    /// call is one short query, so a caller can stream a long list without
    /// holding a connection in between.
    async fn list(
        &self,
        owner: &OwnerId,
        filter: StatusFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<Task>, RepoError>;

    /// The task, or `None` when it does not exist or belongs to another owner.
    async fn get(&self, owner: &OwnerId, id: TaskId) -> Result<Option<Task>, RepoError>;

    /// Stores a new, not completed task for `owner`, unless the owner already
    /// holds `max_tasks` tasks: then nothing is stored and the result is
    /// `None`. The check and the insert are one atomic step, so concurrent
    /// creates never take an owner past `max_tasks`.
    async fn create(
        &self,
        owner: &OwnerId,
        task: NewTask,
        max_tasks: u32,
    ) -> Result<Option<Task>, RepoError>;

    /// [`TaskRepository::create`] under an idempotency key: the key is
    /// claimed in the same transaction as the insert (the task, its owner's
    /// count and the key row commit together or not at all), so after any
    /// crash a key either has its outcome stored or was never used. An
    /// outcome is remembered for `key.ttl`, the task limit's `None`
    /// included; an error stores nothing, so a retry after an outage
    /// really retries. A call while another with the same key is running
    /// returns [`IdempotentCreate::InFlight`] at once instead of waiting
    /// for it. The plain [`TaskRepository::create`] pays nothing for this.
    async fn create_idempotent(
        &self,
        owner: &OwnerId,
        task: NewTask,
        max_tasks: u32,
        key: IdempotencyKey<'_>,
    ) -> Result<IdempotentCreate, RepoError>;

    /// Deletes at most `limit` idempotency keys whose time to live has
    /// passed, in one short statement, and returns how many it deleted. A
    /// periodic clean-up calls it in batches; an expired key is never
    /// replayed even before it is deleted.
    async fn purge_expired_idempotency_keys(&self, limit: u32) -> Result<u64, RepoError>;

    /// Applies `patch` in one statement and bumps `updated_at`;
    /// [`Written::NotFound`] when the task does not exist or belongs to
    /// another owner, [`Written::PreconditionFailed`] when it exists but
    /// `expected` (checked in the same statement) does not match.
    async fn update(
        &self,
        owner: &OwnerId,
        id: TaskId,
        patch: TaskPatch,
        expected: Option<Precondition<'_>>,
    ) -> Result<Written<Task>, RepoError>;

    /// Flips `completed` atomically (concurrent toggles never lose one) and
    /// bumps `updated_at`; the outcomes are those of [`TaskRepository::update`].
    async fn toggle(
        &self,
        owner: &OwnerId,
        id: TaskId,
        expected: Option<Precondition<'_>>,
    ) -> Result<Written<Task>, RepoError>;

    /// Deletes the task; the outcomes are those of [`TaskRepository::update`].
    async fn delete(
        &self,
        owner: &OwnerId,
        id: TaskId,
        expected: Option<Precondition<'_>>,
    ) -> Result<Written<()>, RepoError>;

    /// One page of the owner's change log after version `since` (0: the
    /// whole current state, no tombstones): at most `limit` entries, read in
    /// one consistent snapshot. Versions are per owner and taken under the
    /// owner's row lock in the same transaction as each write, so they
    /// become visible in order: a reader that follows the returned versions
    /// never skips a change. [`Changes::Reset`] when `since` is older than
    /// the tombstones kept or newer than the owner's current version.
    async fn changes(
        &self,
        owner: &OwnerId,
        since: i64,
        limit: usize,
    ) -> Result<Changes, RepoError>;

    /// The owner's current version: the cursor that continues from now
    /// (what a page with `has_more` false returns). The default pages
    /// through [`TaskRepository::changes`]; adapters answer it with one
    /// lookup.
    async fn change_head(&self, owner: &OwnerId) -> Result<i64, RepoError> {
        let mut version = 0;
        loop {
            match self.changes(owner, version, 1000).await? {
                Changes::Page(page) if page.has_more => version = page.version,
                Changes::Page(page) => return Ok(page.version),
                Changes::Reset => {
                    return Err(RepoError::Unexpected(anyhow::anyhow!(
                        "the change log cannot continue from its own pages"
                    )));
                }
            }
        }
    }

    /// Marks `owners` as watched by a live-update stream for `ttl` from
    /// now (extending, never shortening, an earlier mark), in one
    /// statement. Adapters whose writes announce changes to other instances
    /// (PostgreSQL's `NOTIFY`) announce only the writes of watched owners;
    /// every write that commits after this call returns is announced while
    /// the mark lasts, and every earlier one is in the change log, so a
    /// stream that calls this before its first read of the log misses
    /// nothing. Adapters that announce nothing do nothing. No default: a
    /// decorator must forward it.
    async fn watch(&self, owners: &[OwnerId], ttl: std::time::Duration) -> Result<(), RepoError>;

    /// Checks that the database answers, for readiness probes.
    async fn ping(&self) -> Result<(), RepoError>;
}

/// Why a bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The token is malformed, expired, badly signed, for another audience,
    /// revoked, or otherwise not acceptable. The message is safe to show to
    /// the client: it never contains the token or key material.
    #[error("{0}")]
    Rejected(String),
    /// The verifier could not decide because something it depends on (a key
    /// endpoint, a session database) is unreachable and nothing is cached.
    #[error("token verification is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Like [`VerifyError::Unavailable`], with an explanation that is safe to
    /// show to the client (what could not be reached, never a credential),
    /// so that a frontend developer can fix a set-up without the logs.
    #[error("{detail}")]
    UnavailableBecause {
        detail: String,
        #[source]
        source: anyhow::Error,
    },
    /// The verifier's configuration does not match what it found (e.g. a
    /// session table without the expected columns). Not transient:
    /// retrying does not help, an operator must fix the configuration.
    #[error("token verification is misconfigured")]
    Misconfigured(#[source] anyhow::Error),
}

impl VerifyError {
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected(reason.into())
    }
}

/// Turns a bearer token into the identity of the caller.
///
/// # Errors
/// [`VerifyError::Rejected`] for every token that does not prove an identity;
/// [`VerifyError::Unavailable`] only when the verifier cannot reach what it
/// needs to decide.
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` (the part after `Bearer `) and returns its owner.
    async fn verify(&self, token: &str) -> Result<OwnerId, VerifyError>;

    /// Verifies the value of a session cookie the browser sent (no
    /// `Authorization` header). Unlike [`TokenVerifier::verify`], only a
    /// signed value may be accepted: a cookie is never a bearer token.
    /// Verifiers without cookie sessions reject it.
    async fn verify_cookie(&self, value: &str) -> Result<OwnerId, VerifyError> {
        let _ = value;
        Err(VerifyError::rejected("cookie sessions are not configured"))
    }
}
