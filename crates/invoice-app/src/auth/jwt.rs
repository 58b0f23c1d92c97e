//! OAuth2/OIDC bearer JWTs, validated with `jsonwebtoken` against the issuer's keys (kept
//! by [`super::jwks`]), and held to RFC 9068's access-token profile where common IdPs allow:
//! an accepted `typ`, `iss` the issuer as one string, and a bounded lifetime (`iat` not in
//! the future). A token must be signed with one of the configured algorithms, and with its
//! key's own `alg` when the JWK names one.
//!
//! payment-provider's `auth::workload` is the same step for its ServiceAccount tokens, over
//! a fork of the same key cache (README, "Deliberate forks").

use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use reqwest::Url;
use serde::Deserialize;

use super::jwks::{CachePolicy, JwksSource, KeyCache, KeyError, discovery_url};
use super::{AuthError, Principal, Scopes};

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
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
pub(super) fn parse_algorithms(list: &str) -> Result<Vec<Algorithm>, String> {
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
            discovery_url(&settings.issuer)?;
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // A redirect could lead from https to somewhere else entirely.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client for the JWKS: {e}"))?;
        let source = JwksSource::new(
            http,
            &settings.issuer,
            settings.jwks_url.clone(),
            settings.algorithms.clone(),
        );
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
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
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
