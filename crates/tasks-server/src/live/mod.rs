//! Live updates: `GET /api/tasks/events` streams the caller's own changes as
//! Server-Sent Events.
//!
//! The data always comes from the change log (`TaskRepository::changes`);
//! what travels between writers and streams is only a *poke*, "this user
//! changed", which makes the user's streams read the log again from their
//! cursor. A lost or duplicated poke therefore never loses or repeats a
//! change, and pokes coalesce: a stream that is busy when ten pokes arrive
//! reads the log once.
//!
//! - [`hub`]: the in-process fan-out, keyed by owner, with the stream caps.
//! - [`Notifying`]: pokes the hub after every successful write through
//!   this instance (on SQLite, one instance per file, that is every write).
//! - [`listener`]: on PostgreSQL, one dedicated `LISTEN tasks_changed`
//!   connection per instance turns the triggers' `pg_notify` into pokes, so
//!   a write through any instance reaches the streams of every instance.
//! - [`watch`]: on PostgreSQL the triggers notify only for users someone
//!   watches; a stream registers its user, and each instance renews its
//!   streams' users while they are open.
//! - [`stream`]: one subscriber: replay from `Last-Event-ID`, then live,
//!   heartbeats, credential expiry and re-verification, shutdown.

pub mod hub;
pub mod listener;
mod notifying;
pub mod stream;
pub mod watch;

pub use hub::{Hub, Refused, Subscription};
pub use notifying::Notifying;
