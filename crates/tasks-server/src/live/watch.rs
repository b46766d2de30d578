//! PostgreSQL: keeping the users this instance streams to registered as
//! watched, so that their writes (through any instance, or behind the
//! service's back) send the `NOTIFY` the [`listener`](super::listener)
//! turns into pokes.
//!
//! The change-log trigger notifies only for an owner whose
//! `task_sync.watched_until` is in the future (a notifying commit takes a
//! database-wide lock; see docs/OPERATIONS.md, "Change log"). A stream
//! registers its own owner for `SSE_WATCH_TTL` before its first read of the
//! log ([`EventStream::open`](super::stream::EventStream::open)); this task
//! renews every owner with an open stream on this instance, in one
//! statement, every half TTL. After its last stream here closes, an owner
//! stays watched for at most one TTL (a few notifications nobody needs).
//!
//! A renewal that fails (the database is down) is retried after
//! [`RETRY`]. If renewals stopped long enough for registrations to lapse,
//! writes made in between did not notify: once a renewal succeeds again,
//! every stream of the instance reads the log ([`Hub::reconcile_all`]),
//! which covers them, as after a listener reconnect.

use std::sync::Arc;
use std::time::Duration;

use tasks_ports::TaskRepository;
use tokio::time::Instant;

use super::Hub;

/// The delay before retrying a failed renewal.
pub const RETRY: Duration = Duration::from_secs(5);

/// Renews the hub's owners every `ttl / 2` until the hub shuts down.
pub async fn run(repo: Arc<dyn TaskRepository>, hub: Arc<Hub>, ttl: Duration) {
    let mut shutdown = hub.shutdown_signal();
    // Every stream opened after this instant registered itself when it
    // opened: coverage starts here.
    let mut covered_from = Instant::now();
    let mut delay = ttl / 2;
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let started = Instant::now();
        let owners = hub.owners();
        let outcome = repo.watch(&owners, ttl).await;
        match outcome {
            Ok(()) => {
                if lapsed(covered_from, Instant::now(), ttl) {
                    tracing::info!(
                        "live updates: watched users were renewed late; every stream reads the log again"
                    );
                    hub.reconcile_all();
                }
                covered_from = started;
                delay = ttl / 2;
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    users = owners.len(),
                    retry_in_ms = RETRY.as_millis(),
                    "live updates: could not renew the watched users (their writes through other instances may reach streams late)"
                );
                delay = RETRY.min(ttl / 2);
            }
        }
    }
}

/// Whether registrations may have lapsed between the previous successful
/// renewal (which started at `covered_from`, so lasts until at least
/// `covered_from + ttl`) and the one that just ended at `now` (which took
/// its row locks before `now`). Renewals run every half TTL; a quarter TTL
/// of margin absorbs clock-rate differences.
fn lapsed(covered_from: Instant, now: Instant, ttl: Duration) -> bool {
    now.duration_since(covered_from) >= ttl * 3 / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_late_renewal_has_lapsed() {
        let ttl = Duration::from_secs(120);
        let t0 = Instant::now();
        assert!(!lapsed(t0, t0 + ttl / 2 + Duration::from_millis(50), ttl));
        assert!(lapsed(t0, t0 + ttl * 3 / 4, ttl));
        assert!(lapsed(t0, t0 + ttl * 2, ttl));
    }
}
