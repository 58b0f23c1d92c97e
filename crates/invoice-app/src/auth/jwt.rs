//! OAuth2/OIDC bearer JWTs, validated with `jsonwebtoken` against the issuer's JWKS, and
//! held to RFC 9068's access-token profile where common IdPs allow: an accepted `typ`,
//! `iss` the issuer as one string, and a bounded lifetime (`iat` not in the future).
//!
//! The keys come from the configured JWKS URL or from OIDC discovery under the issuer, and
//! are cached. Requests never fetch: a stale set keeps serving while one background fetch
//! refreshes it; a token naming an unknown `kid` starts a fetch (a rotated key needs no
//! restart), at most one per cooldown so tokens with invented `kid`s cannot make us hammer
//! the IdP, and waits for it only briefly; a set past its maximum age is not used at all,
//! so a withdrawn key stops working even while the IdP cannot be reached. Symmetric (`oct`)
//! keys and RSA keys under 2048 bits are never used; a token must be signed with one of the
//! configured algorithms, and with its key's own `alg` when the JWK names one.
//!
//! The key cache is a deliberate fork of payment-provider's `auth::jwks` (the teams share
//! only api-contract): same concepts and names, kept apart so that each can change alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::watch;

use super::{AuthError, Principal, Scopes};

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;
/// RSA keys shorter than 2048 bits are not trusted, whatever the IdP publishes.
const MIN_RSA_MODULUS_BYTES: usize = 256;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Discovery documents and key sets are a few KiB; more is not one.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
const MAX_SUBJECT_CHARS: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The `iss` tokens must carry; also where discovery looks.
    pub issuer: String,
    /// The `aud` tokens must carry (one of, when it is a list).
    pub audience: String,
    /// `None`: from `<issuer>/.well-known/openid-configuration`.
    pub jwks_url: Option<Url>,
    pub algorithms: Vec<Algorithm>,
    /// The `typ` header values accepted.
    pub token_types: TokenTypes,
    /// Longest `exp - iat` accepted (without `iat`: `exp` at most this far from now).
    pub max_lifetime: Duration,
    /// Unknown `kid`s cause at most one key fetch per this long.
    pub refresh_cooldown: Duration,
    /// Keys older than this are fetched again in the background, so a key the IdP
    /// withdrew stops working; they serve meanwhile.
    pub refresh_after: Duration,
    /// Keys older than this are not used: tokens are answered 503 until a fetch succeeds.
    pub max_age: Duration,
    /// How long a token without a usable key waits for the fetch in flight.
    pub max_wait: Duration,
}

impl JwtSettings {
    pub const DEFAULT_REFRESH_COOLDOWN: Duration = Duration::from_secs(10);
    pub const DEFAULT_REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60 * 60);
    /// Far below a client's timeout: a hanging IdP must not stall the API.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(250);
    pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

    /// Tokens of `issuer` for `audience`, keys by discovery, the other settings default.
    pub fn new(issuer: &str, audience: &str, algorithms: Vec<Algorithm>) -> Self {
        JwtSettings {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            jwks_url: None,
            algorithms,
            token_types: TokenTypes::default(),
            max_lifetime: Self::DEFAULT_MAX_LIFETIME,
            refresh_cooldown: Self::DEFAULT_REFRESH_COOLDOWN,
            refresh_after: Self::DEFAULT_REFRESH_AFTER,
            max_age: Self::DEFAULT_MAX_AGE,
            max_wait: Self::DEFAULT_MAX_WAIT,
        }
    }

    fn discovery_url(&self) -> Result<Url, String> {
        parse_fetch_url(&format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        ))
    }
}

/// `API_AUTH_TOKEN_TYPES`: the `typ` header values a token may carry, compared as media
/// types (RFC 7515, 4.1.9): case-insensitively, with `application/` implied; `absent`
/// stands for a token without `typ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTypes {
    /// Lowercase, without `application/`.
    names: Vec<String>,
    absent: bool,
}

impl TokenTypes {
    /// RFC 9068's `at+jwt`, and what Keycloak, Auth0, Entra ID (`JWT`) and Okta (no `typ`)
    /// put on their access tokens by default; `id+jwt` and anything else are refused.
    pub const DEFAULT: &'static str = "at+jwt,JWT,absent";

