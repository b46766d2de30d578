//! The task domain: what a task is, which values are valid, and who may see it.
//!
//! Every value here is parsed, never merely validated: a [`Title`] that exists is
//! trimmed and between 1 and 200 characters, an [`OwnerId`] is never empty, and so
//! on. The crate does no I/O and knows nothing of HTTP, JSON or SQL, so the rules
//! can be unit-tested in isolation and every adapter inherits them.

mod owner;
mod task;
mod values;

pub use owner::{OwnerId, OwnerIdError};
pub use task::{NewTask, StatusFilter, StatusFilterError, Task, TaskPatch};
pub use values::{
    Description, DescriptionError, INVISIBLE, PYTHON_WHITESPACE, TaskId, TaskIdError, Title,
    TitleError, is_python_whitespace,
};

/// The current time, truncated to whole microseconds.
///
/// PostgreSQL keeps microseconds; truncating here means the timestamp a client is
/// given on write is exactly the one it reads back later, on every backend.
#[must_use]
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    let now = chrono::Utc::now();
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}
