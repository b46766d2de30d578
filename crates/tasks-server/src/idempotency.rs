//! `Idempotency-Key` on `POST /api/tasks` (draft-ietf-httpapi-idempotency-key-header,
//! as Stripe does it): the header, the request fingerprint, and the periodic
//! clean-up of expired keys. The key is claimed by the store, in the same
//! transaction as the task (`TaskRepository::create_idempotent`).
//!
//! What is remembered: the outcome of a create that reached the database, a
//! 201 or the 409 of the task limit (Stripe replays 4xx too: the same request
//! gets the same answer; send a new key to try again). Not remembered: a 400
//! or 413 (the body is checked before the key is claimed, and the same body
//! gets the same 400 anyway), a 401 or 429 (nothing reached the handler), and
//! every 5xx, 503 included: nothing was committed, so a retry with the same
//! key really retries.

use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName};
use sha2::{Digest as _, Sha256};
use tasks_domain::NewTask;
use tasks_ports::TaskRepository;

use crate::error::ApiError;

/// The request header.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// On a response that is a replay of the first one (as Stripe names it).
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The operation a key of `POST /api/tasks` is scoped to: the same on the
/// `/api/{user_id}/tasks` alias, which is the same operation.
pub const CREATE_SCOPE: &str = "POST /api/tasks";

/// The longest key.
pub const MAX_KEY_LEN: usize = 255;

/// Expired keys deleted per statement, and statements per clean-up round:
/// each statement is short, and a round ends after at most this many.
const PURGE_BATCH: u32 = 1_000;
const PURGE_BATCHES_PER_ROUND: usize = 20;

/// The key of a request, if it sent one.
///
/// Accepted: the structured-field string the draft specifies (`"abc"`, with
/// `\"` and `\\` escapes), and the bare token Stripe's clients send (`abc`);
/// both name the same key. After unquoting, a key is 1 to 255 visible ASCII
/// characters (`!` to `~`).
///
/// # Errors
/// More than one header, or a value that is not a key: a 400.
pub fn parse_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid("send one Idempotency-Key header, not several"));
    }
    let raw = value
        .to_str()
        .map_err(|_| invalid("Idempotency-Key must be visible ASCII"))?
        .trim_matches([' ', '\t']);
    let key = match raw.strip_prefix('"') {
        Some(quoted) => unquote(quoted)?,
        None => raw.to_owned(),
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "Idempotency-Key must be 1 to 255 visible ASCII characters, bare or as a quoted string",
        ));
    }
    Ok(Some(key))
}

/// The rest of an sf-string after its opening quote (RFC 8941 §4.2.5).
fn unquote(rest: &str) -> Result<String, ApiError> {
    let mut key = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => key.push(escaped),
                _ => return Err(invalid("Idempotency-Key: bad escape in the quoted string")),
            },
            '"' => {
                if chars.next().is_some() {
                    return Err(invalid(
                        "Idempotency-Key: nothing may follow the quoted string",
                    ));
                }
                return Ok(key);
            }
            ' '..='~' => key.push(c),
            _ => return Err(invalid("Idempotency-Key must be visible ASCII")),
        }
    }
    Err(invalid("Idempotency-Key: the quoted string is not closed"))
}

fn invalid(detail: &str) -> ApiError {
    ApiError::Validation(detail.to_owned())
}

/// SHA-256 of the canonical request: the operation (method and route) and
/// the parsed body (the trimmed title and the description), each
/// length-prefixed. Two bodies that create the same task (`" a"` and `"a"`,
/// reordered or unknown fields) have the same fingerprint.
#[must_use]
pub fn fingerprint(scope: &str, task: &NewTask) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(b"tasks-idempotency/v1");
    field(scope.as_bytes());
    field(task.title.as_str().as_bytes());
    match &task.description {
        None => field(b"\x00"),
        Some(d) => {
            field(b"\x01");
            field(d.as_str().as_bytes());
        }
    }
    hash.finalize().into()
}

/// Deletes expired keys every `interval`, in batches of `PURGE_BATCH`, at
/// most `PURGE_BATCHES_PER_ROUND` batches a round; a backlog larger than
/// that is worked off over the next rounds. Stops when the store is dropped.
pub fn spawn_cleanup(repo: &Arc<dyn TaskRepository>, interval: Duration) {
    let weak: Weak<dyn TaskRepository> = Arc::downgrade(repo);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(repo) = weak.upgrade() else {
                return;
            };
            purge_round(&*repo).await;
        }
    });
}

async fn purge_round(repo: &dyn TaskRepository) {
    let mut total = 0_u64;
    for _ in 0..PURGE_BATCHES_PER_ROUND {
        match repo.purge_expired_idempotency_keys(PURGE_BATCH).await {
            Ok(n) => {
                total += n;
                if n < u64::from(PURGE_BATCH) {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(
                    error = format!("{e:#}"),
                    "idempotency key clean-up failed; next round retries"
                );
                break;
            }
        }
    }
    if total > 0 {
        tracing::debug!(deleted = total, "expired idempotency keys deleted");
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;
    use tasks_domain::{Description, Title};

    use super::*;

    fn parse(values: &[&[u8]]) -> Result<Option<String>, ApiError> {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(IDEMPOTENCY_KEY.clone(), HeaderValue::from_bytes(v).unwrap());
        }
        parse_key(&map)
    }

    #[test]
    fn bare_and_quoted_keys_name_the_same_key() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&[b"abc-123"]).unwrap().as_deref(), Some("abc-123"));
        assert_eq!(
            parse(&[b"\"abc-123\""]).unwrap().as_deref(),
            Some("abc-123")
        );
        assert_eq!(
            parse(&[br#""a\"b\\c""#]).unwrap().as_deref(),
            Some(r#"a"b\c"#)
        );
        let longest = "k".repeat(255);
        assert_eq!(parse(&[longest.as_bytes()]).unwrap(), Some(longest));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let too_long = "k".repeat(256);
        for bad in [
            &b""[..],
            b"\"\"",
            b"\"abc",
            b"\"abc\";p=1",
            b"\"a\\nb\"",
            b"\"a b\"",
            b"a b",
            b"caf\xc3\xa9",
            too_long.as_bytes(),
        ] {
            assert!(parse(&[bad]).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&[b"a", b"b"]).is_err());
    }

    #[test]
    fn fingerprints_cover_scope_title_and_description() {
        let task = |title: &str, description: Option<&str>| NewTask {
            title: Title::parse(title).unwrap(),
            description: description.map(|d| Description::parse(d.to_owned()).unwrap()),
        };
        let base = fingerprint(CREATE_SCOPE, &task("a", None));
        assert_eq!(base, fingerprint(CREATE_SCOPE, &task(" a ", None)));
        assert_ne!(base, fingerprint("POST /other", &task("a", None)));
        assert_ne!(base, fingerprint(CREATE_SCOPE, &task("b", None)));
        assert_ne!(base, fingerprint(CREATE_SCOPE, &task("a", Some(""))));
        assert_ne!(
            fingerprint(CREATE_SCOPE, &task("a", Some("b"))),
            fingerprint(CREATE_SCOPE, &task("ab", None))
        );
    }
}