    pub fn parse(list: &str) -> Result<Self, String> {
        let mut types = TokenTypes {
            names: Vec::new(),
            absent: false,
        };
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "absent" {
                types.absent = true;
                continue;
            }
            let name = media_type(entry)
                .filter(|n| !n.is_empty() && !n.contains(|c: char| c.is_whitespace()))
                .ok_or_else(|| {
                    format!("{entry:?} is not a token type (expected e.g. at+jwt, JWT, absent)")
                })?;
            if !types.names.contains(&name) {
                types.names.push(name);
            }
        }
        if types.names.is_empty() && !types.absent {
            return Err("no token type given".to_owned());
        }
        Ok(types)
    }

    fn accepts(&self, typ: Option<&str>) -> bool {
        match typ {
            None => self.absent,
            Some(typ) => media_type(typ).is_some_and(|name| self.names.contains(&name)),
        }
    }
}

impl Default for TokenTypes {
    fn default() -> Self {
        TokenTypes {
            names: vec!["at+jwt".to_owned(), "jwt".to_owned()],
            absent: true,
        }
    }
}

/// A `typ` as the media type it names: lowercase, `application/` dropped; `None` for
/// another top-level type, which no JWT is.
fn media_type(typ: &str) -> Option<String> {
    let typ = typ.to_ascii_lowercase();
    match typ.strip_prefix("application/") {
        Some(subtype) => Some(subtype.to_owned()),
        None if typ.contains('/') => None,
        None => Some(typ),
    }
}

/// `API_AUTH_ALGORITHMS`: a comma-separated list of asymmetric JWS algorithms. HMAC ones are
/// refused: whoever can check such a token can also forge one, and an HMAC key could be
/// confused with a public key.
pub fn parse_algorithms(list: &str) -> Result<Vec<Algorithm>, String> {
    let mut algorithms = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let alg: Algorithm = name.parse().map_err(|_| {
            format!("{name:?} is not a JWS algorithm (expected e.g. RS256, PS256, ES256, EdDSA)")
        })?;
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(format!(
                "{name} is refused: HMAC tokens need a shared secret, use an asymmetric algorithm"
            ));
        }
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    if algorithms.is_empty() {
        return Err("no algorithm given".to_owned());
    }
    Ok(algorithms)
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

/// A URL keys may be fetched from: HTTPS, or plain HTTP to this machine only (tests, a
/// local IdP). Keys fetched in the clear could be swapped on the way.
pub fn parse_fetch_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{e} (expected an https:// URL)"))?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" if !host.is_empty() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err("expected an https:// URL (http:// only to localhost)".to_owned()),
    }
}

/// Three base64url segments, the shape of a signed JWT.
pub(super) fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

/// A verification key with the algorithms it may be used with.
struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

