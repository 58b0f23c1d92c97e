//! The service-account issuer's signing keys: fetched from its JWKS (found by OIDC
//! discovery unless configured) and cached. Requests never fetch: a stale set keeps
//! serving while one background fetch refreshes it, a token naming a key we do not know
//! starts a fetch (at most one per interval, so made-up key ids cannot turn into a stream
//! of fetches) and waits for it only briefly, and a set past its maximum age is not used
//! at all, so a withdrawn key stops working even while the issuer cannot be reached.
//!
//! A deliberate fork of invoice-app's `auth::jwks` (the teams share only api-contract):
//! the same items under the same names in the same order, so the two files diff line by
//! line. What differs is what each issuer needs: here a bearer token for the fetch and the
//! two algorithms the API server signs with; there the configured algorithms and a
//! discovered address remembered. A safeguard added to one belongs in the other (README,
//! "Deliberate forks").

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use tokio::sync::watch;

/// A JWKS or discovery document is a few kilobytes; anything far larger is not one.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// RSA keys shorter than 2048 bits are not trusted, whatever the issuer publishes.
const MIN_RSA_MODULUS_BYTES: usize = 256;

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
    /// No usable keys: none fetched yet, or none within their maximum age (our problem,
    /// not the caller's).
    Unavailable,
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
        // The issuer answered: what it publishes now replaces the cache, also when none of
        // it is usable, so withdrawn keys stop working now, not at the cache's maximum age.
        if keys.is_empty() {
            tracing::warn!(
                "{jwks_url} holds no usable RS256 or ES256 key: every ServiceAccount token is refused"
            );
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

/// A JWKS entry we can use: a signing key with an id, RSA (2048 bits or more) or P-256,
/// whose declared algorithm (if any) is the one its type implies and whose declared
/// operations (if any) include verifying. Anything else is skipped, not fatal: a set may
/// carry keys for other purposes.
fn usable_key(value: serde_json::Value) -> Option<(String, Arc<VerifyingKey>)> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    let kid = jwk.common.key_id.clone()?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return None;
    }
    let (alg, declared) = match &jwk.algorithm {
        // The modulus's length from its base64url text, enough to tell 2048 from 1024 bits.
        AlgorithmParameters::RSA(rsa)
            if rsa.n.trim_end_matches('=').len() * 3 / 4 >= MIN_RSA_MODULUS_BYTES =>
        {
            (Algorithm::RS256, KeyAlgorithm::RS256)
        }
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

/// How long fetched keys serve, and how often and how long a request may ask for more.
#[derive(Debug, Clone, Copy)]
pub(super) struct CachePolicy {
    /// Older keys are fetched again in the background, still serving meanwhile.
    pub refresh_after: Duration,
    /// Older keys are not used at all: without a successful fetch since, tokens cannot be
    /// checked (fail closed), so a key the issuer withdrew cannot outlive an outage.
    pub max_age: Duration,
    /// At most one fetch starts per this long, whatever tokens arrive.
    pub min_interval: Duration,
    /// How long a request that has no usable key waits for a fetch in flight.
    pub max_wait: Duration,
}

struct Keys {
    by_kid: HashMap<String, Arc<VerifyingKey>>,
    fetched_at: Instant,
}

/// The issuer's keys, refreshed by one background fetch at a time: requests never fetch,
/// they use what is cached and wait (briefly) only when it has nothing for them.
pub(super) struct KeyCache {
    inner: Arc<CacheState>,
}

struct CacheState {
    source: JwksSource,
    policy: CachePolicy,
    keys: RwLock<Option<Arc<Keys>>>,
    /// Never held across an await.
    refresh: Mutex<RefreshState>,
    /// Bumped whenever a fetch ends, for the requests waiting on it.
    fetches_ended: watch::Sender<u64>,
}

#[derive(Default)]
struct RefreshState {
    in_flight: bool,
    last_attempt: Option<Instant>,
}

impl KeyCache {
    pub fn new(source: JwksSource, policy: CachePolicy) -> Self {
        KeyCache {
            inner: Arc::new(CacheState {
                source,
                policy,
                keys: RwLock::new(None),
                refresh: Mutex::new(RefreshState::default()),
                fetches_ended: watch::Sender::new(0),
            }),
        }
    }

    /// The key with this id. A stale set still serves while it is refreshed; a missing id
    /// or a cold or expired set waits for a fetch, but only up to `max_wait`.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerifyingKey>, KeyError> {
        if let Some(keys) = self.inner.usable()
            && let Some(key) = keys.by_kid.get(kid)
        {
            if keys.fetched_at.elapsed() >= self.inner.policy.refresh_after {
                CacheState::start_refresh(&self.inner);
            }
            return Ok(key.clone());
        }
        if let Some(mut ended) = CacheState::start_refresh(&self.inner) {
            // Timing out only stops the waiting: the fetch goes on for later requests.
            let _ = tokio::time::timeout(self.inner.policy.max_wait, ended.changed()).await;
        }
        match self.inner.usable() {
            Some(keys) => keys.by_kid.get(kid).cloned().ok_or(KeyError::UnknownKid),
            None => Err(KeyError::Unavailable),
        }
    }
}

