//! Reads from a streaming standby (`DATABASE_READ_URL`), with
//! read-your-writes for the writer.
//!
//! A background sampler takes, every `max_lag / 4` (25 to 500 ms), the
//! instant `T` and then the primary's `pg_current_wal_lsn()` `L`, and then
//! the standby's `pg_last_wal_replay_lsn()` `R`. Once `R >= L`, every write
//! that completed on this instance before `T` is replayed, hence visible, on
//! the standby: its commit record was flushed (at or before `L`) before the
//! primary was asked. The standby is then "caught up as of `T`". Samples the
//! standby has not reached yet are kept, so a standby a few milliseconds
//! behind under steady writes is caught up as of an earlier sample rather
//! than never.
//!
//! A read goes to the standby only when (a) it is caught up as of an instant
//! within `max_lag` of now, with no failure seen since that instant, and (b)
//! the reader's last write on this instance completed before that instant.
//! Writes add no round trip: each records its completion instant in a
//! bounded map. When in doubt the read goes to the primary: an owner evicted
//! from the map is taken to have written as late as the newest evicted
//! entry. Read-your-writes thus holds per instance; another instance may
//! serve a read up to `max_lag` stale.
//!
//! A standby read that fails for any reason is retried on the primary, and
//! the standby serves nothing until a sample started after the failure
//! finds it caught up. The comparison needs `synchronous_commit` on (the
//! default) on the primary: with it off, a commit may return before its
//! record is written, ahead of `pg_current_wal_lsn()`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter};
use tasks_domain::OwnerId;
use tasks_ports::RepoError;

use crate::pg::PgConnector;
use crate::{DatabaseLocation, DieselTaskStore, ReadReplicaConfig, StoreConfig};

/// Owners whose last write instant is remembered. Only writes newer than
/// the standby's caught-up instant matter, at most `max_lag` old; an evicted
/// owner costs its reads a trip to the primary, never a stale read.
const WRITERS: usize = 65_536;

/// Primary samples kept while the standby has not replayed them. Older ones
/// are older than any useful `max_lag` at the sampling interval.
const PENDING: usize = 64;

/// Instants as nanoseconds since the replica was set up, plus one, so that
/// they fit atomics and 0 means "never".
struct Clock {
    base: Instant,
}

impl Clock {
    fn tick(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn now(&self) -> u64 {
        self.tick(Instant::now())
    }
}

/// What the sampler and the read path share.
struct State {
    clock: Clock,
    /// The newest instant the standby is known to be caught up as of.
    caught_up: AtomicU64,
    /// The last instant a standby read or probe failed.
    failed: AtomicU64,
}

/// Folds evicted owners' write instants into a watermark (see the module
/// comment).
#[derive(Clone, Default)]
struct Evictions(Arc<AtomicU64>);

impl Lifecycle<String, Arc<AtomicU64>> for Evictions {
    type RequestState = ();

