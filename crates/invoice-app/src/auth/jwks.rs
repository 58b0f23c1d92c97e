//! The token issuer's signing keys: fetched from its JWKS (found by OIDC discovery unless
//! configured) and cached. Requests never fetch: a stale set keeps serving while one
//! background fetch refreshes it, a token naming a key we do not know starts a fetch (at
//! most one per interval, so made-up key ids cannot turn into a stream of fetches) and
//! waits for it only briefly, and a set past its maximum age is not used at all, so a
//! withdrawn key stops working even while the issuer cannot be reached.
//!
//! A deliberate fork of payment-provider's `auth::jwks` (the teams share only api-contract):
//! the same items under the same names in the same order, so the two files diff line by
//! line. What differs is what each issuer needs: here the configured algorithms (P-384 and
//! Ed25519 keys too) and a discovered address remembered; there a bearer token for the
//! fetch. A safeguard added to one belongs in the other (README, "Deliberate forks").

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::watch;

/// A JWKS or discovery document is a few kilobytes; anything far larger is not one.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// RSA keys shorter than 2048 bits are not trusted, whatever the issuer publishes.
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// One verification key and the algorithms it may be used with.
pub(super) struct VerifyingKey {
    pub algorithms: Vec<Algorithm>,
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
    http: reqwest::Client,
    issuer: String,
    /// Configured JWKS address; without it, OIDC discovery at the issuer.
    jwks_url: Option<Url>,
    /// What tokens may be signed with: keys fit for none of these are not kept.
    algorithms: Vec<Algorithm>,
    /// Found by discovery; forgotten when a fetch from it fails. Only the one fetch in
    /// flight touches it.
    discovered_jwks_url: Mutex<Option<Url>>,
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
    pub fn new(
        http: reqwest::Client,
        issuer: &str,
        jwks_url: Option<Url>,
        algorithms: Vec<Algorithm>,
    ) -> Self {
        JwksSource {
            http,
            issuer: issuer.to_owned(),
            jwks_url,
            algorithms,
            discovered_jwks_url: Mutex::new(None),
        }
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, Arc<VerifyingKey>>> {
        let discovered = self
            .discovered_jwks_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let jwks_url = match (&self.jwks_url, discovered) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url,
            (None, None) => {
                let url = self.discover().await?;
                self.remember(Some(url.clone()));
                url
            }
        };
        let raw: RawJwks = match self.get_json(&jwks_url).await {
            Ok(raw) => raw,
            Err(e) => {
                self.remember(None);
                return Err(e);
            }
        };
        let keys: HashMap<_, _> = raw
            .keys
            .into_iter()
            .filter_map(|value| usable_key(value, &self.algorithms))
            .collect();
        // The issuer answered: what it publishes now replaces the cache, also when none of
        // it is usable, so withdrawn keys stop working now, not at the cache's maximum age.
        if keys.is_empty() {
            tracing::warn!(
                "{jwks_url} holds no signing key usable with {:?}: every token is refused",
                self.algorithms
            );
        }
        Ok(keys)
    }

    fn remember(&self, jwks_url: Option<Url>) {
        *self
            .discovered_jwks_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = jwks_url;
    }

    async fn discover(&self) -> anyhow::Result<Url> {
        let url = discovery_url(&self.issuer).map_err(anyhow::Error::msg)?;
        let doc: Discovery = self.get_json(&url).await?;
        // OpenID Connect Discovery: the document must name the issuer it was fetched for.
        anyhow::ensure!(
            doc.issuer == self.issuer,
            "{url} names issuer {:?}, not API_AUTH_ISSUER",
            doc.issuer
        );
        parse_fetch_url(&doc.jwks_uri).map_err(|e| anyhow::anyhow!("{url}: jwks_uri: {e}"))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &Url) -> anyhow::Result<T> {
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await?
            .error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            anyhow::ensure!(
                body.len() + chunk.len() <= MAX_DOCUMENT_BYTES,
                "{url}: more than {MAX_DOCUMENT_BYTES} bytes"
            );
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("{url}: {e}"))
    }
}

/// `<issuer>/.well-known/openid-configuration`.
pub(super) fn discovery_url(issuer: &str) -> Result<Url, String> {
    parse_fetch_url(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))
}

/// A URL keys may be fetched from: HTTPS, or plain HTTP to this machine only (tests, a
/// local IdP). Keys fetched in the clear could be swapped on the way.
pub(super) fn parse_fetch_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{e} (expected an https:// URL)"))?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" if !host.is_empty() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err("expected an https:// URL (http:// only to localhost)".to_owned()),
    }
}

/// Whether `url`'s host is this machine: `localhost` or a loopback address.
pub fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A JWKS entry we can use: a signing key with an id, RSA (2048 bits or more), P-256,
/// P-384 or Ed25519, fit for one of `algorithms`, whose declared algorithm (if any) is
/// among those and whose declared use and operations (if any) are verifying signatures.
/// Anything else is skipped, not fatal: a set may carry keys for other purposes.
fn usable_key(
    value: serde_json::Value,
    algorithms: &[Algorithm],
) -> Option<(String, Arc<VerifyingKey>)> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    let kid = jwk.common.key_id.clone()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return None;
    }
    let fits: &[Algorithm] = match &jwk.algorithm {
        // The modulus's length from its base64url text, enough to tell 2048 from 1024 bits.
        AlgorithmParameters::RSA(rsa)
            if rsa.n.trim_end_matches('=').len() * 3 / 4 >= MIN_RSA_MODULUS_BYTES =>
        {
            &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::try_from(alg).ok()?),
        None => None,
    };
    let algorithms: Vec<Algorithm> = algorithms
        .iter()
        .copied()
        .filter(|alg| fits.contains(alg) && declared.is_none_or(|declared| declared == *alg))
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, Arc::new(VerifyingKey { algorithms, key })))
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

    /// Fetches the keys ahead of the first token (so a wrong issuer shows in the log at
    /// start-up), waiting for that fetch however long it takes: no request waits on it.
    pub async fn prefetch(&self) {
        if let Some(mut ended) = CacheState::start_refresh(&self.inner) {
            let _ = ended.changed().await;
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
                    "fetched the token issuer's signing keys"
                );
                self.0.store(by_kid);
            }
            // The keys we had serve on until their maximum age: an IdP blip must not
            // refuse every caller.
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not fetch the token issuer's signing keys");
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
            usable_key(jwk, &[Algorithm::RS256]).is_some()
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
    fn keys_are_fetched_over_https_or_from_this_machine() {
        for good in [
            "https://idp.example.com/jwks",
            "http://127.0.0.1:8000/jwks",
            "http://localhost/x",
            "http://[::1]:9/x",
        ] {
            assert!(parse_fetch_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://localhost/x",
            "idp.example.com",
            "",
        ] {
            assert!(parse_fetch_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            discovery_url("https://idp.example.com/realms/x/")
                .expect("valid")
                .as_str(),
            "https://idp.example.com/realms/x/.well-known/openid-configuration"
        );
    }
}
