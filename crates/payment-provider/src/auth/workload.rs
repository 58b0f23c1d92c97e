//! Workload identity: a Kubernetes projected ServiceAccount token (a JWT the API server
//! signs) names its ServiceAccount in `sub`, and `CALLER_SUBJECTS` says which caller that
//! ServiceAccount speaks for. The token is checked offline against the issuer's keys:
//! signature (RS256 or ES256 only, the algorithm the key's own type implies), `iss` (one
//! string), `aud`, `exp` and `nbf` with a small leeway, and a lifetime no longer than
//! allowed. What a refusal quotes of the token is cut short: it goes to the log, and the
//! token is the caller's to make as long as it likes.
//!
//! `sub` is enough: the API server sets it to `system:serviceaccount:<ns>:<name>` from the
//! ServiceAccount it signed for, so the `kubernetes.io` claims (namespace, name, uids of the
//! ServiceAccount and pod) only repeat it. Their uids would tell a ServiceAccount deleted
//! and re-created under the same name, but whoever may do that in the caller's namespace
//! is trusted by that namespace anyway; and a bound token's revocation (its pod deleted)
//! is only visible to the API server, which is why lifetimes are kept short instead.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use reqwest::Url;
use serde::Deserialize;

use super::CallerSubjects;
use super::jwks::{CachePolicy, JwksSource, KeyCache, KeyError, check_fetch_url, discovery_url};

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;
/// What the API server signs with; never `none`, never an HMAC.
const ALLOWED: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];
/// How much of a token's own text a refusal quotes.
const QUOTE_CHARS: usize = 64;

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Expected `iss`, e.g. `https://kubernetes.default.svc.cluster.local`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    pub subjects: CallerSubjects,
    /// Where the keys are; `None` means OIDC discovery at the issuer.
    pub jwks_url: Option<Url>,
    /// Trusted roots for the key fetch instead of the system's (the cluster's CA).
    pub ca_certificates: Vec<reqwest::Certificate>,
    /// Bearer token sent with the key fetch (the API server wants one).
    pub bearer_file: Option<PathBuf>,
    /// A token whose `exp - iat` is longer than this is refused.
    pub max_lifetime: Duration,
    /// Keys older than this are fetched again in the background (removed keys stop
    /// working), serving until then.
    pub jwks_refresh_after: Duration,
    /// Keys older than this are not used: tokens wait for a successful fetch (503 until).
    pub jwks_max_age: Duration,
    /// At most one fetch per this interval, whatever tokens arrive.
    pub jwks_min_refresh: Duration,
    /// How long a token without a usable key waits for the fetch in flight.
    pub jwks_max_wait: Duration,
}

impl WorkloadConfig {
    /// The defaults, for an issuer whose keys are found by discovery.
    pub fn new(issuer: &str, subjects: CallerSubjects) -> Result<Self, String> {
        if issuer.trim().is_empty() {
            return Err("the issuer is empty".into());
        }
        Ok(WorkloadConfig {
            issuer: issuer.to_owned(),
            audience: "payment-provider".to_owned(),
            subjects,
            jwks_url: None,
            ca_certificates: Vec::new(),
            bearer_file: None,
            // What the chart mounts; a leaked token is useless within the hour.
            max_lifetime: Duration::from_secs(3600),
            jwks_refresh_after: Duration::from_secs(300),
            jwks_max_age: Duration::from_secs(3600),
            jwks_min_refresh: Duration::from_secs(10),
            // Far below a caller's timeout: a hanging issuer must not stall charges.
            jwks_max_wait: Duration::from_millis(250),
        })
    }

    /// Where the keys will be fetched from, checked at start-up.
    pub fn check(&self) -> Result<(), String> {
        match &self.jwks_url {
            Some(url) => check_fetch_url(url),
            None => discovery_url(&self.issuer).map(drop),
        }
    }
}

/// Why a ServiceAccount token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{0}")]
    Invalid(String),
    /// The issuer's keys could not be had: our outage, not the caller's mistake.
    #[error("{0}")]
    KeysUnavailable(String),
}

/// The claims we act on; the rest are checked by `Validation` or ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// `Validation` would take a list that includes the issuer; only a string is.
    iss: serde_json::Value,
    iat: u64,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
}

pub struct WorkloadIdentity {
    keys: KeyCache,
    issuer: String,
    audience: String,
    subjects: CallerSubjects,
    max_lifetime: Duration,
}

