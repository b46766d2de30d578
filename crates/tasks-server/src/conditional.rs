//! Conditional requests (RFC 9110 §13) and list cursors.
//!
//! ETags are derived from the data itself, never from process state, so
//! every instance of the service computes the same tag for the same rows and
//! a tag can only match while the rows are unchanged:
//!
//! - a task: `"<id>-<updated_at in µs since the epoch>"`. `updated_at` is
//!   bumped by every update and toggle, in the same statement as the write.
//! - a list or page: `"l-<hex>"`, the SHA-256 (truncated to 128 bits) of the
//!   id and `updated_at` of exactly the rows returned, in order, and whether
//!   a next page follows. A create, delete, update or toggle that changes what
//!   the response would contain changes one of these inputs.
//!
//! `If-Match` takes strong tags only (a weak `W/` tag never matches, RFC 9110
//! §13.1.1); `If-None-Match` compares weakly (§13.1.2).
//!
//! The entity-tag grammar is small enough that a parser here is simpler than
//! a dependency: actix-web's typed `IfMatch` header rejects the whole header
//! on one malformed member, where a mismatch is the right answer.

use actix_web::http::header::{self, HeaderMap};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use tasks_domain::{OwnerId, StatusFilter, TaskId};

use crate::dto::TaskResponse;
use crate::error::ApiError;

/// The strong ETag of one task.
#[must_use]
pub fn task_etag(task: &TaskResponse) -> String {
    format!("\"{}-{}\"", task.id, task.updated_at.timestamp_micros())
}

/// The strong ETag of a list or page: over the id and `updated_at` of
/// exactly the rows returned, and whether a next page follows.
#[must_use]
pub fn list_etag(tasks: &[TaskResponse], has_next: bool) -> String {
    let mut hash = Sha256::new();
    hash.update(b"tasks-list/v1");
    for task in tasks {
        hash.update(task.id.to_be_bytes());
        hash.update(task.updated_at.timestamp_micros().to_be_bytes());
    }
    hash.update([u8::from(has_next)]);
    let digest = hash.finalize();
    format!("\"l-{}\"", hex::encode(&digest[..16]))
}

/// The entity-tags of all `name` headers, split on commas. Commas cannot
/// occur inside the tags this service issues.
fn tags<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Vec<&'a str> {
    headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether `If-None-Match` matches `etag` (weak comparison, or `*`).
#[must_use]
pub fn none_match_hits(headers: &HeaderMap, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    tags(headers, &header::IF_NONE_MATCH)
        .into_iter()
        .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
}

/// The precondition of a write from `If-Match`:
/// - no header: `Ok(None)`, the write is unconditional;
/// - `*`: `Ok(None)` too, since every write here already requires the task
///   to exist (a missing one is a 404);
/// - otherwise the `updated_at` values of the strong tags issued for task
///   `id`; weak, malformed and other tasks' tags match nothing, so the
///   list may be empty (then the write is a 412 if the task exists).
#[must_use]
pub fn if_match(headers: &HeaderMap, id: TaskId) -> Option<Vec<DateTime<Utc>>> {
    if !headers.contains_key(header::IF_MATCH) {
        return None;
    }
    let tags = tags(headers, &header::IF_MATCH);
    if tags.contains(&"*") {
        return None;
    }
    let prefix = format!("\"{}-", id.get());
    Some(
        tags.into_iter()
            .filter_map(|t| t.strip_prefix(prefix.as_str())?.strip_suffix('"'))
            .filter_map(|micros| micros.parse::<i64>().ok())
            .filter_map(DateTime::<Utc>::from_timestamp_micros)
            .collect(),
    )
}

/// The smallest and largest page.
pub const MIN_LIMIT: u32 = 1;
pub const MAX_LIMIT: u32 = 1_000;
/// The page size when only a `cursor` is given.
pub const DEFAULT_LIMIT: u32 = 100;

