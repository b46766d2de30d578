//! Adapters of the [`TokenVerifier`](tasks_ports::TokenVerifier) port.
//!
//! - [`Hs256Verifier`]: JWTs signed with a shared secret (`JWT_SECRET`), for
//!   frontends that mint their own token, and for local development.
//!
//! Every verifier pins its algorithm from configuration, never from the token,
//! requires `exp`, and returns the `sub` claim as the caller's
//! [`OwnerId`](tasks_domain::OwnerId). Rejection messages are safe to return to
//! clients: they name what was wrong, never the token or a key.

mod claims;
mod hs256;

pub use claims::{ClaimRules, MAX_TOKEN_BYTES};
pub use hs256::{Hs256Verifier, issue_hs256};
