//! Caller identity. A caller shows a static bearer token or, in Kubernetes, a projected
//! ServiceAccount token; either way the answer is the caller's *name*. Idempotency keys
//! and the ledger are scoped to that name, never to a credential, so a caller may hold
//! several credentials at once (a rotation) without anything being charged twice.

mod jwks;
mod subjects;
mod tokens;
mod workload;

use std::net::SocketAddr;

pub use subjects::CallerSubjects;
pub use tokens::{CallerTokens, DEV_TOKEN};
pub use workload::{WorkloadConfig, WorkloadError, WorkloadIdentity};

/// Why a bearer token was refused; for the log, never for the client.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no configured token matches")]
    UnknownToken,
    #[error("service account token refused: {0}")]
    ServiceAccount(String),
    /// Nothing to check a ServiceAccount token against yet: answered 503, not 401.
    #[error("service account token not checked: {0}")]
    KeysUnavailable(String),
}

/// Every way a caller may prove who it is, as configured.
pub struct Authenticator {
    tokens: Option<CallerTokens>,
    workload: Option<WorkloadIdentity>,
}

impl Authenticator {
    pub fn new(tokens: Option<CallerTokens>, workload: Option<WorkloadIdentity>) -> Self {
        Authenticator { tokens, workload }
    }

    /// The caller's name. Static tokens are tried first (cheap, in constant time); anything
    /// shaped like a JWT is then checked as a ServiceAccount token when that is configured.
    pub async fn authenticate(&self, bearer: &str) -> Result<String, Refused> {
        if let Some(name) = self.tokens.as_ref().and_then(|t| t.authenticate(bearer)) {
            return Ok(name.to_owned());
        }
        match &self.workload {
            Some(workload) if bearer.split('.').count() == 3 => {
                workload.authenticate(bearer).await.map_err(|e| match e {
                    WorkloadError::Invalid(reason) => Refused::ServiceAccount(reason),
                    WorkloadError::KeysUnavailable(reason) => Refused::KeysUnavailable(reason),
                })
            }
            _ => Err(Refused::UnknownToken),
        }
    }
}

/// The development token is public, so it is accepted only where nobody else can reach
/// the port: on a loopback `LISTEN_ADDR`.
pub fn dev_token_allowed(listen_addr: SocketAddr) -> bool {
    listen_addr.ip().is_loopback()
}

/// Caller names are what keys and the ledger are scoped to: short and plain.
fn check_caller_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "caller name {name:?} must be 1 to 64 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// Entries of a list setting: separated by commas or line breaks (a file edited by hand).
fn entries(spec: &str) -> impl Iterator<Item = &str> {
    spec.split([',', '\n', '\r'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
}
