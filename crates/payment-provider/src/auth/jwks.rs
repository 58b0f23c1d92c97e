//! The service-account issuer's signing keys: fetched from its JWKS (found by OIDC
//! discovery unless configured), cached, and fetched again when they are older than their
//! maximum age or a token names a key we do not know, at most once per interval, so a
//! stream of made-up key ids cannot turn into a stream of fetches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Deserialize;

/// A JWKS or discovery document is a few kilobytes; anything far larger is not one.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// One verification key and the only algorithm it may be used with.
pub(super) struct VerifyingKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// Why no key could be had for a token.
#[derive(Debug)]
pub(super) enum KeyError {
    /// The issuer's keys are known, and this one is not among them.
    UnknownKid,
    /// No keys at all: the issuer could not be reached yet (our problem, not the caller's).
    Unavailable(String),
}

/// Where the keys come from and how they are fetched.
pub(super) struct JwksSource {
    pub http: reqwest::Client,
    pub issuer: String,
    /// Configured JWKS address; without it, OIDC discovery at the issuer.
    pub jwks_url: Option<Url>,
    /// A bearer token sent with the fetch (e.g. to the Kubernetes API server); read at
    /// each fetch, since projected tokens are rotated on disk.
    pub bearer_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl JwksSource {
    async fn fetch(&self) -> Result<HashMap<String, Arc<VerifyingKey>>, String> {
        let bearer = self.bearer()?;
        let jwks_url = match &self.jwks_url {
            Some(url) => url.clone(),
            None => self.discover(bearer.as_ref()).await?,
        };
        // The bearer goes to the addresses we were configured with, not to one that a
        // discovery document named on another host.
        let bearer = bearer.filter(|_| {
            self.jwks_url.is_some()
                || Url::parse(&self.issuer).is_ok_and(|i| i.origin() == jwks_url.origin())
        });
        let raw: RawJwks = self.get_json(&jwks_url, bearer.as_ref()).await?;
        let keys: HashMap<_, _> = raw.keys.into_iter().filter_map(usable_key).collect();
        if keys.is_empty() {
            return Err(format!("{jwks_url} holds no usable RS256 or ES256 key"));
        }
        Ok(keys)
    }

    async fn discover(&self, bearer: Option<&HeaderValue>) -> Result<Url, String> {
        let url = discovery_url(&self.issuer)?;
        let doc: Discovery = self.get_json(&url, bearer).await?;
        // OpenID Connect Discovery: the document must name the issuer it was fetched for.
        if doc.issuer != self.issuer {
            return Err(format!(
                "{url} names issuer {:?}, expected {:?}",
                doc.issuer, self.issuer
            ));
        }
        let jwks_url = Url::parse(&doc.jwks_uri)
            .map_err(|e| format!("{url}: jwks_uri {:?}: {e}", doc.jwks_uri))?;
        check_fetch_url(&jwks_url).map_err(|e| format!("{url}: jwks_uri: {e}"))?;
        Ok(jwks_url)
    }

    fn bearer(&self) -> Result<Option<HeaderValue>, String> {
        let Some(path) = &self.bearer_file else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("reading SA_JWKS_TOKEN_FILE {}: {e}", path.display()))?;
        let mut value = HeaderValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| format!("SA_JWKS_TOKEN_FILE {} is not a token", path.display()))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        bearer: Option<&HeaderValue>,
    ) -> Result<T, String> {
        let mut request = self
            .http
            .get(url.clone())
            .header(ACCEPT, "application/json");
        if let Some(bearer) = bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        let mut response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url}: the document is larger than expected"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    }
}

/// `<issuer>/.well-known/openid-configuration`.
pub(super) fn discovery_url(issuer: &str) -> Result<Url, String> {
    let url = Url::parse(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))
    .map_err(|e| format!("{issuer:?} is not a URL: {e}"))?;
    check_fetch_url(&url)?;
    Ok(url)
}

/// Keys travel over TLS; plain HTTP only to this machine (tests, a local proxy).
pub(super) fn check_fetch_url(url: &Url) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{url}: expected https:// (http:// only on loopback)"
        )),
    }
}

