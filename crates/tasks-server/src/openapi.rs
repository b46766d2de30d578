//! The OpenAPI document: what is not an operation (info, security scheme,
//! tags) is declared here; the operations are added by `routes::register`
//! from the same list that builds the router. The committed
//! `contracts/openapi.yaml` must equal it
//! (`tests/api/operations.rs::openapi_contract_is_up_to_date`).
//!
//! `contracts/tasks.schema.json` and `contracts/errors.schema.json` are the
//! JSON Schemas (2020-12, the dialect of OpenAPI 3.1) of `TaskResponse` and
//! `ErrorBody`, cut from this same document ([`json_schema`]), and tested the
//! same way.

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

/// The JSON Schema contracts: (the `tasks-server schema` argument and file
/// stem in `contracts/`, the component they publish).
pub const JSON_SCHEMAS: [(&str, &str); 2] = [("tasks", "TaskResponse"), ("errors", "ErrorBody")];

/// The JSON Schema of one component of the document (`TaskResponse`,
/// `ErrorBody`), exactly as committed in `contracts/<name>.schema.json`: the
/// component's schema as the OpenAPI document has it, with `$schema` and
/// `title` added and OpenAPI's `example` turned into JSON Schema's
/// `examples`.
///
/// # Errors
/// No such component (or it is a reference).
pub fn json_schema(component: &str) -> anyhow::Result<String> {
    let document = document();
    let schema = document
        .components
        .as_ref()
        .and_then(|c| c.schemas.get(component))
        .ok_or_else(|| anyhow::anyhow!("no schema named {component} in the OpenAPI document"))?;
    let mut body = serde_json::to_value(schema)?;
    examples(&mut body);
    let serde_json::Value::Object(body) = body else {
        anyhow::bail!("the schema of {component} is not an object");
    };
    let mut out = serde_json::Map::new();
    out.insert(
        "$schema".into(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    out.insert("title".into(), component.into());
    out.extend(body);
    Ok(serde_json::to_string_pretty(&out)? + "\n")
}

/// `example: x` (OpenAPI) to `examples: [x]` (JSON Schema), at every level.
fn examples(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(example) = map.remove("example") {
                map.insert("examples".into(), serde_json::Value::Array(vec![example]));
            }
            map.values_mut().for_each(examples);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(examples),
        _ => {}
    }
}
