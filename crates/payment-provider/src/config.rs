//! Settings from the environment, typed and validated once at start-up. A bad variable
//! stops the process with one line naming it. Secrets may come from `<NAME>_FILE`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{CallerSubjects, CallerTokens, WorkloadConfig, dev_token_allowed};
use crate::db::DbUrl;
pub use crate::env::ConfigError;
use crate::env::{self, number, secret};
use crate::faults::Faults;
use crate::telemetry::LogFormat;
use crate::tls::TlsSettings;

/// Where the accounts come from at start-up. Existing accounts are never overwritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    None,
    Demo,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// `/metrics` is served here only, off the API port.
    pub metrics_addr: SocketAddr,
    pub database_url: DbUrl,
    pub pool_size: u32,
    pub seed: Seed,
    /// Static tokens. With no workload identity either, the built-in development token,
    /// and only on a loopback `LISTEN_ADDR` (start-up warns).
    pub callers: Option<CallerTokens>,
    /// Kubernetes ServiceAccount tokens (`CALLER_SUBJECTS`, `SA_*`).
    pub workload: Option<WorkloadConfig>,
    pub faults: Faults,
    /// An in-flight idempotency claim older than this belongs to a request that died.
    pub stale_claim_after: Duration,
    pub log_format: LogFormat,
    /// Serve `POST /_pact/provider-states` (test mode; see `pact_states`).
    pub pact_states: bool,
    /// The API over TLS (`TLS_CERT_FILE`, `TLS_KEY_FILE`). Without it, plain HTTP: on a
    /// loopback `LISTEN_ADDR`, or elsewhere with `ALLOW_PLAINTEXT_HTTP=true`.
    pub tls: Option<TlsSettings>,
    /// `ALLOW_PLAINTEXT_HTTP=true`: plain HTTP off loopback, said on purpose.
    pub allow_plaintext_http: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &'static str| env::get(env, var);
        let parse = |var: &'static str, default: &str| -> Result<String, ConfigError> {
            Ok(get(var).unwrap_or_else(|| default.to_owned()))
        };
        let err = |var: &'static str| move |reason: String| ConfigError { var, reason };

        let listen_addr: SocketAddr = parse("LISTEN_ADDR", "127.0.0.1:8080")?
            .parse()
            .map_err(|e| err("LISTEN_ADDR")(format!("{e} (expected host:port)")))?;
        let metrics_addr: SocketAddr = parse("METRICS_ADDR", "127.0.0.1:9080")?
            .parse()
            .map_err(|e| err("METRICS_ADDR")(format!("{e} (expected host:port)")))?;
        if metrics_addr == listen_addr && listen_addr.port() != 0 {
            return Err(err("METRICS_ADDR")(
                "must differ from LISTEN_ADDR: metrics stay off the API port".into(),
            ));
        }
        let database_url =
            secret(env, "DATABASE_URL")?.unwrap_or_else(|| "payment-provider.db".to_owned());
        let database_url = DbUrl::parse(&database_url).map_err(err("DATABASE_URL"))?;
        let pool_size = number(
            &get,
            "DATABASE_POOL_SIZE",
            database_url.default_pool_size(),
            1..=200,
        )?;
        let seed = match parse("SEED", "demo")?.as_str() {
            "demo" => Seed::Demo,
            "none" => Seed::None,
            path => Seed::File(PathBuf::from(path)),
        };
        let callers = secret(env, "CALLER_TOKENS")?
            .map(|spec| CallerTokens::parse(&spec).map_err(err("CALLER_TOKENS")))
            .transpose()?;
        let workload = workload(&get)?;
        // The development token is public: only where nobody else can reach the port, whether
        // it stands in by default or someone listed it.
        if callers
            .as_ref()
            .is_some_and(CallerTokens::includes_dev_token)
            && !dev_token_allowed(listen_addr)
        {
            return Err(err("CALLER_TOKENS")(format!(
                "lists the public development token, and LISTEN_ADDR {listen_addr} is not a loopback address: anyone could charge with it; give every caller a token of its own"
            )));
        }
        if callers.is_none() && workload.is_none() && !dev_token_allowed(listen_addr) {
            return Err(err("CALLER_TOKENS")(format!(
                "not set, and LISTEN_ADDR {listen_addr} is not a loopback address: the development token is accepted only on loopback; set CALLER_TOKENS (or CALLER_TOKENS_FILE), or CALLER_SUBJECTS with SA_TOKEN_ISSUER"
            )));
        }
        let unavailable_rate: f64 = parse("FAULT_UNAVAILABLE_RATE", "0")?
            .parse()
            .map_err(|e| err("FAULT_UNAVAILABLE_RATE")(format!("{e}")))?;
        if !(0.0..=1.0).contains(&unavailable_rate) {
            return Err(err("FAULT_UNAVAILABLE_RATE")(
                "must be between 0 and 1".into(),
            ));
        }
        let faults = Faults {
            unavailable_rate,
            rate_limited_rate: rate(&get, "FAULT_RATE_LIMITED_RATE")?,
            latency: Duration::from_millis(number(&get, "FAULT_LATENCY_MS", 0u64, 0..=600_000)?),
            retry_after_secs: number(&get, "FAULT_RETRY_AFTER_SECS", 1u32, 0..=3600)?,
            ..Faults::default()
        };
        let stale_claim_after =
            Duration::from_secs(number(&get, "IDEMPOTENCY_STALE_SECS", 60u64, 1..=86_400)?);
        let log_format = parse("LOG_FORMAT", "auto")?
            .parse()
            .map_err(err("LOG_FORMAT"))?;

        let pact_states = match parse("PACT_PROVIDER_STATES", "off")?.as_str() {
            "off" => false,
            "on" => true,
            other => {
                return Err(err("PACT_PROVIDER_STATES")(format!(
                    "{other:?}: expected on or off"
                )));
            }
        };
        // State changes empty the ledger: never next to real data or real callers.
        if pact_states
            && (callers.is_some()
                || workload.is_some()
                || matches!(database_url, DbUrl::Postgres(_)))
        {
            return Err(err("PACT_PROVIDER_STATES")(
                "on empties the ledger at every state change: allowed only on SQLite with the development token (CALLER_TOKENS and CALLER_SUBJECTS unset)".into(),
            ));
        }

        let (tls, allow_plaintext_http) = tls(&get, listen_addr)?;

        Ok(Config {
            listen_addr,
            metrics_addr,
            database_url,
            pool_size,
            seed,
            callers,
            workload,
            faults,
            stale_claim_after,
            log_format,
            pact_states,
            tls,
            allow_plaintext_http,
        })
    }
}