/// Parses `limit`.
///
/// # Errors
/// Anything but an integer in `MIN_LIMIT..=MAX_LIMIT`.
pub fn parse_limit(raw: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>()
        .ok()
        .filter(|n| (MIN_LIMIT..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "limit must be an integer from {MIN_LIMIT} to {MAX_LIMIT}"
            ))
        })
}

/// The canonical query value of a filter.
#[must_use]
pub fn filter_name(filter: StatusFilter) -> &'static str {
    match filter {
        StatusFilter::All => "all",
        StatusFilter::Completed => "completed",
        StatusFilter::Active => "active",
    }
}

/// A list cursor: the last id of the page before, bound to the user and the
/// filter by a SHA-256 check value. Not a secret MAC: a cursor carries
/// nothing the caller may not know, and every query filters by the caller
/// anyway, so a forged cursor can only start the caller's own list at another
/// id. The check value makes a cursor of another user, of another filter or
/// with a changed id fail loudly (400) instead, and it works across
/// instances and restarts without key management.
fn cursor_check(owner: &OwnerId, filter: StatusFilter, last: i64) -> String {
    let mut hash = Sha256::new();
    hash.update(b"tasks-cursor/v1\0");
    hash.update(owner.as_str().as_bytes());
    hash.update(b"\0");
    hash.update(filter_name(filter).as_bytes());
    hash.update(b"\0");
    hash.update(last.to_be_bytes());
    hex::encode(&hash.finalize()[..12])
}

/// The cursor that continues after task `last`.
#[must_use]
pub fn encode_cursor(owner: &OwnerId, filter: StatusFilter, last: TaskId) -> String {
    let last = last.get();
    URL_SAFE_NO_PAD.encode(format!("{last}.{}", cursor_check(owner, filter, last)))
}

/// The last id a cursor continues after.
///
/// # Errors
/// A cursor that is malformed, changed, or issued to another user or for
/// another filter.
pub fn decode_cursor(raw: &str, owner: &OwnerId, filter: StatusFilter) -> Result<TaskId, ApiError> {
    let invalid = || {
        ApiError::Validation(
            "cursor is not valid for this user and filter; start again without it".into(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
    let (last, check) = text.split_once('.').ok_or_else(invalid)?;
    let last: i64 = last.parse().map_err(|_| invalid())?;
    if check != cursor_check(owner, filter, last) {
        return Err(invalid());
    }
    if last < 1 {
        return Err(invalid());
    }
    Ok(TaskId::new(last))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(name: &HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn if_match_keeps_only_strong_tags_of_this_task() {
        let id = TaskId::new(7);
        assert_eq!(if_match(&HeaderMap::new(), id), None);
        assert_eq!(if_match(&headers(&header::IF_MATCH, &["*"]), id), None);
        let got = if_match(
            &headers(
                &header::IF_MATCH,
                &["W/\"7-1\", \"8-2\", \"7-3\"", "\"7-x\", junk, \"7-4\""],
            ),
            id,
        )
        .unwrap();
        let micros: Vec<i64> = got.iter().map(DateTime::timestamp_micros).collect();
        assert_eq!(micros, [3, 4]);
        assert_eq!(
            if_match(&headers(&header::IF_MATCH, &["W/\"7-1\""]), id),
            Some(vec![])
        );
    }

    #[test]
    fn cursors_are_bound_to_user_filter_and_id() {
        let alice = OwnerId::parse("alice").unwrap();
        let bob = OwnerId::parse("bob").unwrap();
        let cursor = encode_cursor(&alice, StatusFilter::All, TaskId::new(42));
        assert_eq!(
            decode_cursor(&cursor, &alice, StatusFilter::All).unwrap(),
            TaskId::new(42)
        );
        assert!(decode_cursor(&cursor, &bob, StatusFilter::All).is_err());
        assert!(decode_cursor(&cursor, &alice, StatusFilter::Active).is_err());
        let forged = URL_SAFE_NO_PAD.encode(format!(
            "41.{}",
            cursor_check(&alice, StatusFilter::All, 42)
        ));
        assert!(decode_cursor(&forged, &alice, StatusFilter::All).is_err());
    }
}