impl std::fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl WorkloadIdentity {
    pub fn new(config: WorkloadConfig) -> anyhow::Result<Self> {
        // One crypto backend for the process, even if another crate turns on a second one.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        config.check().map_err(anyhow::Error::msg)?;
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            // A redirect would carry the bearer somewhere we did not configure.
            .redirect(reqwest::redirect::Policy::none());
        if !config.ca_certificates.is_empty() {
            http = http.tls_built_in_root_certs(false);
            for cert in config.ca_certificates {
                http = http.add_root_certificate(cert);
            }
        }
        let source = JwksSource {
            http: http.build()?,
            issuer: config.issuer.clone(),
            jwks_url: config.jwks_url,
            bearer_file: config.bearer_file,
        };
        Ok(WorkloadIdentity {
            keys: KeyCache::new(
                source,
                CachePolicy {
                    refresh_after: config.jwks_refresh_after,
                    max_age: config.jwks_max_age,
                    min_interval: config.jwks_min_refresh,
                    max_wait: config.jwks_max_wait,
                },
            ),
            issuer: config.issuer,
            audience: config.audience,
            subjects: config.subjects,
            max_lifetime: config.max_lifetime,
        })
    }

    /// The caller this token's ServiceAccount speaks for.
    pub async fn authenticate(&self, token: &str) -> Result<String, WorkloadError> {
        let invalid = |reason: String| WorkloadError::Invalid(reason);
        // `alg: none` and unknown algorithms already fail here.
        let header = decode_header(token)
            .map_err(|e| invalid(format!("header: {}", quote(&e.to_string()))))?;
        if !ALLOWED.contains(&header.alg) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        // RFC 7515: a recipient must refuse extensions marked critical it does not know,
        // and it knows none.
        if header.crit.is_some() {
            return Err(invalid(
                "critical header parameters are not understood".into(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid("no kid in the header".into()))?;
        let key = self.keys.key(&kid).await.map_err(|e| match e {
            KeyError::UnknownKid => invalid(format!("unknown key id {}", quote(&kid))),
            KeyError::Unavailable => WorkloadError::KeysUnavailable(
                "the service-account issuer's keys could not be fetched within their maximum age"
                    .into(),
            ),
        })?;
        // A token may not pick the algorithm a key is used with.
        if key.alg != header.alg {
            return Err(invalid(format!(
                "key {} is for {:?}, the token says {:?}",
                quote(&kid),
                key.alg,
                header.alg
            )));
        }
        let mut validation = Validation::new(key.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| invalid(quote(&e.to_string())))?
            .claims;
        if claims.iss.as_str() != Some(self.issuer.as_str()) {
            return Err(invalid("iss is not the issuer as one string".into()));
        }
        let now = jsonwebtoken::get_current_timestamp();
        if claims.iat > now + LEEWAY_SECS {
            return Err(invalid("issued in the future".into()));
        }
        if claims.iat > claims.exp {
            return Err(invalid("expires before it was issued".into()));
        }
        // Valid from after it expires: never valid, though the leeway would let it pass.
        if claims.nbf.is_some_and(|nbf| nbf > claims.exp) {
            return Err(invalid("valid only after it expires".into()));
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime.as_secs() {
            return Err(invalid(format!(
                "lives {} s, longer than the {} s allowed",
                claims.exp.saturating_sub(claims.iat),
                self.max_lifetime.as_secs()
            )));
        }
        self.subjects
            .caller_for(&claims.sub)
            .map(str::to_owned)
            .ok_or_else(|| {
                invalid(format!(
                    "subject {} is not a configured caller",
                    quote(&claims.sub)
                ))
            })
    }
}

/// `text` quoted for a log line: escaped, and cut to its first [`QUOTE_CHARS`] characters
/// with its length, so a made-up 20 KB key id is a line, not a flood.
fn quote(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= QUOTE_CHARS {
        return format!("{text:?}");
    }
    let prefix: String = text.chars().take(QUOTE_CHARS).collect();
    format!("{prefix:?}… ({chars} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_escaped() {
        assert_eq!(quote("kid-1"), "\"kid-1\"");
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "k".repeat(20_000);
        let quoted = quote(&long);
        assert!(quoted.len() < 100, "{quoted}");
        assert!(quoted.ends_with("… (20000 characters)"), "{quoted}");
    }
}
