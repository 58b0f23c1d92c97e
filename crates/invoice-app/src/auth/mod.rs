//! Who may call the API, and what they may do. A bearer credential is either a static API
//! key (checked first: its digest is compared with the configured ones) or an OAuth2/OIDC
//! JWT validated against the issuer's published keys. On a loopback address with neither
//! configured, the well-known development key stands in. Every credential becomes a
//! [`Principal`] with scopes; `http::auth` asks each operation's scope of it.

mod api_keys;
mod jwks;
mod jwt;
mod settings;

use std::fmt;
use std::net::SocketAddr;

pub use api_keys::ApiKeys;
pub use jwks::is_loopback;
pub use jwt::{JwtSettings, TokenTypes};
pub use settings::AuthSettings;

use crate::env::ConfigError;

/// Accepted, with every scope, when no issuer and no API keys are configured and the API
/// listens on a loopback address only. Start-up warns.
pub const DEV_API_KEY: &str = "dev-only-insecure-api-key";

/// What a credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read invoices and pay runs.
    Read,
    /// Create invoices.
    Write,
    /// Start pay runs, i.e. move money.
    Pay,
    /// Operator actions on one invoice: void it, retry it now, resolve its attention.
    Manage,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Pay, Scope::Manage];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "invoices:read",
            Scope::Write => "invoices:write",
            Scope::Pay => "invoices:pay",
            Scope::Manage => "invoices:manage",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    const fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Pay => 4,
            Scope::Manage => 8,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The known scopes among `names`; others (an IdP grants scopes of other APIs too) are
    /// ignored.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().filter_map(Scope::parse).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Scope::ALL.into_iter().filter(|s| self.contains(*s)))
            .finish()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    name: String,
    scopes: Scopes,
}

impl Principal {
    /// A JWT's subject. The prefixes keep an IdP subject from passing for an API key's
    /// client (or for `dev`) in the audit trail.
    fn subject(sub: &str, scopes: Scopes) -> Self {
        Principal {
            name: format!("jwt:{sub}"),
            scopes,
        }
    }

    fn client(client: &str, scopes: Scopes) -> Self {
        Principal {
            name: format!("key:{client}"),
            scopes,
        }
    }

    fn dev() -> Self {
        Principal {
            name: "dev".to_owned(),
            scopes: Scopes::all(),
        }
    }

    /// As the audit trail records it: `jwt:<sub>`, `key:<client>` or `dev`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }
}

/// Why a request was not authenticated. The reasons are fixed texts: a presented
/// credential never ends up in an answer or a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer credential")]
    Missing,
    /// Several Authorization headers, an empty token, bytes that are not text.
    #[error("malformed Authorization header")]
    Malformed,
    #[error("{0}")]
    Invalid(&'static str),
    /// No signing key of the issuer could be had yet, so no token can be checked.
    #[error("the token issuer's signing keys cannot be fetched")]
    IssuerUnavailable,
}

/// Checks bearer credentials as configured.
pub struct Authenticator {
    keys: ApiKeys,
    jwt: Option<jwt::JwtVerifier>,
}

impl Authenticator {
    /// Fails when the API would be served to the network without any configured credential.
    pub fn new(settings: &AuthSettings, listen_addr: SocketAddr) -> Result<Self, ConfigError> {
        let keys = match (&settings.api_keys, settings.uses_dev_api_key(listen_addr)?) {
            (_, true) => ApiKeys::dev(),
            (Some(keys), false) => keys.clone(),
            (None, false) => ApiKeys::none(),
        };
        let jwt = settings
            .jwt
            .clone()
            .map(jwt::JwtVerifier::new)
            .transpose()
            .map_err(|reason| ConfigError {
                var: "API_AUTH_ISSUER",
                reason,
            })?;
        Ok(Authenticator { keys, jwt })
    }

    /// Fetches the issuer's keys ahead of the first token, so that a wrong issuer shows in
    /// the log at start-up rather than at the first call.
    pub async fn prefetch(&self) {
        if let Some(jwt) = &self.jwt {
            jwt.prefetch().await;
        }
    }

    /// The caller this bearer token belongs to. API keys are tried first (a digest
    /// comparison, cheap); only a token shaped like a JWT goes on to the issuer's keys.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(principal) = self.keys.authenticate(token) {
            return Ok(principal);
        }
        match &self.jwt {
            Some(jwt) if jwt::looks_like_jwt(token) => jwt.verify(token).await,
            _ => Err(AuthError::Invalid("unknown API key or token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_by_their_exact_names() {
        let s = Scopes::from_names(["invoices:read", "invoices:pay", "openid", "INVOICES:WRITE"]);
        assert!(s.contains(Scope::Read) && s.contains(Scope::Pay));
        assert!(!s.contains(Scope::Write) && !s.contains(Scope::Manage));
        assert_eq!(format!("{s:?}"), "{Read, Pay}");
        // Paying does not imply managing: only `invoices:manage` admits the actions.
        let m = Scopes::from_names(["invoices:manage"]);
        assert!(m.contains(Scope::Manage) && !m.contains(Scope::Pay));
        assert_eq!(format!("{m:?}"), "{Manage}");
        assert!(Scopes::all().contains(Scope::Write));
        assert!(!Scopes::default().contains(Scope::Read));
    }

    #[test]
    fn principals_name_their_kind() {
        assert_eq!(Principal::subject("dev", Scopes::all()).name(), "jwt:dev");
        assert_eq!(Principal::client("ci", Scopes::all()).name(), "key:ci");
        assert_eq!(Principal::dev().name(), "dev");
    }
}
