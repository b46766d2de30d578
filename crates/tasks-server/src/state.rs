//! What every handler can reach. A leaf module: handlers and extractors
//! depend on it, and it depends on nothing of theirs.

use std::sync::Arc;

use tasks_ports::{TaskRepository, TokenVerifier};

use crate::cookie::CookieAuth;
use crate::live::stream::Live;
use crate::ratelimit::UserRateLimit;

/// The two ports and the per-request limits, nothing else.
pub struct AppState {
    pub repo: Arc<dyn TaskRepository>,
    pub verifier: Arc<dyn TokenVerifier>,
    /// Per-user request budget, when `RATE_LIMIT_PER_MINUTE` is set.
    pub rate_limiter: Option<Arc<UserRateLimit>>,
    /// Most tasks one user may hold.
    pub max_tasks_per_user: u32,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_key_ttl: std::time::Duration,
    /// Most live `Idempotency-Key`s one user may hold.
    pub idempotency_max_keys_per_user: u32,
    /// Better Auth's session cookie is accepted (`AUTH_COOKIE=true`).
    pub cookie_auth: Option<CookieAuth>,
    /// Live updates: the stream hub and its intervals.
    pub live: Live,
}
