//! Routes registered once: a handler is added together with the operation
//! its `#[utoipa::path]` describes, and that operation's method and path are
//! what the router uses. The router and the OpenAPI document are built from
//! the same list (through `utoipa-actix-web`), so an endpoint can neither be
//! served undocumented nor documented unserved.
//!
//! `utoipa-actix-web` collects operations from handlers registered with
//! actix's `#[get(...)]`-style macros, which make one resource per method:
//! a known path with an unknown method would then fall through to the 404
//! default instead of actix's 405. [`Routes`] keeps one resource per path
//! with a route per method, and implements the crate's `OpenApiFactory`
//! itself.

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::Method;
use actix_web::{FromRequest, Handler, Responder, Route, web};
use utoipa::openapi::HttpMethod;
use utoipa::openapi::path::Paths;
use utoipa_actix_web::OpenApiFactory;

/// Handlers and their documented operations, grouped by path.
pub struct Routes {
    /// Also match each path with a trailing slash (`/api/tasks/`), as the
    /// plan's FastAPI app did.
    trailing_slash: bool,
    resources: Vec<(String, Vec<Route>)>,
    docs: Vec<Box<dyn OpenApiFactory>>,
}

impl Routes {
    /// Routes matched exactly as documented.
    #[must_use]
    pub fn exact() -> Self {
        Self {
            trailing_slash: false,
            resources: Vec::new(),
            docs: Vec::new(),
        }
    }

    /// Routes that also match with one trailing slash. actix's
    /// `NormalizePath` would do this for the whole app, but it also trims
    /// `/docs/`, where Swagger UI's relative asset links need the slash.
    #[must_use]
    pub fn with_trailing_slash() -> Self {
        Self {
            trailing_slash: true,
            ..Self::exact()
        }
    }

    /// Serves `handler` at the method(s) and path `Doc` (the type
    /// `#[utoipa::path]` generates, `__path_<handler>`) documents.
    #[must_use]
    pub fn add<Doc, F, Args>(mut self, doc: Doc, handler: F) -> Self
    where
        Doc: utoipa::Path + OpenApiFactory + 'static,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let path = Doc::path();
        let routes = Doc::methods()
            .into_iter()
            .map(|method| web::method(actix_method(&method)).to(handler.clone()));
        match self.resources.iter_mut().find(|(p, _)| *p == path) {
            Some((_, existing)) => existing.extend(routes),
            None => self.resources.push((path, routes.collect())),
        }
        self.docs.push(Box::new(doc));
        self
    }
}

fn actix_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

impl HttpServiceFactory for Routes {
    fn register(self, config: &mut AppService) {
        for (path, routes) in self.resources {
            let patterns = if self.trailing_slash {
                vec![format!("{path}/"), path]
            } else {
                vec![path]
            };
            let resource = routes
                .into_iter()
                .fold(web::resource(patterns), |resource, route| {
                    resource.route(route)
                });
            resource.register(config);
        }
    }
}

impl OpenApiFactory for Routes {
    fn paths(&self) -> Paths {
        let mut paths = Paths::new();
        for doc in &self.docs {
            paths.merge(doc.paths());
        }
        paths
    }

    fn schemas(
        &self,
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        for doc in &self.docs {
            doc.schemas(schemas);
        }
    }
}
