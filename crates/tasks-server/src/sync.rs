//! Change-feed cursors, in one place for every consumer of the change log
//! (`GET /api/tasks/changes`, and the event ids of live updates).
//!
//! A cursor is the decimal version of the caller's change log it continues
//! after (see `tasks_store`'s `changes` module for how versions are
//! assigned). Clients must treat it as opaque: its form may change. It needs
//! no signature: it only ever addresses the caller's own log (every read
//! filters by the caller), so a changed value can at most be a 400 (not a
//! version) or a 410 (a version the log cannot continue from), never
//! another user's data.

use crate::error::ApiError;

/// The cursor of the start of the log: a full sync.
pub const START: i64 = 0;

/// The cursor that continues after `version`.
#[must_use]
pub fn encode(version: i64) -> String {
    version.to_string()
}

/// The version a cursor continues after.
///
/// # Errors
/// Anything but a non-negative decimal integer that fits 64 bits (no sign,
/// no spaces): a 400.
pub fn decode(raw: &str) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::Validation(
            "cursor is not valid: use a cursor this API returned, or none for a full sync".into(),
        )
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    raw.parse::<i64>().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_everything_else() {
        for v in [0, 1, 42, i64::MAX] {
            assert_eq!(decode(&encode(v)).unwrap(), v);
        }
        assert_eq!(decode("007").unwrap(), 7);
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "x",
            "9223372036854775808",
            "0x10",
            "１",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