pub(super) struct JwtVerifier {
    settings: JwtSettings,
    keys: KeyCache,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Checked here too: `Validation` takes a list that merely contains the issuer.
    iss: serde_json::Value,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    /// RFC 8693/9068: space-separated.
    #[serde(default)]
    scope: Option<String>,
    /// Some IdPs: a list, or again a space-separated string.
    #[serde(default)]
    scp: Option<ScopeList>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeList {
    Text(String),
    List(Vec<String>),
}

impl JwtVerifier {
    pub(super) fn new(settings: JwtSettings) -> Result<Self, String> {
        // Fail at start-up on an issuer discovery could never use.
        if settings.jwks_url.is_none() {
            settings.discovery_url()?;
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // A redirect could lead from https to somewhere else entirely.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client for the JWKS: {e}"))?;
        let source = JwksSource {
            http,
            settings: settings.clone(),
            discovered_jwks_url: Mutex::new(None),
        };
        let policy = CachePolicy {
            refresh_after: settings.refresh_after,
            max_age: settings.max_age,
            min_interval: settings.refresh_cooldown,
            max_wait: settings.max_wait,
        };
        Ok(JwtVerifier {
            settings,
            keys: KeyCache::new(source, policy),
        })
    }

    pub(super) async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let invalid = AuthError::Invalid;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("the token is malformed"))?;
        if header.crit.is_some() {
            return Err(invalid("the token has critical header parameters"));
        }
        // RFC 9068, 4: an ID token or any other JWT the IdP signs is no access token.
        if !self.settings.token_types.accepts(header.typ.as_deref()) {
            return Err(invalid("the token's type (typ) is not an access token's"));
        }
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(invalid("the token's algorithm is not accepted"));
        }
        let kid = header
            .kid
            .ok_or(invalid("the token names no signing key (kid)"))?;
        let key = self.keys.key(&kid).await.map_err(|e| match e {
            KeyError::UnknownKid => invalid("the token's signing key is unknown"),
            KeyError::Unavailable => AuthError::IssuerUnavailable,
        })?;
        if !key.algorithms.contains(&header.alg) {
            return Err(invalid("the token's algorithm is not its key's"));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|e| invalid(reason(e.kind())))?
            .claims;
        if claims.iss.as_str() != Some(self.settings.issuer.as_str()) {
            return Err(invalid("the token's issuer is not ours as one string"));
        }
        self.check_lifetime(&claims)?;
        if claims.sub.is_empty()
            || claims.sub.chars().count() > MAX_SUBJECT_CHARS
            || claims.sub.chars().any(char::is_control)
        {
            return Err(invalid(
                "the token's subject is empty, too long or not text",
            ));
        }
        let scope_claim = claims.scope.iter().flat_map(|s| s.split_whitespace());
        let scp_claim: Vec<&str> = match &claims.scp {
            Some(ScopeList::Text(s)) => s.split_whitespace().collect(),
            Some(ScopeList::List(l)) => l.iter().map(String::as_str).collect(),
            None => Vec::new(),
        };
        let scopes = Scopes::from_names(scope_claim.chain(scp_claim));
        Ok(Principal::subject(&claims.sub, scopes))
    }

    /// A token issued in the future, or living longer than allowed, is refused: a leaked
    /// one must not stay good for years because the IdP (or a forger with an old key)
    /// said so.
    fn check_lifetime(&self, claims: &Claims) -> Result<(), AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        let max = self.settings.max_lifetime.as_secs();
        // Valid from after it expires: never valid, though the leeway would let it pass.
        if claims.nbf.is_some_and(|nbf| nbf > claims.exp) {
            return Err(AuthError::Invalid(
                "the token is valid only after it expires",
            ));
        }
        match claims.iat {
            Some(iat) if iat > now.saturating_add(LEEWAY_SECS) => {
                Err(AuthError::Invalid("the token is issued in the future"))
            }
            Some(iat) if claims.exp < iat => {
                Err(AuthError::Invalid("the token expires before it was issued"))
            }
            Some(iat) if claims.exp.saturating_sub(iat) > max => {
                Err(AuthError::Invalid("the token lives longer than allowed"))
            }
            None if claims.exp > now.saturating_add(max).saturating_add(LEEWAY_SECS) => {
                Err(AuthError::Invalid("the token lives longer than allowed"))
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn prefetch(&self) {
        self.keys.prefetch().await;
    }
}

/// Where the keys come from and how they are fetched.
struct JwksSource {
    http: reqwest::Client,
    settings: JwtSettings,
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
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

impl JwksSource {
    async fn fetch(&self) -> anyhow::Result<HashMap<String, Arc<Key>>> {
        let discovered = self
            .discovered_jwks_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let jwks_url = match (&self.settings.jwks_url, discovered) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url,
            (None, None) => {
                let url = self.discover().await?;
                self.remember(Some(url.clone()));
                url
            }
        };
        let document: JwksDocument = match self.get_json(&jwks_url).await {
            Ok(document) => document,
            Err(e) => {
                self.remember(None);
                return Err(e);
            }
        };
        let by_kid: HashMap<String, Arc<Key>> = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                Some((kid, Arc::new(self.usable(&jwk)?)))
            })
            .collect();
        // The issuer answered: what it publishes now replaces the cache, also when none of
        // it is usable (withdrawn in an emergency, or rotated to keys we refuse), so the old
        // keys stop working now rather than at the cache's maximum age.
        if by_kid.is_empty() {
            tracing::warn!(
                "{jwks_url} holds no signing key usable with {:?}: every token is refused",
                self.settings.algorithms
            );
        }
        Ok(by_kid)
    }

    fn remember(&self, jwks_url: Option<Url>) {
        *self
            .discovered_jwks_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = jwks_url;
    }

    async fn discover(&self) -> anyhow::Result<Url> {
        let url = self.settings.discovery_url().map_err(anyhow::Error::msg)?;
        let document: Discovery = self.get_json(&url).await?;
        // OpenID Connect Discovery 1.0, 4.3: the document must name the issuer we asked.
        anyhow::ensure!(
            document.issuer == self.settings.issuer,
            "{url} names issuer {:?}, not API_AUTH_ISSUER",
            document.issuer
        );
        parse_fetch_url(&document.jwks_uri).map_err(|e| anyhow::anyhow!("{url}: jwks_uri: {e}"))
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

    /// The key, when this JWK is one to verify signatures with under the configured
    /// algorithms; `None` for encryption keys, symmetric keys, weak or unknown ones.
    fn usable(&self, jwk: &Jwk) -> Option<Key> {
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
            AlgorithmParameters::RSA(rsa) => {
                let modulus_bytes = rsa.n.trim_end_matches('=').len() * 3 / 4;
                if modulus_bytes < MIN_RSA_MODULUS_BYTES {
                    return None;
                }
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
        let named = match jwk.common.key_algorithm {
            Some(alg) => Some(Algorithm::try_from(alg).ok()?),
            None => None,
        };
        let algorithms: Vec<Algorithm> = self
            .settings
            .algorithms
            .iter()
            .copied()
            .filter(|alg| fits.contains(alg) && named.is_none_or(|named| named == *alg))
            .collect();
        if algorithms.is_empty() {
            return None;
        }
        Some(Key {
            decoding: DecodingKey::from_jwk(jwk).ok()?,
            algorithms,
        })
    }
}

/// Why no key could be had for a token.
#[derive(Debug)]
enum KeyError {
    /// The issuer's keys are known, and this one is not among them.
    UnknownKid,
    /// No usable keys: none fetched yet, or none within their maximum age.
    Unavailable,
}

/// How long fetched keys serve, and how often and how long a request may ask for more.
#[derive(Debug, Clone, Copy)]
struct CachePolicy {
    /// Older keys are fetched again in the background, still serving meanwhile.
    refresh_after: Duration,
    /// Older keys are not used at all (fail closed), so a key the IdP withdrew cannot
    /// outlive an outage.
    max_age: Duration,
    /// At most one fetch starts per this long, whatever tokens arrive.
    min_interval: Duration,
    /// How long a request that has no usable key waits for a fetch in flight.
    max_wait: Duration,
}

struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
    fetched_at: Instant,
}

