//! Integration tests of the verifiers: one binary, real HTTP and PostgreSQL.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a failure should panic"
)]

mod composite;
mod jwks;
mod session;
mod support;
