#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message"
)]

//! HTTP tests: each test starts the real application on a fresh database,
//! once on PostgreSQL (TEST_DATABASE_URL) and once on an SQLite file, and talks
//! to it over real HTTP.

mod helpers;

mod auth;
mod bounded;
mod changes;
mod conditional;
mod cors;
mod errors;
mod events;
mod frontends;
mod idempotency;
mod isolation;
mod jwt_attacks;
mod limits;
mod operations;
mod outage;
mod sessions;
mod shared_limits;
mod tasks;
mod validation;