/// The issuer's keys, refreshed by one background fetch at a time: requests never fetch,
/// they use what is cached and wait (briefly) only when it has nothing for them.
struct KeyCache {
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
    fn new(source: JwksSource, policy: CachePolicy) -> Self {
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
    async fn key(&self, kid: &str) -> Result<Arc<Key>, KeyError> {
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
    async fn prefetch(&self) {
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
        // An issuer that publishes no usable key leaves us unable to check a token: 503
        // (our side or the issuer's is misconfigured), as before any key was fetched.
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
            // cancel a fetch already counted against the cooldown.
            let fetch = InFlight(this.clone());
            tokio::spawn(async move { fetch.run().await });
        }
        // Subscribed under the lock, so the end of the running fetch cannot be missed.
        Some(this.fetches_ended.subscribe())
    }

    fn store(&self, by_kid: HashMap<String, Arc<Key>>) {
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

/// A reason a caller can act on, without quoting anything from the token.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidAudience => "the token is meant for another audience",
        ErrorKind::InvalidIssuer => "the token is from another issuer",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "the token's algorithm is not accepted"
        }
        ErrorKind::MissingRequiredClaim(_) => "the token lacks exp, iss, aud or sub",
        _ => "the token is malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_are_asymmetric_only() {
        assert_eq!(
            parse_algorithms("RS256, ES256,RS256").expect("valid"),
            vec![Algorithm::RS256, Algorithm::ES256]
        );
        for bad in ["", " , ", "none", "HS256", "RS256,HS512", "rs256"] {
            assert!(parse_algorithms(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_types_compare_as_media_types() {
        let default = TokenTypes::default();
        assert_eq!(TokenTypes::parse(TokenTypes::DEFAULT), Ok(default.clone()));
        for ok in [
            Some("at+jwt"),
            Some("application/at+jwt"),
            Some("AT+JWT"),
            Some("JWT"),
            Some("jwt"),
            None,
        ] {
            assert!(default.accepts(ok), "{ok:?}");
        }
        for refused in [
            Some("id+jwt"),
            Some("application/id+jwt"),
            Some("text/jwt"),
            Some("JOSE"),
            Some(""),
        ] {
            assert!(!default.accepts(refused), "{refused:?}");
        }
        let strict = TokenTypes::parse(" application/AT+JWT ").expect("valid");
        assert!(strict.accepts(Some("at+jwt")));
        assert!(!strict.accepts(Some("JWT")) && !strict.accepts(None));
        for bad in ["", " , ", "text/plain", "at jwt"] {
            assert!(TokenTypes::parse(bad).is_err(), "{bad:?}");
        }
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
    }

    #[test]
    fn only_three_base64url_segments_look_like_a_jwt() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        for not in [
            "eyJh.eyJz.",
            "a.b",
            "a.b.c.d",
            "a b.c.d",
            "dev-only-insecure-api-key",
        ] {
            assert!(!looks_like_jwt(not), "{not}");
        }
    }
}