/// TLS on the API port: both files or neither. Bearer tokens cross the network there, so
/// without TLS only a loopback `LISTEN_ADDR`, or `ALLOW_PLAINTEXT_HTTP=true` said on purpose
/// (something else encrypts the traffic, e.g. a service mesh's mTLS).
fn tls(
    get: &dyn Fn(&'static str) -> Option<String>,
    listen_addr: SocketAddr,
) -> Result<(Option<TlsSettings>, bool), ConfigError> {
    let err = |var: &'static str| move |reason: String| ConfigError { var, reason };
    let allow_plaintext = match get("ALLOW_PLAINTEXT_HTTP").as_deref().map(str::trim) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(err("ALLOW_PLAINTEXT_HTTP")(format!(
                "{other:?}: expected true or false"
            )));
        }
    };
    let settings = match (get("TLS_CERT_FILE"), get("TLS_KEY_FILE")) {
        (Some(cert), Some(key)) => TlsSettings::new(cert.trim(), key.trim()),
        (Some(_), None) => {
            return Err(err("TLS_KEY_FILE")(
                "required with TLS_CERT_FILE: the certificate's private key (PEM)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(err("TLS_CERT_FILE")(
                "required with TLS_KEY_FILE: the certificate chain (PEM)".into(),
            ));
        }
        (None, None) if allow_plaintext || listen_addr.ip().is_loopback() => {
            return Ok((None, allow_plaintext));
        }
        (None, None) => {
            return Err(err("TLS_CERT_FILE")(format!(
                "not set, and LISTEN_ADDR {listen_addr} is not a loopback address: callers' \
                 tokens would cross the network in clear; set TLS_CERT_FILE and TLS_KEY_FILE \
                 (PEM), or ALLOW_PLAINTEXT_HTTP=true where something else encrypts the traffic"
            )));
        }
    };
    if allow_plaintext {
        return Err(err("ALLOW_PLAINTEXT_HTTP")(
            "has no effect with TLS_CERT_FILE: the API is served over TLS only".into(),
        ));
    }
    settings.check().map_err(|e| ConfigError {
        var: e.var,
        reason: e.reason,
    })?;
    Ok((Some(settings), false))
}

