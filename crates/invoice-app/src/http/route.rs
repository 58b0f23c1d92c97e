//! What a row of the route table says: one operation of the API port. The router, the
//! metrics' route labels, the OpenAPI document and the authentication tests all read the
//! table ([`super::ROUTES`]), so an operation is added in one place.

use std::fmt;

use crate::auth::Scope;

use super::doc::Doc;

/// An operation: a method on a path, who may call it, its handler and its description.
pub struct Route {
    pub method: Method,
    /// The actix pattern, the OpenAPI path, and the `route` label of the request metrics
    /// (actix's `match_pattern`).
    pub path: &'static str,
    pub access: Access,
    /// Counted by the API availability objective (`docs/slo.md`): its `5xx` series are
    /// exported from 0 before the first request.
    pub slo: bool,
    /// Puts the handler on the actix route: `|r| r.to(handler)`.
    pub handler: fn(actix_web::Route) -> actix_web::Route,
    /// What it takes and answers, beyond what this row says (see [`Doc`]).
    pub doc: fn() -> Doc,
}

/// The methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Answers `HEAD` too (actix sends HEAD answers without their body).
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }

    /// What a client may send: `GET` with its `HEAD`.
    pub fn sent_as(self) -> &'static [&'static str] {
        match self {
            Method::Get => &["GET", "HEAD"],
            Method::Post => &["POST"],
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: it holds no data (health, readiness, the API's description).
    Open,
    /// A credential with this scope, checked before the body is read.
    Needs(Scope),
}

impl Route {
    /// The `method` and `route` labels of its request metrics.
    pub fn labels(&self) -> (&'static str, &'static str) {
        (self.method.as_str(), self.path)
    }

    pub fn scope(&self) -> Option<Scope> {
        match self.access {
            Access::Open => None,
            Access::Needs(scope) => Some(scope),
        }
    }
}

/// The `Allow` header of `path`: the methods its routes answer, in table order.
pub fn allow(routes: &[Route], path: &str) -> String {
    routes
        .iter()
        .filter(|r| r.path == path)
        .flat_map(|r| r.method.sent_as())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// The paths of `routes`, each once, in table order.
pub fn paths(routes: &[Route]) -> Vec<&'static str> {
    let mut paths: Vec<&'static str> = Vec::new();
    for route in routes {
        if !paths.contains(&route.path) {
            paths.push(route.path);
        }
    }
    paths
}
