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
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn, PathItem, Paths};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Ref;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{HttpMethod, Required};
use utoipa_actix_web::OpenApiFactory;

/// Handlers and their documented operations, grouped by path.
pub struct Routes {
    /// Also match each path with a trailing slash (`/api/tasks/`), as the
    /// plan's FastAPI app did.
    trailing_slash: bool,
    /// `(from, to)`: every route under `from` is also served under `to`.
    aliases: Vec<(&'static str, &'static str)>,
    resources: Vec<(String, Vec<Route>)>,
    docs: Vec<Box<dyn OpenApiFactory>>,
}

impl Routes {
    /// Routes matched exactly as documented.
    #[must_use]
    pub fn exact() -> Self {
        Self {
            trailing_slash: false,
            aliases: Vec::new(),
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

    /// Serves every route added after this call whose path starts with
    /// `from` under `to` as well, with the same handler, and documents the
    /// copy as an alias. `to` may add path parameters (`/api/{user_id}/tasks`);
    /// the handlers' extractors decide what they mean.
    #[must_use]
    pub fn alias(mut self, from: &'static str, to: &'static str) -> Self {
        self.aliases.push((from, to));
        self
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
        let paths =
            std::iter::once(path.clone()).chain(self.aliases.iter().filter_map(|(from, to)| {
                path.strip_prefix(from).map(|rest| format!("{to}{rest}"))
            }));
        for path in paths.collect::<Vec<_>>() {
            let routes = Doc::methods()
                .into_iter()
                .map(|method| web::method(actix_method(&method)).to(handler.clone()));
            match self.resources.iter_mut().find(|(p, _)| *p == path) {
                Some((_, existing)) => existing.extend(routes),
                None => self.resources.push((path, routes.collect())),
            }
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
            let own = doc.paths();
            for (from, to) in &self.aliases {
                for (path, item) in &own.paths {
                    if let Some(rest) = path.strip_prefix(from) {
                        let aliased = format!("{to}{rest}");
                        paths.merge(
                            Paths::builder()
                                .path(aliased, alias_item(item.clone(), path))
                                .build(),
                        );
                    }
                }
            }
            paths.merge(own);
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

/// The documentation of an alias: the canonical operation with the
/// `user_id` path parameter, its own operation id, and a note saying what it
/// is an alias of.
fn alias_item(mut item: PathItem, canonical: &str) -> PathItem {
    let operations = [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("PATCH", &mut item.patch),
    ];
    for (method, operation) in operations {
        let Some(operation) = operation.as_mut() else {
            continue;
        };
        operation.operation_id = operation
            .operation_id
            .take()
            .map(|id| format!("{id}_by_user"));
        operation.summary = operation
            .summary
            .take()
            .map(|summary| format!("{summary} (alias)"));
        operation.description = Some(format!(
            "Alias of `{method} {canonical}`, for frontends that put the user id in the path. \
             `user_id` must equal the caller's token subject; any other value gets the 404 \
             of a task that does not exist."
        ));
        let user_id = ParameterBuilder::new()
            .name("user_id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("The caller's user id (the token's `sub`)"))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build();
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .insert(0, user_id);
        operation
            .responses
            .responses
            .entry("404".to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(
                        "`user_id` is not the caller's: the 404 of a task that does not exist",
                    )
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
    item
}
