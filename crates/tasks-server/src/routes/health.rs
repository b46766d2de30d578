//! Liveness and readiness probes. Neither needs a token.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::dto::HealthResponse;
use crate::error::{ErrorBody, envelope};
use crate::state::AppState;

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "Alive", body = HealthResponse))
)]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(HealthResponse {
        status: "ok".into(),
        database: None,
    })
}

/// Readiness: the database answers.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = HealthResponse),
        (status = 503, description = "The database is unreachable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.repo.ping().await {
        Ok(()) => HttpResponse::Ok().json(HealthResponse {
            status: "ready".into(),
            database: Some("ok".into()),
        }),
        Err(e) => {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::new(e)),
                "readiness check failed"
            );
            envelope(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "The database is unreachable",
            )
        }
    }
}
