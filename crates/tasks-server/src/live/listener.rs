//! The PostgreSQL listener: one dedicated connection per instance that
//! `LISTEN`s on `tasks_changed` and pokes the hub for each notification.
//!
//! The triggers of the change log call `pg_notify('tasks_changed',
//! '<version> <user_id>')` in the writing transaction of every user some
//! stream watches (see [`super::watch`]), so a notification is delivered
//! (once per transaction, at commit) to every instance's listener.
//! It is only a hint: streams read the data from the log. When the
//! connection is lost, notifications sent meanwhile are lost too; so after
//! every (re)connection, once `LISTEN` is in effect, every stream of the
//! instance reads the log again ([`Hub::reconcile_all`]), which covers the
//! gap.
//!
//! The connection must reach PostgreSQL itself (`DATABASE_DIRECT_URL`): a
//! PgBouncer in transaction mode, or Neon's `-pooler` endpoint, would hand
//! the `LISTEN` to a server connection that other clients then use.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tasks_pg::PgTarget;
use tokio_postgres::AsyncMessage;

use super::Hub;

/// The channel the change-log triggers notify.
pub const CHANNEL: &str = "tasks_changed";
/// The listener connection's `application_name` (visible in
/// `pg_stat_activity`), unless the URL sets one.
pub const APPLICATION_NAME: &str = "tasks-server-listener";

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// A connection that lasted this long resets the backoff; one that fails
/// sooner (a proxy that accepts and drops it) keeps backing off.
const STABLE: Duration = Duration::from_secs(30);

/// Parses the listener's URL; TCP keepalives every 30 s detect a peer that
/// vanished without closing (a suspended Neon compute, a dropped NAT entry).
///
/// # Errors
/// The URL is not a valid PostgreSQL URL.
pub fn target(url: &str, connect_timeout: Duration) -> anyhow::Result<PgTarget> {
    let mut target = PgTarget::parse(
        url,
        "DATABASE_DIRECT_URL",
        connect_timeout,
        APPLICATION_NAME,
    )?;
    target
        .config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    Ok(target)
}

/// Listens until the hub shuts down, reconnecting with exponential backoff
/// (100 ms doubling to 10 s) whenever the connection fails.
pub async fn run(target: PgTarget, hub: Arc<Hub>) {
    let mut shutdown = hub.shutdown_signal();
    let mut delay = FIRST_RETRY;
    loop {
        let mut listening_since = None;
        let outcome = tokio::select! {
            outcome = listen(&target, &hub, &mut listening_since) => outcome,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if listening_since.is_some_and(|since: tokio::time::Instant| since.elapsed() >= STABLE) {
            delay = FIRST_RETRY;
        }
        set_connected(false);
        match outcome {
            Ok(()) => tracing::warn!("change listener connection closed; reconnecting"),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                retry_in_ms = delay.as_millis(),
                "change listener connection failed; reconnecting (live updates wait meanwhile)"
            ),
        }
        metrics::counter!("sse_listener_reconnects_total").increment(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// One connection's life: connect, `LISTEN`, reconcile, then poke for each
/// notification until the connection ends.
async fn listen(
    target: &PgTarget,
    hub: &Hub,
    listening_since: &mut Option<tokio::time::Instant>,
) -> anyhow::Result<()> {
    let (client, mut connection) = target.config.connect(target.tls.clone()).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The connection must be driven while LISTEN runs.
    let statement = format!("LISTEN {CHANNEL}");
    let listening = client.batch_execute(&statement);
    tokio::pin!(listening);
    loop {
        tokio::select! {
            result = &mut listening => { result?; break; }
            message = messages.next() => match message {
                Some(Ok(message)) => deliver(hub, &message),
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
    *listening_since = Some(tokio::time::Instant::now());
    set_connected(true);
    tracing::info!(channel = CHANNEL, "change listener connected");
    // Anything committed while no listener was connected was not notified
    // here: every stream reads the log again.
    hub.reconcile_all();
    // `client` stays alive (in scope) while the notifications arrive.
    while let Some(message) = messages.next().await {
        deliver(hub, &message?);
    }
    Ok(())
}

fn deliver(hub: &Hub, message: &AsyncMessage) {
    if let AsyncMessage::Notification(n) = message
        && n.channel() == CHANNEL
        && let Some(owner) = owner_of(n.payload())
    {
        hub.poke(owner);
    }
}

/// The user id of a `'<version> <user_id>'` payload (user ids may contain
/// spaces; the version never does).
fn owner_of(payload: &str) -> Option<&str> {
    payload.split_once(' ').map(|(_, owner)| owner)
}

fn set_connected(up: bool) {
    metrics::gauge!("sse_listener_connected").set(if up { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(owner_of("12 user-1"), Some("user-1"));
        assert_eq!(owner_of("3 a user with spaces"), Some("a user with spaces"));
        assert_eq!(owner_of("nonsense"), None);
    }
}
