//! The URL map: every endpoint of the service, in one list.
//!
//! [`register`] adds the documented endpoints to an app and to its OpenAPI
//! document at once; [`docs`] serves that document and Swagger UI; anything
//! else gets the 404 envelope. See docs/ARCHITECTURE.md, "Adding an
//! endpoint".

pub mod changes;
pub mod events;
pub mod health;
pub mod listing;
mod registry;
pub mod responses;
pub mod tasks;

use actix_web::dev::{ServiceFactory, ServiceRequest};
use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa_actix_web::UtoipaApp;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

pub use registry::Routes;

use crate::error::ApiError;

/// Adds every documented endpoint: the router and the OpenAPI document come
/// from this one list.
pub fn register<T>(app: UtoipaApp<T>) -> UtoipaApp<T>
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = actix_web::Error, InitError = ()>,
{
    app.service(
        // The hackathon specification these frontends come from puts the
        // user id in the path; `Caller` requires it to be the caller's.
        Routes::with_trailing_slash()
            .alias("/api/tasks", "/api/{user_id}/tasks")
            .add(tasks::__path_list_tasks, tasks::list_tasks)
            .add(tasks::__path_create_task, tasks::create_task)
            // Before `/api/tasks/{id}`: actix matches in order.
            .add(changes::__path_list_changes, changes::list_changes)
            .add(events::__path_task_events, events::task_events)
            .add(tasks::__path_get_task, tasks::get_task)
            .add(tasks::__path_update_task, tasks::update_task)
            .add(tasks::__path_patch_task, tasks::patch_task)
            .add(tasks::__path_delete_task, tasks::delete_task)
            .add(tasks::__path_toggle_task, tasks::toggle_task),
    )
    .service(
        Routes::exact()
            .add(health::__path_health, health::health)
            .add(health::__path_ready, health::ready),
    )
}

/// `/openapi.json`, Swagger UI at `/docs/` (token kept across reloads only
/// outside production), and the 404 envelope for everything else.
pub fn docs(cfg: &mut web::ServiceConfig, document: utoipa::openapi::OpenApi, production: bool) {
    cfg.service(web::resource("/docs").route(web::get().to(|| async {
        HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, "/docs/"))
            .finish()
    })))
    .service(
        SwaggerUi::new("/docs/{_:.*}")
            .url("/openapi.json", document)
            .config(
                SwaggerConfig::new(["/openapi.json"])
                    .validator_url("none")
                    .persist_authorization(!production)
                    .try_it_out_enabled(true),
            ),
    )
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::NotFound("Not found".into()))
    }));
}
