//! One declaration per endpoint: its handler, whose OpenAPI description names the method and the
//! path, and who may call it. The router, the access table and the document's security
//! requirements are all built from these declarations.

use axum::http::Method;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::SecurityRequirement;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::access::{API_PREFIX, Access, Rule};
use crate::state::AppState;

/// An endpoint of the API.
pub(super) struct Endpoint {
    access: Access,
    /// `|| routes!(handler)`: the handler and its OpenAPI description.
    route: fn() -> UtoipaMethodRouter<AppState>,
}

impl Endpoint {
    pub(super) const fn new(access: Access, route: fn() -> UtoipaMethodRouter<AppState>) -> Self {
        Self { access, route }
    }

    /// The handler, its description saying that it needs a bearer token unless it is public.
    fn described(&self) -> UtoipaMethodRouter<AppState> {
        let (schemas, mut paths, handler) = (self.route)();
        if self.access.needs_token() {
            for item in paths.paths.values_mut() {
                for (_, operation) in operations(item) {
                    operation.security = Some(vec![SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                }
            }
        }
        (schemas, paths, handler)
    }

    /// The access rule of each operation the handler describes.
    fn rules(&self) -> Vec<Rule> {
        let (_, mut paths, _) = (self.route)();
        let mut rules = Vec::new();
        for (path, item) in &mut paths.paths {
            let path = path.strip_prefix(API_PREFIX).unwrap_or(path);
            for (method, _) in operations(item) {
                rules.push((method, path.to_owned(), self.access));
            }
        }
        rules
    }
}

/// The operations of a path item with their methods.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
}

/// Every endpoint, with its description, on `router`.
pub(super) fn described(
    router: OpenApiRouter<AppState>,
    endpoints: impl Iterator<Item = &'static Endpoint>,
) -> OpenApiRouter<AppState> {
    endpoints.fold(router, |router, endpoint| {
        router.routes(endpoint.described())
    })
}

/// The access rules of `endpoints`.
pub(super) fn rules(endpoints: impl Iterator<Item = &'static Endpoint>) -> Vec<Rule> {
    endpoints.flat_map(Endpoint::rules).collect()
}
