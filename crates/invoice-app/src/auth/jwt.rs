//! OAuth2/OIDC bearer JWTs, validated with `jsonwebtoken` against the issuer's JWKS.
//!
//! The keys come from the configured JWKS URL or from OIDC discovery under the issuer, and
//! are kept in memory. A token naming an unknown `kid` makes us fetch them again (a rotated
//! key needs no restart), but at most once per cooldown, so tokens with invented `kid`s
//! cannot make us hammer the IdP. Symmetric (`oct`) keys are never used; a token must be
//! signed with one of the configured algorithms, and with its key's own `alg` when the JWK
//! names one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use reqwest::Url;
use serde::Deserialize;

use super::{AuthError, Principal, Scopes};

/// Clock skew tolerated on `exp` and `nbf`.
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
    /// Unknown `kid`s cause at most one key fetch per this long.
    pub refresh_cooldown: Duration,
    /// Keys older than this are fetched again, so a key the IdP withdrew stops working.
    pub max_age: Duration,
}

impl JwtSettings {
    pub const DEFAULT_REFRESH_COOLDOWN: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(15 * 60);

    fn discovery_url(&self) -> Result<Url, String> {
        parse_fetch_url(&format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        ))
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

struct KeySet {
    fetched_at: Instant,
    by_kid: HashMap<String, Arc<Key>>,
}

#[derive(Default)]
struct Refresh {
    last_attempt: Option<Instant>,
    /// Found by discovery; forgotten when a fetch from it fails.
    discovered_jwks_url: Option<Url>,
}

pub(super) struct JwtVerifier {
    settings: JwtSettings,
    http: reqwest::Client,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so concurrent misses cause one fetch, not one each.
    refresh: tokio::sync::Mutex<Refresh>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
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

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
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
        Ok(JwtVerifier {
            settings,
            http,
            keys: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(Refresh::default()),
        })
    }

    pub(super) async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let invalid = AuthError::Invalid;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("the token is malformed"))?;
        if header.crit.is_some() {
            return Err(invalid("the token has critical header parameters"));
        }
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(invalid("the token's algorithm is not accepted"));
        }
        let kid = header
            .kid
            .ok_or(invalid("the token names no signing key (kid)"))?;
        let key = self.key(&kid).await?;
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

    pub(super) async fn prefetch(&self) {
        if self.current().is_none() {
            self.refresh(None).await;
        }
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        // A poisoned lock still holds a whole key set: a writer only ever swaps the Arc.
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn key(&self, kid: &str) -> Result<Arc<Key>, AuthError> {
        let current = self.current();
        if let Some(set) = &current
            && set.fetched_at.elapsed() < self.settings.max_age
            && let Some(key) = set.by_kid.get(kid)
        {
            return Ok(key.clone());
        }
        self.refresh(current.map(|s| s.fetched_at)).await;
        match self.current() {
            // A stale set still serves when the IdP cannot be reached: refusing every
            // caller during an IdP outage would be worse than a key living a little longer.
            Some(set) => set
                .by_kid
                .get(kid)
                .cloned()
                .ok_or(AuthError::Invalid("the token's signing key is unknown")),
            None => Err(AuthError::IssuerUnavailable),
        }
    }

    /// Fetches the keys unless someone else did since `seen`, or the last attempt was
    /// within the cooldown.
    async fn refresh(&self, seen: Option<Instant>) {
        let mut state = self.refresh.lock().await;
        if self.current().map(|s| s.fetched_at) != seen {
            return;
        }
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.settings.refresh_cooldown)
        {
            return;
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch(&mut state).await {
            Ok(by_kid) => {
                tracing::info!(
                    keys = by_kid.len(),
                    "fetched the token issuer's signing keys"
                );
                let set = Arc::new(KeySet {
                    fetched_at: Instant::now(),
                    by_kid,
                });
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(set);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not fetch the token issuer's signing keys");
            }
        }
    }

    async fn fetch(&self, state: &mut Refresh) -> anyhow::Result<HashMap<String, Arc<Key>>> {
        let jwks_url = match (&self.settings.jwks_url, &state.discovered_jwks_url) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                let url = self.discover().await?;
                state.discovered_jwks_url = Some(url.clone());
                url
            }
        };
        let document: JwksDocument = match self.get_json(&jwks_url).await {
            Ok(document) => document,
            Err(e) => {
                state.discovered_jwks_url = None;
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
        anyhow::ensure!(
            !by_kid.is_empty(),
            "{jwks_url} holds no signing key usable with {:?}",
            self.settings.algorithms
        );
        Ok(by_kid)
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
