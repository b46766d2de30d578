//! The OpenAPI document: what is not an operation (info, security scheme,
//! tags) is declared here; the operations are added by `routes::register`
//! from the same list that builds the router. The committed
//! `contracts/openapi.yaml` must equal it
//! (`tests/api/operations.rs::openapi_contract_is_up_to_date`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use actix_web::App;
use utoipa_actix_web::AppExt as _;

use crate::dto::{
    ChangesResponse, CreateTaskRequest, HealthResponse, StatusParam, TaskResponse,
    UpdateTaskRequest,
};
use crate::error::ErrorBody;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tasks API",
        description = "Per-user to-do lists for a Next.js + Better Auth frontend. Every /api route needs `Authorization: Bearer <token>`; a task is only ever visible to the user whose token created it. Errors are JSON: `{detail, status_code, error_type}`.",
        license(name = "MIT"),
        // The contract's version, not the crate's: it changes when the API does.
        version = "1.0.0",
    ),
    components(schemas(TaskResponse, CreateTaskRequest, UpdateTaskRequest, ErrorBody, HealthResponse, StatusParam, ChangesResponse)),
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

/// Everything but the operations, which `routes::register` adds.
#[must_use]
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole document, built the way the server builds it (an app that is
/// never run), for `tasks-server openapi` and the contract test.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    let app = App::new().into_utoipa_app().openapi(base());
    routes::register(app).split_for_parts().1
}

/// The document as YAML, exactly as committed in `contracts/openapi.yaml`.
///
/// # Errors
/// Serialisation failed (it does not for this document).
pub fn yaml() -> anyhow::Result<String> {
    Ok(document().to_yaml()?)
}
