//! Auth's settings, read by auth itself: static API keys (`API_KEYS` or `API_KEYS_FILE`),
//! bearer JWTs of one OIDC issuer (`API_AUTH_*`), and when the public development key
//! stands in. `config` holds what this returns; nothing here knows `config`, so the two
//! never import each other (as payment-provider's `auth` knows nothing of its `config`).

use std::net::SocketAddr;
use std::time::Duration;

use super::jwks::parse_fetch_url;
use super::jwt::{JwtSettings, TokenTypes, parse_algorithms};
use super::{ApiKeys, DEV_API_KEY};
use crate::env::{self, ConfigError, number, secret};

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// OAuth2/OIDC bearer tokens; `None` when `API_AUTH_ISSUER` is unset.
    pub jwt: Option<JwtSettings>,
    /// Static API keys (digests only); `None` when `API_KEYS` is unset.
    pub api_keys: Option<ApiKeys>,
}

impl AuthSettings {
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let api_keys = secret(env, "API_KEYS")?
            .map(|json| ApiKeys::parse(&json))
            .transpose()
            .map_err(err("API_KEYS"))?;
        let jwt = jwt_settings(&|var: &'static str| env::get(env, var))?;
        Ok(AuthSettings { jwt, api_keys })
    }

    /// Whether the API's only credential is the well-known development key: so when no
    /// issuer and no API keys are configured, and only on a loopback LISTEN_ADDR. Anywhere
    /// else an unconfigured API would be open to whoever knows that key: an error.
    pub fn uses_dev_api_key(&self, listen_addr: SocketAddr) -> Result<bool, ConfigError> {
        if self.jwt.is_some() || self.api_keys.is_some() {
            return Ok(false);
        }
        if listen_addr.ip().is_loopback() {
            return Ok(true);
        }
        Err(ConfigError {
            var: "API_AUTH_ISSUER",
            reason: format!(
                "neither it nor API_KEYS is set and LISTEN_ADDR {listen_addr} is not a loopback \
                 address: set API_AUTH_ISSUER and API_AUTH_AUDIENCE (OIDC bearer tokens), or \
                 API_KEYS / API_KEYS_FILE (the development key {DEV_API_KEY} works on loopback \
                 only)"
            ),
        })
    }
}

fn err(var: &'static str) -> impl Fn(String) -> ConfigError {
    move |reason| ConfigError { var, reason }
}

/// `API_AUTH_*`: bearer JWTs from one OIDC issuer, when `API_AUTH_ISSUER` is set.
fn jwt_settings(
    get: &dyn Fn(&'static str) -> Option<String>,
) -> Result<Option<JwtSettings>, ConfigError> {
    let algorithms =
        parse_algorithms(&get("API_AUTH_ALGORITHMS").unwrap_or_else(|| "RS256,ES256".to_owned()))
            .map_err(err("API_AUTH_ALGORITHMS"))?;
    let Some(issuer) = get("API_AUTH_ISSUER").map(|i| i.trim().to_owned()) else {
        for var in [
            "API_AUTH_AUDIENCE",
            "API_AUTH_JWKS_URL",
            "API_AUTH_TOKEN_TYPES",
            "API_AUTH_MAX_TOKEN_LIFETIME_SECS",
            "API_AUTH_JWKS_MAX_AGE_SECS",
        ] {
            if get(var).is_some() {
                return Err(err(var)(
                    "takes effect only with API_AUTH_ISSUER".to_owned(),
                ));
            }
        }
        return Ok(None);
    };
    let audience = get("API_AUTH_AUDIENCE")
        .map(|a| a.trim().to_owned())
        .ok_or_else(|| err("API_AUTH_AUDIENCE")("required with API_AUTH_ISSUER".to_owned()))?;
    let jwks_url = get("API_AUTH_JWKS_URL")
        .map(|url| parse_fetch_url(url.trim()))
        .transpose()
        .map_err(err("API_AUTH_JWKS_URL"))?;
    if jwks_url.is_none() {
        // Discovery fetches from the issuer itself.
        parse_fetch_url(&issuer)
            .map_err(|e| err("API_AUTH_ISSUER")(format!("{e}, or set API_AUTH_JWKS_URL")))?;
    }
    let mut settings = JwtSettings::new(&issuer, &audience, algorithms);
    settings.jwks_url = jwks_url;
    if let Some(types) = get("API_AUTH_TOKEN_TYPES") {
        settings.token_types = TokenTypes::parse(&types).map_err(err("API_AUTH_TOKEN_TYPES"))?;
    }
    settings.max_lifetime = Duration::from_secs(number(
        get,
        "API_AUTH_MAX_TOKEN_LIFETIME_SECS",
        JwtSettings::DEFAULT_MAX_LIFETIME.as_secs(),
        300..=604_800,
    )?);
    // At least two refreshes (every 15 minutes) fit in it, so one failed fetch is no outage.
    settings.max_age = Duration::from_secs(number(
        get,
        "API_AUTH_JWKS_MAX_AGE_SECS",
        JwtSettings::DEFAULT_MAX_AGE.as_secs(),
        1_800..=86_400,
    )?);
    Ok(Some(settings))
}