    fn on_evict(&self, (): &mut (), _owner: String, wrote: Arc<AtomicU64>) {
        self.0
            .fetch_max(wrote.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

type Writers = Cache<String, Arc<AtomicU64>, UnitWeighter, DefaultHashBuilder, Evictions>;

/// The standby's own pool (the same size and timeouts as the primary's)
/// and the routing state.
pub(crate) struct Replica {
    pub(crate) store: DieselTaskStore,
    state: Arc<State>,
    writers: Writers,
    evicted: Evictions,
    max_lag: u64,
    sampler: tokio::task::AbortHandle,
}

impl Replica {
    /// Builds the standby's pool and starts the sampler.
    pub(crate) fn start(config: &StoreConfig, read: &ReadReplicaConfig) -> anyhow::Result<Self> {
        let DatabaseLocation::Postgres(primary_url) = &config.location else {
            anyhow::bail!("DATABASE_READ_URL needs a PostgreSQL DATABASE_URL, not SQLite");
        };
        let store = DieselTaskStore::open(
            &StoreConfig {
                location: DatabaseLocation::Postgres(read.url.clone()),
                read_replica: None,
                ..config.clone()
            },
            "DATABASE_READ_URL",
        )?;
        let state = Arc::new(State {
            clock: Clock {
                base: Instant::now(),
            },
            caught_up: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let probe_timeout = config.connect_timeout.max(config.query_timeout);
        let primary = Probe::new(
            PgConnector::new(primary_url, config.connect_timeout)?,
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::text",
            probe_timeout,
        );
        let standby = Probe::new(
            PgConnector::for_var(&read.url, "DATABASE_READ_URL", config.connect_timeout)?,
            "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::text",
            probe_timeout,
        );
        let interval =
            (read.max_lag / 4).clamp(Duration::from_millis(25), Duration::from_millis(500));
        let runtime = tokio::runtime::Handle::try_current()
            .context("the read replica's sampler needs a Tokio runtime")?;
        let sampler = runtime
            .spawn(sample(Arc::clone(&state), primary, standby, interval))
            .abort_handle();
        let evicted = Evictions::default();
        let writers = Cache::with(
            WRITERS,
            u64::try_from(WRITERS).unwrap_or(u64::MAX),
            UnitWeighter,
            DefaultHashBuilder::default(),
            evicted.clone(),
        );
        Ok(Self {
            store,
            state,
            writers,
            evicted,
            max_lag: u64::try_from(read.max_lag.as_nanos()).unwrap_or(u64::MAX),
            sampler,
        })
    }

    /// Whether `owner`'s read may go to the standby now.
    pub(crate) fn serves(&self, owner: &OwnerId) -> bool {
        let caught_up = self.state.caught_up.load(Ordering::SeqCst);
        if caught_up == 0 || caught_up <= self.state.failed.load(Ordering::SeqCst) {
            return false;
        }
        if self.state.clock.now().saturating_sub(caught_up) > self.max_lag {
            return false;
        }
        let wrote = self.writers.get(owner.as_str()).map_or_else(
            || self.evicted.0.load(Ordering::SeqCst),
            |at| at.load(Ordering::SeqCst),
        );
        wrote < caught_up
    }

    /// Records that a write of `owner` has just ended, whatever its outcome
    /// (a failed write may still have committed).
    pub(crate) fn wrote(&self, owner: &OwnerId) {
        let now = self.state.clock.now();
        let cell = self
            .writers
            .get_or_insert_with(owner.as_str(), || {
                Ok::<_, std::convert::Infallible>(Arc::new(AtomicU64::new(0)))
            })
            .unwrap_or_else(|never| match never {});
        cell.fetch_max(now, Ordering::SeqCst);
        // Evicted between the lookup and the update: the eviction may have
        // read the cell before this write, so the watermark takes it.
        if !self
            .writers
            .get(owner.as_str())
            .is_some_and(|current| Arc::ptr_eq(&current, &cell))
        {
            self.evicted.0.fetch_max(now, Ordering::SeqCst);
        }
    }

    /// A standby read failed: no reads go there until a later sample.
    pub(crate) fn failed(&self, error: &RepoError) {
        let now = self.state.clock.now();
        let before = self.state.failed.swap(now, Ordering::SeqCst);
        if before < self.state.caught_up.load(Ordering::SeqCst) {
            let mut detail = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                detail.push_str(": ");
                detail.push_str(&cause.to_string());
                source = cause.source();
            }
            tracing::warn!(
                error = detail,
                "a read from the replica failed; reading from the primary until the replica answers again"
            );
        }
    }

    pub(crate) fn close(&self) {
        self.sampler.abort();
        self.store.close();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

/// One probe connection, opened on demand and dropped on any failure.
struct Probe {
    connector: PgConnector,
    client: Option<tokio_postgres::Client>,
    sql: &'static str,
    timeout: Duration,
}

impl Probe {
    const fn new(connector: PgConnector, sql: &'static str, timeout: Duration) -> Self {
        Self {
            connector,
            client: None,
            sql,
            timeout,
        }
    }

    /// The LSN, as a byte position; `None` when the server has none (a
    /// server not in recovery has no replay position).
    async fn lsn(&mut self) -> anyhow::Result<Option<u64>> {
        let result = tokio::time::timeout(self.timeout, self.query()).await;
        let result = result
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.timeout))
            .and_then(|r| r);
        if result.is_err() {
            self.client = None;
        }
        result
    }

    async fn query(&mut self) -> anyhow::Result<Option<u64>> {
        if self
            .client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            self.client = Some(self.connector.client().await.context("connecting")?);
        }
        let Some(client) = &self.client else {
            return Ok(None);
        };
        // The simple protocol prepares nothing: it works through a
        // transaction-pooling PgBouncer as well.
        let messages = client.simple_query(self.sql).await.context("querying")?;
        let value = messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0)),
            _ => None,
        });
        value
            .flatten()
            .map(|text| text.parse::<u64>().context("parsing an LSN"))
            .transpose()
    }
}

/// The sampler (see the module comment). It runs until aborted.
async fn sample(state: Arc<State>, mut primary: Probe, mut standby: Probe, interval: Duration) {
    let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = false;
    loop {
        ticker.tick().await;
        let at = state.clock.now();
        match primary.lsn().await {
            Ok(Some(lsn)) => {
                pending.push_back((at, lsn));
                if pending.len() > PENDING {
                    pending.pop_front();
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(
                error = format!("{e:#}"),
                "sampling the primary's WAL position failed"
            ),
        }
        let replayed = match standby.lsn().await {
            Ok(Some(lsn)) => lsn,
            outcome => {
                state.failed.fetch_max(state.clock.now(), Ordering::SeqCst);
                if serving {
                    serving = false;
                    match outcome {
                        Err(e) => tracing::warn!(
                            error = format!("{e:#}"),
                            "the read replica is unreachable; reading from the primary"
                        ),
                        _ => tracing::warn!(
                            "the read replica is not in recovery (not a standby); reading from the primary"
                        ),
                    }
                }
                continue;
            }
        };
        let mut caught_up = None;
        while let Some(&(at, lsn)) = pending.front() {
            if lsn > replayed {
                break;
            }
            caught_up = Some(at);
            pending.pop_front();
        }
        if let Some(at) = caught_up {
            state.caught_up.fetch_max(at, Ordering::SeqCst);
            if !serving && at > state.failed.load(Ordering::SeqCst) {
                serving = true;
                tracing::info!("the read replica is caught up and serves reads");
            }
        }
    }
}