impl CacheState {
    /// The cached keys, unless there are none or they are past their maximum age.
    fn usable(&self) -> Option<Arc<Keys>> {
        // A poisoned lock still holds a whole key set: a writer only ever swaps the Arc.
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // An issuer that publishes no usable key leaves tokens uncheckable: 503, not 401.
        keys.filter(|k| k.fetched_at.elapsed() < self.policy.max_age && !k.by_kid.is_empty())
    }

    /// Starts a fetch in a task of its own, unless one runs or one started within
    /// `min_interval`. Returns a receiver that changes when the running fetch ends, if any.
    fn start_refresh(this: &Arc<Self>) -> Option<watch::Receiver<u64>> {
        let mut state = this
            .refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !state.in_flight {
            if state
                .last_attempt
                .is_some_and(|at| at.elapsed() < this.policy.min_interval)
            {
                return None;
            }
            state.in_flight = true;
            state.last_attempt = Some(Instant::now());
            // A task, not the request's future: a request dropped meanwhile must not
            // cancel a fetch already counted against the interval.
            let fetch = InFlight(this.clone());
            tokio::spawn(async move { fetch.run().await });
        }
        // Subscribed under the lock, so the end of the running fetch cannot be missed.
        Some(this.fetches_ended.subscribe())
    }

    fn store(&self, by_kid: HashMap<String, Arc<VerifyingKey>>) {
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(Keys {
            by_kid,
            fetched_at: Instant::now(),
        }));
    }
}

/// The one fetch in flight; marks itself ended however it ends (even dropped with its
/// runtime), so a lost task cannot block refreshes for good.
struct InFlight(Arc<CacheState>);

impl InFlight {
    async fn run(self) {
        match self.0.source.fetch().await {
            Ok(by_kid) => {
                tracing::info!(
                    keys = by_kid.len(),
                    "fetched the service-account issuer's keys"
                );
                self.0.store(by_kid);
            }
            // The keys we had serve on until their maximum age: an API-server blip must
            // not refuse every caller.
            Err(e) => {
                tracing::warn!(error = %e, "fetching the service-account issuer's keys failed")
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .in_flight = false;
        self.0.fetches_ended.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn weak_rsa_keys_and_keys_not_for_verifying_are_skipped() {
        // 342 base64url characters hold a 2048-bit modulus, 171 a 1024-bit one; the last
        // is `A` so that no bits are left over.
        let usable = |n_chars: usize, member: Option<(&str, serde_json::Value)>| {
            let n = format!("{}A", "x".repeat(n_chars - 1));
            let mut jwk = json!({"kty": "RSA", "kid": "k", "n": n, "e": "AQAB"});
            if let Some((name, value)) = member {
                jwk[name] = value;
            }
            usable_key(jwk).is_some()
        };
        assert!(usable(342, None));
        assert!(!usable(171, None), "1024 bits");
        assert!(usable(342, Some(("key_ops", json!(["verify"])))));
        assert!(!usable(342, Some(("key_ops", json!(["sign"])))));
        assert!(!usable(
            342,
            Some(("key_ops", json!(["encrypt", "decrypt"])))
        ));
        assert!(usable(342, Some(("use", json!("sig")))));
        assert!(!usable(342, Some(("use", json!("enc")))));
    }

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