/// A JWKS entry we can use: a signing key with an id, RSA or P-256, whose declared
/// algorithm (if any) is the one its type implies. Anything else is skipped, not fatal: a
/// set may carry keys for other purposes.
fn usable_key(value: serde_json::Value) -> Option<(String, Arc<VerifyingKey>)> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    let kid = jwk.common.key_id.clone()?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let (alg, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != declared) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, Arc::new(VerifyingKey { alg, key })))
}

struct Keys {
    by_kid: HashMap<String, Arc<VerifyingKey>>,
    fetched_at: Option<Instant>,
}

pub(super) struct KeyCache {
    inner: Arc<CacheState>,
}

struct CacheState {
    source: JwksSource,
    keys: RwLock<Arc<Keys>>,
    /// When the last fetch was tried; the lock also makes concurrent refreshes one.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    max_age: Duration,
    min_interval: Duration,
}

impl KeyCache {
    pub fn new(source: JwksSource, max_age: Duration, min_interval: Duration) -> Self {
        KeyCache {
            inner: Arc::new(CacheState {
                source,
                keys: RwLock::new(Arc::new(Keys {
                    by_kid: HashMap::new(),
                    fetched_at: None,
                })),
                last_attempt: tokio::sync::Mutex::new(None),
                max_age,
                min_interval,
            }),
        }
    }

    /// The key with this id, fetching the set again when it is stale or lacks the id.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerifyingKey>, KeyError> {
        let keys = self.inner.snapshot();
        if self.inner.is_fresh(&keys)
            && let Some(key) = keys.by_kid.get(kid)
        {
            return Ok(key.clone());
        }
        // The refresh runs as a task of its own: a request dropped while it waits (another
        // of its extractors failed) must not cancel a fetch already counted against the
        // rate limit, or a stream of such requests would keep a rotated key out for good.
        let refresh = tokio::spawn({
            let (state, kid) = (self.inner.clone(), kid.to_owned());
            async move { state.refresh(&kid).await }
        });
        if let Err(e) = refresh.await {
            tracing::warn!(error = %e, "refreshing the service-account issuer's keys failed");
        }
        let keys = self.inner.snapshot();
        match keys.by_kid.get(kid) {
            Some(key) => Ok(key.clone()),
            None if keys.fetched_at.is_none() => Err(KeyError::Unavailable(
                "the service-account issuer's keys could not be fetched yet".into(),
            )),
            None => Err(KeyError::UnknownKid),
        }
    }
}

impl CacheState {
    fn snapshot(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn is_fresh(&self, keys: &Keys) -> bool {
        keys.fetched_at
            .is_some_and(|at| at.elapsed() < self.max_age)
    }

    async fn refresh(&self, kid: &str) {
        let mut last_attempt = self.last_attempt.lock().await;
        // Another request may have refreshed the set while this one waited for the lock.
        let keys = self.snapshot();
        let fresh = self.is_fresh(&keys);
        let due = last_attempt.is_none_or(|at| at.elapsed() >= self.min_interval);
        if (fresh && keys.by_kid.contains_key(kid)) || !due {
            return;
        }
        *last_attempt = Some(Instant::now());
        match self.source.fetch().await {
            Ok(by_kid) => {
                tracing::info!(
                    keys = by_kid.len(),
                    "fetched the service-account issuer's keys"
                );
                let keys = Arc::new(Keys {
                    by_kid,
                    fetched_at: Some(Instant::now()),
                });
                match self.keys.write() {
                    Ok(mut slot) => *slot = keys,
                    Err(poisoned) => *poisoned.into_inner() = keys,
                }
            }
            // The keys we had stay in use: an API-server blip must not refuse every
            // caller. Removed keys are dropped at the next successful fetch.
            Err(e) => {
                tracing::warn!(error = %e, "fetching the service-account issuer's keys failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fetched_over_tls_except_on_loopback() {
        for ok in [
            "https://kubernetes.default.svc/openid/v1/jwks",
            "http://127.0.0.1:8443/jwks",
            "http://[::1]/jwks",
            "http://localhost:1/jwks",
        ] {
            assert!(check_fetch_url(&Url::parse(ok).expect(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://kubernetes.default.svc/openid/v1/jwks",
            "http://10.0.0.1/jwks",
            "ftp://127.0.0.1/jwks",
        ] {
            assert!(
                check_fetch_url(&Url::parse(bad).expect(bad)).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            discovery_url("https://issuer.example/")
                .expect("valid")
                .as_str(),
            "https://issuer.example/.well-known/openid-configuration"
        );
    }
}