/// Workload identity: on with `CALLER_SUBJECTS` and `SA_TOKEN_ISSUER` together; the other
/// `SA_*` settings alone are a mistake, named as such.
fn workload(
    get: &dyn Fn(&'static str) -> Option<String>,
) -> Result<Option<WorkloadConfig>, ConfigError> {
    let err = |var: &'static str| move |reason: String| ConfigError { var, reason };
    let subjects = get("CALLER_SUBJECTS")
        .map(|spec| CallerSubjects::parse(&spec).map_err(err("CALLER_SUBJECTS")))
        .transpose()?;
    let (subjects, issuer) = match (subjects, get("SA_TOKEN_ISSUER")) {
        (Some(subjects), Some(issuer)) => (subjects, issuer),
        (Some(_), None) => {
            return Err(err("SA_TOKEN_ISSUER")(
                "required with CALLER_SUBJECTS: the iss of the cluster's ServiceAccount tokens"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(err("CALLER_SUBJECTS")(
                "required with SA_TOKEN_ISSUER: which ServiceAccount speaks for which caller"
                    .into(),
            ));
        }
        (None, None) => {
            let settings = [
                "SA_TOKEN_AUDIENCE",
                "SA_JWKS_URL",
                "SA_JWKS_CA_FILE",
                "SA_JWKS_TOKEN_FILE",
                "SA_TOKEN_MAX_LIFETIME_SECS",
                "SA_JWKS_MAX_AGE_SECS",
            ];
            return match settings.into_iter().find(|var| get(var).is_some()) {
                Some(var) => Err(err(var)(
                    "has no effect without CALLER_SUBJECTS (which ServiceAccount speaks for which caller)".into(),
                )),
                None => Ok(None),
            };
        }
    };
    let mut config =
        WorkloadConfig::new(issuer.trim(), subjects).map_err(err("SA_TOKEN_ISSUER"))?;
    if let Some(audience) = get("SA_TOKEN_AUDIENCE") {
        config.audience = audience.trim().to_owned();
    }
    match get("SA_JWKS_URL") {
        Some(url) => {
            let url =
                reqwest::Url::parse(url.trim()).map_err(|e| err("SA_JWKS_URL")(e.to_string()))?;
            config.jwks_url = Some(url);
            config.check().map_err(err("SA_JWKS_URL"))?;
        }
        None => config
            .check()
            .map_err(|e| err("SA_TOKEN_ISSUER")(format!("{e} (or set SA_JWKS_URL)")))?,
    }
    if let Some(path) = get("SA_JWKS_CA_FILE") {
        let pem = std::fs::read(&path)
            .map_err(|e| err("SA_JWKS_CA_FILE")(format!("cannot read {path}: {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| err("SA_JWKS_CA_FILE")(format!("{path}: {e}")))?;
        if certs.is_empty() {
            return Err(err("SA_JWKS_CA_FILE")(format!(
                "{path} holds no PEM certificate"
            )));
        }
        config.ca_certificates = certs;
    }
    if let Some(path) = get("SA_JWKS_TOKEN_FILE") {
        // Read again at every fetch (it rotates); here only to fail early on a wrong path.
        std::fs::metadata(&path)
            .map_err(|e| err("SA_JWKS_TOKEN_FILE")(format!("cannot read {path}: {e}")))?;
        config.bearer_file = Some(PathBuf::from(path));
    }
    config.max_lifetime = Duration::from_secs(number(
        get,
        "SA_TOKEN_MAX_LIFETIME_SECS",
        config.max_lifetime.as_secs(),
        600..=31_536_000,
    )?);
    // At least two refreshes (every 5 minutes) fit in it, so one failed fetch is no outage.
    config.jwks_max_age = Duration::from_secs(number(
        get,
        "SA_JWKS_MAX_AGE_SECS",
        config.jwks_max_age.as_secs(),
        600..=86_400,
    )?);
    Ok(Some(config))
}

/// A share between 0 and 1, or 0 when unset.
fn rate(
    get: &dyn Fn(&'static str) -> Option<String>,
    var: &'static str,
) -> Result<f64, ConfigError> {
    let Some(raw) = get(var) else {
        return Ok(0.0);
    };
    match raw.trim().parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(ConfigError {
            var,
            reason: format!("{raw:?} is not a share between 0 and 1"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_no_configuration() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.listen_addr.port(), 8080);
        assert_eq!(c.database_url, DbUrl::Sqlite("payment-provider.db".into()));
        assert_eq!(c.seed, Seed::Demo);
        assert!(c.callers.is_none());
        assert_eq!(c.faults.unavailable_rate, 0.0);
        assert_eq!(c.faults.rate_limited_rate, 0.0);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("LISTEN_ADDR", "nope"),
            ("DATABASE_URL", "mysql://x/y"),
            ("DATABASE_POOL_SIZE", "0"),
            ("FAULT_UNAVAILABLE_RATE", "1.5"),
            ("FAULT_LATENCY_MS", "-3"),
            ("FAULT_RATE_LIMITED_RATE", "2"),
            ("FAULT_RATE_LIMITED_RATE", "NaN"),
            ("CALLER_TOKENS", "invoice-app:short"),
            ("CALLER_SUBJECTS", "invoice-app"),
            ("METRICS_ADDR", "nope"),
            ("METRICS_ADDR", "127.0.0.1:8080"),
            ("LOG_FORMAT", "xml"),
            ("PACT_PROVIDER_STATES", "yes"),
        ] {
            let e = config(&[(var, value)]).expect_err(var);
            assert_eq!(e.var, var, "{e}");
        }
    }

    #[test]
    fn pact_states_never_run_next_to_real_data_or_callers() {
        assert!(!config(&[]).expect("valid").pact_states);
        let on = ("PACT_PROVIDER_STATES", "on");
        assert!(
            config(&[on])
                .expect("SQLite, development token")
                .pact_states
        );
        for other in [
            ("DATABASE_URL", "postgres://u@h/db"),
            ("CALLER_TOKENS", "invoice-app:a-real-token-0123456789"),
        ] {
            let e = config(&[on, other]).expect_err(other.0);
            assert_eq!(e.var, "PACT_PROVIDER_STATES", "{e}");
        }
        let e = config(&[on, SUBJECTS, ISSUER]).expect_err("workload identity");
        assert_eq!(e.var, "PACT_PROVIDER_STATES", "{e}");
    }

    const SUBJECTS: (&str, &str) = (
        "CALLER_SUBJECTS",
        "invoice-app=system:serviceaccount:invoices:invoice-app",
    );
    const ISSUER: (&str, &str) = (
        "SA_TOKEN_ISSUER",
        "https://kubernetes.default.svc.cluster.local",
    );

    #[test]
    fn metrics_have_their_own_address() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9080");
        let c = config(&[("METRICS_ADDR", "0.0.0.0:9090")]).expect("valid");
        assert_eq!(c.metrics_addr.port(), 9090);
    }

    #[test]
    fn dev_token_only_on_loopback() {
        let open = ("LISTEN_ADDR", "0.0.0.0:8080");
        let e = config(&[open]).expect_err("no callers off loopback");
        assert_eq!(e.var, "CALLER_TOKENS");
        assert!(e.reason.contains("CALLER_SUBJECTS"), "{e}");
        for loopback in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:80"] {
            let c = config(&[("LISTEN_ADDR", loopback)]).expect(loopback);
            assert!(c.callers.is_none() && c.workload.is_none());
        }
        let tokens = ("CALLER_TOKENS", "invoice-app:a-real-token-0123456789");
        // (Plain HTTP off loopback only when asked for: see tls::plain_http_off_loopback_*.)
        let plain = ("ALLOW_PLAINTEXT_HTTP", "true");
        assert!(config(&[open, plain, tokens]).is_ok());
        assert!(config(&[open, plain, SUBJECTS, ISSUER]).is_ok());
        let e = config(&[open, tokens]).expect_err("plain HTTP off loopback");
        assert_eq!(e.var, "TLS_CERT_FILE", "{e}");
        // Listed by hand, the public token is still public.
        let dev = format!("invoice-app:{}", crate::auth::DEV_TOKEN);
        let e = config(&[open, ("CALLER_TOKENS", &dev)]).expect_err("public token off loopback");
        assert!(e.reason.contains("development token"), "{e}");
        assert!(
            config(&[("CALLER_TOKENS", &dev)]).is_ok(),
            "on loopback it may"
        );
    }

    #[test]
    fn workload_identity_settings() {
        let c = config(&[SUBJECTS, ISSUER]).expect("valid");
        let w = c.workload.expect("on");
        assert_eq!(w.issuer, ISSUER.1);
        assert_eq!(w.audience, "payment-provider");
        assert_eq!(w.jwks_url, None);
        assert_eq!(w.max_lifetime, Duration::from_secs(3600));
        assert_eq!(w.jwks_max_age, Duration::from_secs(3600));
        assert_eq!(
            w.subjects
                .caller_for("system:serviceaccount:invoices:invoice-app"),
            Some("invoice-app")
        );

        let dir = std::env::temp_dir().join(format!("pp-sa-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (ca, token, not_pem) = (dir.join("ca.crt"), dir.join("token"), dir.join("x"));
        std::fs::write(&ca, TEST_CA).expect("write");
        std::fs::write(&token, "a-token").expect("write");
        std::fs::write(&not_pem, "not a certificate").expect("write");
        let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
        let (ca, token, not_pem) = (path(&ca), path(&token), path(&not_pem));
        let c = config(&[
            SUBJECTS,
            // Any string may be the issuer when the keys' address is given.
            ("SA_TOKEN_ISSUER", "kubernetes/serviceaccount"),
            ("SA_TOKEN_AUDIENCE", "payments"),
            (
                "SA_JWKS_URL",
                "https://kubernetes.default.svc/openid/v1/jwks",
            ),
            ("SA_JWKS_CA_FILE", &ca),
            ("SA_JWKS_TOKEN_FILE", &token),
            ("SA_TOKEN_MAX_LIFETIME_SECS", "7200"),
            ("SA_JWKS_MAX_AGE_SECS", "900"),
        ])
        .expect("valid");
        let w = c.workload.expect("on");
        assert_eq!(w.audience, "payments");
        assert_eq!(w.ca_certificates.len(), 1);
        assert_eq!(w.max_lifetime, Duration::from_secs(7200));
        assert_eq!(w.jwks_max_age, Duration::from_secs(900));

        for (vars, var) in [
            (vec![SUBJECTS], "SA_TOKEN_ISSUER"),
            (vec![ISSUER], "CALLER_SUBJECTS"),
            (vec![("SA_JWKS_URL", "https://x/jwks")], "SA_JWKS_URL"),
            (vec![("SA_TOKEN_AUDIENCE", "x")], "SA_TOKEN_AUDIENCE"),
            // Discovery needs an https issuer; keys never travel in clear off this machine.
            (
                vec![SUBJECTS, ("SA_TOKEN_ISSUER", "kubernetes/serviceaccount")],
                "SA_TOKEN_ISSUER",
            ),
            (
                vec![SUBJECTS, ("SA_TOKEN_ISSUER", "http://10.0.0.1")],
                "SA_TOKEN_ISSUER",
            ),
            (
                vec![SUBJECTS, ISSUER, ("SA_JWKS_URL", "http://10.0.0.1/jwks")],
                "SA_JWKS_URL",
            ),
            (
                vec![SUBJECTS, ISSUER, ("SA_JWKS_URL", "not a url")],
                "SA_JWKS_URL",
            ),
            (
                vec![SUBJECTS, ISSUER, ("SA_JWKS_CA_FILE", "/nonexistent")],
                "SA_JWKS_CA_FILE",
            ),
            (
                vec![SUBJECTS, ISSUER, ("SA_JWKS_CA_FILE", &not_pem)],
                "SA_JWKS_CA_FILE",
            ),
            (
                vec![SUBJECTS, ISSUER, ("SA_JWKS_TOKEN_FILE", "/nonexistent")],
                "SA_JWKS_TOKEN_FILE",
            ),
            (
                vec![SUBJECTS, ISSUER, ("SA_TOKEN_MAX_LIFETIME_SECS", "60")],
                "SA_TOKEN_MAX_LIFETIME_SECS",
            ),
        ] {
            let e = config(&vars).expect_err(var);
            assert_eq!(e.var, var, "{vars:?}: {e}");
        }
        std::fs::remove_dir_all(dir).ok();
    }

    /// A public certificate only (its key was thrown away): something to parse.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBezCCASGgAwIBAgIUWEvN3FoQNZIKtW3V1WzrFAGf5NcwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjExMjYwMDU4MjZaGA8yMTI2MTEwMjAw
NTgyNlowEjEQMA4GA1UEAwwHdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABPGwCZNoJTvK1W/x+oYWNFf+rR86OF0finmgf81Ggq5arSpve6Qsj67TCRcl
HREzkJ6PHZ/+FJ0cUWmXI3XN/R+jUzBRMB0GA1UdDgQWBBTmDv6SW80IbyO/dMvz
mWcElTi9pDAfBgNVHSMEGDAWgBTmDv6SW80IbyO/dMvzmWcElTi9pDAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIGdWSZEnIcMzSJZW1boZKdrwi9Xn
QibPzZV3uXu+aspaAiEA++quACU2Qc/7fsxKDrkCY0+IAxOp/yv6CJVG41cIwgE=
-----END CERTIFICATE-----
";

    #[test]
    fn secrets_come_from_files() {
        let dir = std::env::temp_dir().join(format!("pp-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("tokens");
        std::fs::write(&file, "invoice-app:from-a-file-0123456789\n").expect("write");
        let c = config(&[("CALLER_TOKENS_FILE", file.to_str().expect("utf-8"))]).expect("valid");
        let callers = c.callers.expect("tokens set");
        assert_eq!(
            callers.authenticate("from-a-file-0123456789"),
            Some("invoice-app")
        );
        let both = config(&[
            ("CALLER_TOKENS", "a:bbbbbbbbbbbbbbbbbb"),
            ("CALLER_TOKENS_FILE", "/x"),
        ]);
        assert!(both.is_err());
        let missing =
            config(&[("CALLER_TOKENS_FILE", "/nonexistent/tokens")]).expect_err("missing file");
        assert_eq!(missing.var, "CALLER_TOKENS");
        std::fs::remove_dir_all(dir).ok();
    }
}
