//! The in-process fan-out of pokes to the open event streams.
//!
//! One `tokio::sync::watch` channel per owner with at least one open stream:
//! a poke bumps the owner's counter, and every stream of that owner wakes
//! once, however many pokes arrived meanwhile. A watch channel holds one
//! value, never a queue, so no subscriber can make the hub buffer anything:
//! a slow stream only reads the log later (and the log is read one page at
//! a time, as the client takes it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tasks_domain::OwnerId;
use tokio::sync::watch;

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `SSE_MAX_STREAMS` streams are open on this instance.
    Total(usize),
    /// `SSE_MAX_STREAMS_PER_USER` streams of this user are open here.
    PerUser(usize),
}

struct UserEntry {
    owner: OwnerId,
    pokes: watch::Sender<u64>,
    streams: usize,
}

#[derive(Default)]
struct Streams {
    users: HashMap<String, UserEntry>,
    total: usize,
}

/// Open streams by owner, their caps, and the two instance-wide signals:
/// "read the log again" (after the listener reconnects) and "shut down".
pub struct Hub {
    streams: Mutex<Streams>,
    max_total: usize,
    max_per_user: usize,
    reconcile: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

impl Hub {
    #[must_use]
    pub fn new(max_total: usize, max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::new(Streams::default()),
            max_total,
            max_per_user,
            reconcile: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        // The critical sections cannot panic halfway through an update.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers one stream of `owner`, within the caps.
    ///
    /// # Errors
    /// A cap is reached, or the service is shutting down (as `Total`).
    pub fn subscribe(self: &Arc<Self>, owner: &OwnerId) -> Result<Subscription, Refused> {
        if *self.shutdown.borrow() {
            return Err(Refused::Total(self.max_total));
        }
        let mut streams = self.lock();
        if streams.total >= self.max_total {
            return Err(Refused::Total(self.max_total));
        }
        let entry = streams
            .users
            .entry(owner.as_str().to_owned())
            .or_insert_with(|| UserEntry {
                owner: owner.clone(),
                pokes: watch::Sender::new(0),
                streams: 0,
            });
        if entry.streams >= self.max_per_user {
            return Err(Refused::PerUser(self.max_per_user));
        }
        entry.streams += 1;
        let pokes = entry.pokes.subscribe();
        streams.total += 1;
        record_open(streams.total);
        drop(streams);
        Ok(Subscription {
            hub: Arc::clone(self),
            owner: owner.as_str().to_owned(),
            pokes,
            reconcile: self.reconcile.subscribe(),
            shutdown: self.shutdown.subscribe(),
        })
    }

    /// `owner` changed: wakes that owner's streams on this instance. Cheap
    /// and a no-op when the owner has none.
    pub fn poke(&self, owner: &str) {
        if let Some(entry) = self.lock().users.get(owner) {
            entry.pokes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Every stream reads the log again (after pokes may have been lost,
    /// e.g. while the listener was reconnecting).
    pub fn reconcile_all(&self) {
        self.reconcile.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Ends every stream and refuses new ones (graceful shutdown).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether [`Hub::shutdown`] was called.
    #[must_use]
    pub fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that turns `true` at shutdown.
    #[must_use]
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The owners with at least one open stream here (the users this
    /// instance watches), sorted.
    #[must_use]
    pub fn owners(&self) -> Vec<OwnerId> {
        let mut owners: Vec<OwnerId> = self
            .lock()
            .users
            .values()
            .map(|entry| entry.owner.clone())
            .collect();
        owners.sort_unstable();
        owners
    }

    /// Streams open on this instance.
    #[must_use]
    pub fn open_streams(&self) -> usize {
        self.lock().total
    }
}

fn record_open(total: usize) {
    metrics::gauge!("sse_open_streams").set(total as f64);
}

/// One open stream's registration: the signals it waits on. Dropping it
/// (the stream ended or the client went away) frees its place in the caps.
pub struct Subscription {
    hub: Arc<Hub>,
    owner: String,
    /// Bumped by each poke of this owner.
    pub pokes: watch::Receiver<u64>,
    /// Bumped when every stream must read the log again.
    pub reconcile: watch::Receiver<u64>,
    /// `true` at shutdown.
    pub shutdown: watch::Receiver<bool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut streams = self.hub.lock();
        streams.total -= 1;
        if let Some(entry) = streams.users.get_mut(&self.owner) {
            entry.streams -= 1;
            if entry.streams == 0 {
                streams.users.remove(&self.owner);
            }
        }
        record_open(streams.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(s: &str) -> OwnerId {
        OwnerId::parse(s).unwrap()
    }

    #[test]
    fn caps_and_release() {
        let hub = Hub::new(3, 2);
        let a1 = hub.subscribe(&owner("a")).unwrap();
        let _a2 = hub.subscribe(&owner("a")).unwrap();
        assert_eq!(hub.subscribe(&owner("a")).err(), Some(Refused::PerUser(2)));
        let _b = hub.subscribe(&owner("b")).unwrap();
        assert_eq!(hub.subscribe(&owner("c")).err(), Some(Refused::Total(3)));
        assert_eq!(hub.owners(), [owner("a"), owner("b")]);
        drop(a1);
        assert_eq!(hub.open_streams(), 2);
        let _a3 = hub.subscribe(&owner("a")).unwrap();
        hub.shutdown();
        drop(_b);
        assert!(
            hub.subscribe(&owner("d")).is_err(),
            "refused after shutdown"
        );
    }

    #[tokio::test]
    async fn pokes_reach_only_their_owner_and_coalesce() {
        let hub = Hub::new(10, 10);
        let mut a = hub.subscribe(&owner("a")).unwrap();
        let mut b = hub.subscribe(&owner("b")).unwrap();
        for _ in 0..5 {
            hub.poke("a");
        }
        hub.poke("nobody");
        assert!(a.pokes.has_changed().unwrap());
        a.pokes.changed().await.unwrap();
        assert!(!a.pokes.has_changed().unwrap(), "five pokes, one wake-up");
        assert!(!b.pokes.has_changed().unwrap());
        hub.reconcile_all();
        b.reconcile.changed().await.unwrap();
        drop(a);
        drop(b);
        assert!(hub.lock().users.is_empty(), "no entry outlives its streams");
        assert!(hub.owners().is_empty());
    }
}
