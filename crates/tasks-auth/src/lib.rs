//! Adapters of the [`TokenVerifier`](tasks_ports::TokenVerifier) port.
//!
//! - [`Hs256Verifier`]: JWTs signed with a shared secret (`JWT_SECRET`), for
//!   frontends that mint their own token, and for local development.
//! - [`JwksVerifier`]: Better Auth `jwt()` tokens (EdDSA by default), checked
//!   with the keys its JWKS endpoint publishes, cached and refetched on an
//!   unknown `kid`.
//! - [`SessionVerifier`]: Better Auth opaque session tokens (`bearer()`),
//!   looked up in Better Auth's `session` table.
//! - [`CompositeVerifier`] / [`build_verifier`]: routes each token to the one
//!   verifier that can judge it and caches successful answers.
//!
//! Every JWT verifier takes the algorithm from configuration or from the key,
//! never from the token alone, requires `exp`, and returns the `sub` claim as
//! the caller's [`OwnerId`](tasks_domain::OwnerId). Rejection messages are
//! safe to return to clients: they name what was wrong, never the token or a
//! key.

mod cache;
mod claims;
mod composite;
mod hs256;
mod jwks;
mod session;

pub use claims::{ClaimRules, MAX_TOKEN_BYTES, Verified};
pub use composite::{AuthConfig, CompositeVerifier, build_composite, build_verifier};
pub use hs256::{Hs256Verifier, issue_hs256};
pub use jwks::{JwksConfig, JwksVerifier, is_plain_http_to_remote_host, origin_of};
pub use session::{DiscoveryError, SessionConfig, SessionSchema, SessionVerifier};
