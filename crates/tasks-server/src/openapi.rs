//! The OpenAPI document, generated from the handlers and DTOs. The committed
//! `contracts/openapi.yaml` must equal it (see tests/contract.rs).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto::{CreateTaskRequest, HealthResponse, StatusParam, TaskResponse, UpdateTaskRequest};
use crate::error::ErrorBody;
use crate::routes::{health, tasks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tasks API",
        description = "Per-user to-do lists for a Next.js + Better Auth frontend. Every /api route needs `Authorization: Bearer <token>`; a task is only ever visible to the user whose token created it. Errors are JSON: `{detail, status_code, error_type}`.",
        license(name = "MIT"),
    ),
    paths(
        tasks::list_tasks,
        tasks::create_task,
        tasks::get_task,
        tasks::update_task,
        tasks::delete_task,
        tasks::toggle_task,
        health::health,
        health::ready,
    ),
    components(schemas(TaskResponse, CreateTaskRequest, UpdateTaskRequest, ErrorBody, HealthResponse, StatusParam)),
    modifiers(&BearerAuth),
    tags(
        (name = "tasks", description = "The caller's tasks"),
        (name = "operations", description = "Probes for orchestrators"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_auth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A Better Auth JWT (from authClient.token()), an HS256 JWT signed with JWT_SECRET, or a Better Auth session token when enabled",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as YAML, exactly as committed in `contracts/openapi.yaml`.
///
/// # Errors
/// Serialisation failed (it does not for this document).
pub fn yaml() -> anyhow::Result<String> {
    let mut doc = ApiDoc::openapi();
    // The version is the contract's, not the crate's: keep it stable.
    doc.info.version = "1.0.0".into();
    Ok(doc.to_yaml()?)
}

/// The document served at `/openapi.json`.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = "1.0.0".into();
    doc
}
