//! Tasks as JSON (lists and single-task answers), written straight into
//! one response buffer.
//!
//! A list answer is most of what the service sends, and a callgrind profile
//! of `GET /api/tasks` (100 tasks, bench/README.md) put serde_json's string
//! writer at 14% of the request: five strings per task, each through the
//! `io::Write` and `Formatter` layers, half of them timestamps that never
//! need escaping; then the body grew by doubling (copies) before actix
//! copied it once more. Here a task is written with its timestamps as
//! fixed-width bytes and its three free-text strings escaped exactly as
//! serde_json escapes them, into a buffer sized once for the whole list.
//! The output is byte for byte serde_json's (the `Serialize` derive of
//! [`TaskResponse`] stays the reference: the change feed, the live events
//! and the OpenAPI schema use it), which the tests check on arbitrary
//! strings.

use crate::dto::{TaskResponse, rfc3339_utc_bytes};

/// Bytes of a task's JSON apart from its three strings: field names,
/// punctuation, id, flag and the two timestamps (about 140).
const FIXED_BYTES: usize = 160;

/// The JSON array of `tasks`, as `serde_json::to_vec` would write it.
#[must_use]
pub fn task_array(tasks: &[TaskResponse]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + tasks.iter().map(|t| size(t) + 1).sum::<usize>());
    out.push(b'[');
    for (i, task) in tasks.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_task(&mut out, task);
    }
    out.push(b']');
    out
}

/// One task's JSON object in a buffer of its own (single-task answers).
#[must_use]
pub fn task_object(task: &TaskResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity(size(task));
    write_task(&mut out, task);
    out
}

/// About the size of `task`'s JSON: the fixed part, its strings, and room
/// for some escapes.
fn size(task: &TaskResponse) -> usize {
    let strings = task.user_id.as_str().len()
        + task.title.len()
        + task.description.as_ref().map_or(0, String::len);
    FIXED_BYTES + strings + strings / 8
}

/// One task's JSON object, as its `Serialize` derive writes it.
pub fn write_task(out: &mut Vec<u8>, task: &TaskResponse) {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(itoa::Buffer::new().format(task.id).as_bytes());
    out.extend_from_slice(b",\"user_id\":");
    write_str(out, task.user_id.as_str());
    out.extend_from_slice(b",\"title\":");
    write_str(out, &task.title);
    out.extend_from_slice(b",\"description\":");
    match &task.description {
        Some(d) => write_str(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(if task.completed {
        b",\"completed\":true,\"created_at\":"
    } else {
        b",\"completed\":false,\"created_at\":"
    });
    write_timestamp(out, &task.created_at);
    out.extend_from_slice(b",\"updated_at\":");
    write_timestamp(out, &task.updated_at);
    out.push(b'}');
}

fn write_timestamp(out: &mut Vec<u8>, t: &chrono::DateTime<chrono::Utc>) {
    match rfc3339_utc_bytes(t) {
        Some(bytes) => {
            out.push(b'"');
            out.extend_from_slice(&bytes);
            out.push(b'"');
        }
        // Years outside 0..=9999: chrono's own formatting, escaped as any
        // string (it needs none).
        None => write_str(out, &t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    }
}

/// What serde_json writes for each byte that needs escaping: `u` for
/// `\u00XX`, the letter of a short escape, or 0 for none.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0A] = b'n';
    table[0x0C] = b'f';
    table[0x0D] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// A JSON string: runs of bytes that need no escaping are copied whole.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push(b'"');
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPE[byte as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(byte >> 4) as usize],
                HEX[(byte & 0xF) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;
    use tasks_domain::OwnerId;

    fn task(
        id: i64,
        user: &str,
        title: &str,
        description: Option<&str>,
        done: bool,
        at: i64,
    ) -> TaskResponse {
        let t = DateTime::<Utc>::from_timestamp_micros(at).unwrap();
        TaskResponse {
            id,
            user_id: OwnerId::parse(user).unwrap(),
            title: title.to_owned(),
            description: description.map(str::to_owned),
            completed: done,
            created_at: t,
            updated_at: t + chrono::Duration::microseconds(7),
        }
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let tasks = vec![
            task(1, "alice", "Buy milk", None, false, 1_764_000_000_123_456),
            task(
                i64::MAX,
                "b\"o\\b",
                "tab\tquote\"nl\ncr\rbs\u{8}ff\u{c}nul\u{0}us\u{1f}del\u{7f}",
                Some("é 😀 \u{2028}"),
                true,
                0,
            ),
            task(3, "x", "old", Some(""), false, -62_135_596_800_000_000),
            task(4, "y", "far", None, true, 253_402_300_799_999_999),
        ];
        assert_eq!(
            String::from_utf8(task_array(&tasks)).unwrap(),
            serde_json::to_string(&tasks).unwrap()
        );
        assert_eq!(task_array(&[]), b"[]");
        for task in &tasks {
            assert_eq!(task_object(task), serde_json::to_vec(task).unwrap());
        }
    }

    proptest! {
        #[test]
        fn any_strings_and_times_match_serde_json(
            user in "[^\\x00-\\x1f\\x7f]{1,40}",
            title in any::<String>(),
            description in proptest::option::of(any::<String>()),
            id in 1i64..,
            done in any::<bool>(),
            at in -62_135_596_800_000_000i64..253_402_300_799_999_999,
        ) {
            prop_assume!(OwnerId::parse(&user).is_ok());
            let tasks = vec![task(id, &user, &title, description.as_deref(), done, at)];
            prop_assert_eq!(
                String::from_utf8(task_array(&tasks)).unwrap(),
                serde_json::to_string(&tasks).unwrap()
            );
        }
    }
}
