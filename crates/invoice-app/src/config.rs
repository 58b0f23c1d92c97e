//! Settings from the environment, typed and validated once at start-up. A bad variable
//! stops the process with one line naming it. Secrets may come from `<NAME>_FILE`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::auth::{AuthSettings, is_loopback};
use crate::db::{self, DbUrl};
use crate::domain::DunningSchedule;
pub use crate::env::ConfigError;
use crate::env::{self, number, secret};
use crate::telemetry::LogFormat;

/// The provider's development token, accepted by a payment-provider started without
/// configuration. Start-up warns when it is used.
pub const DEV_PROVIDER_TOKEN: &str = "dev-only-insecure-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    None,
    /// A few dozen pending invoices for payment-provider's demo customers, into an empty table.
    Demo,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// `/metrics` only, apart from the API, so that only Prometheus need reach it.
    pub metrics_addr: SocketAddr,
    /// Who may call the API (`API_KEYS`, `API_AUTH_*`), as auth reads it.
    pub auth: AuthSettings,
    pub database_url: DbUrl,
    pub pool_size: u32,
    /// PostgreSQL only: how long a session may wait on a lock, a statement, an idle
    /// transaction.
    pub db_limits: db::SessionLimits,
    pub seed: Seed,
    pub provider_url: String,
    /// `None` means the development token (start-up warns).
    pub provider_token: Option<SecretString>,
    /// `PAYMENT_PROVIDER_TOKEN_FILE`: read again when it changes (rotated tokens).
    pub provider_token_file: Option<std::path::PathBuf>,
    /// `PAYMENT_PROVIDER_CA_FILE`: the CAs trusted for an https:// provider instead of the
    /// system's; read again when it changes.
    pub provider_ca_file: Option<std::path::PathBuf>,
    /// `None` when the in-process schedule is off.
    pub pay_schedule: Option<cron::Schedule>,
    /// `DAILY_SCHEDULE`: the daily run (past-due retries that are due, then
    /// reconciliation); `None` when it is off in this process.
    pub daily_schedule: Option<cron::Schedule>,
    pub pay_concurrency: usize,
    /// Pay runs this process works on at once (API, schedule and CLI together).
    pub pay_max_runs: usize,
    pub charge_timeout: Duration,
    pub retry_max_elapsed: Duration,
    pub claim_lease: Duration,
    /// How long an `Idempotency-Key` of `POST /invoices` is kept (at least a day).
    pub idempotency_key_retention: Duration,
    /// `DUNNING_SCHEDULE`: when a soft-declined invoice is tried again, counted from its
    /// first decline (`3d,5d,7d`).
    pub dunning_schedule: DunningSchedule,
    /// `DEV_CLOCK_SHIFT`: how far ahead of this machine's clock the local demo's SQLite
    /// database reads (e.g. `4d`, to reach a dunning retry); zero unless set.
    pub dev_clock_shift: chrono::TimeDelta,
    pub log_format: LogFormat,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &'static str| env::get(env, var);
        let text =
            |var: &'static str, default: &str| get(var).unwrap_or_else(|| default.to_owned());
        let err = |var: &'static str| move |reason: String| ConfigError { var, reason };

        let listen_addr = text("LISTEN_ADDR", "127.0.0.1:8081")
            .parse()
            .map_err(|e| err("LISTEN_ADDR")(format!("{e} (expected host:port)")))?;
        let metrics_addr = text("METRICS_ADDR", "127.0.0.1:9081")
            .parse()
            .map_err(|e| err("METRICS_ADDR")(format!("{e} (expected host:port)")))?;
        let auth = AuthSettings::from_lookup(env)?;
        let database_url =
            secret(env, "DATABASE_URL")?.unwrap_or_else(|| "invoice-app.db".to_owned());
        let database_url = DbUrl::parse(&database_url).map_err(err("DATABASE_URL"))?;
        let pool_size = number(
            &get,
            "DATABASE_POOL_SIZE",
            database_url.default_pool_size(),
            1..=200,
        )?;
        let ms = |var: &'static str, default: u64| {
            number(&get, var, default, 100..=3_600_000).map(Duration::from_millis)
        };
        let db_limits = db::SessionLimits {
            lock_timeout: ms("DATABASE_LOCK_TIMEOUT_MS", 5_000)?,
            statement_timeout: ms("DATABASE_STATEMENT_TIMEOUT_MS", 60_000)?,
            idle_in_transaction_timeout: ms("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", 30_000)?,
        };
        let seed = match text("SEED", "demo").as_str() {
            "demo" => Seed::Demo,
            "none" => Seed::None,
            other => return Err(err("SEED")(format!("{other:?} is not one of demo, none"))),
        };
        let provider_url = text("PAYMENT_PROVIDER_URL", "http://127.0.0.1:8080");
        if !(provider_url.starts_with("http://") || provider_url.starts_with("https://")) {
            return Err(err("PAYMENT_PROVIDER_URL")(
                "expected an http:// or https:// URL".into(),
            ));
        }
        let provider_ca_file = provider_transport(&get, &provider_url)?;
        let provider_token = secret(env, "PAYMENT_PROVIDER_TOKEN")?.map(SecretString::from);
        let provider_token_file = get("PAYMENT_PROVIDER_TOKEN_FILE").map(Into::into);
        // The development token is payment-provider's default on loopback only: sent to a
        // provider anywhere else it would be refused at the first charge, or worse, accepted
        // by one misconfigured into demo mode. Say so at start-up instead.
        if provider_token.is_none()
            && provider_token_file.is_none()
            && !reqwest::Url::parse(&provider_url).is_ok_and(|url| is_loopback(&url))
        {
            return Err(err("PAYMENT_PROVIDER_TOKEN")(format!(
                "neither it nor PAYMENT_PROVIDER_TOKEN_FILE is set and PAYMENT_PROVIDER_URL \
                 {provider_url} is not on loopback: set the credential invoice-app presents \
                 (PAYMENT_PROVIDER_TOKEN={DEV_PROVIDER_TOKEN} sends the development token, \
                 on purpose)"
            )));
        }
        let schedule = |var: &'static str, default: &str| match text(var, default).as_str() {
            "off" => Ok(None),
            expr => cron::Schedule::from_str(expr).map(Some).map_err(|e| {
                err(var)(format!(
                    "{e} (expected `sec min hour day month weekday`, or off)"
                ))
            }),
        };
        let pay_schedule = schedule("PAY_SCHEDULE", "0 0 0 1 * *")?;
        // 06:00, hours after the monthly run: a decline at its start is due again on the
        // third day after by then, not seconds after the daily run looked.
        let daily_schedule = schedule("DAILY_SCHEDULE", "0 0 6 * * *")?;
        let retry_max_elapsed =
            Duration::from_secs(number(&get, "RETRY_MAX_ELAPSED_SECS", 30, 1..=3600)?);
        let charge_timeout =
            Duration::from_millis(number(&get, "CHARGE_TIMEOUT_MS", 5000, 100..=120_000)?);
        let claim_lease = Duration::from_secs(number(&get, "CLAIM_LEASE_SECS", 300, 10..=86_400)?);
        // A claim must outlive the work done under it, or a second worker would take over
        // an invoice that is still being charged (harmless, but wasted). It is renewed as
        // each call starts; no call starts after the budget, and a call ends within one
        // timeout: so between renewals at most budget + one timeout pass, and the second
        // timeout is the margin for recording the result.
        if claim_lease < retry_max_elapsed + charge_timeout * 2 {
            return Err(err("CLAIM_LEASE_SECS")(
                "must exceed RETRY_MAX_ELAPSED_SECS plus two charge timeouts".into(),
            ));
        }
        let dev_clock_shift = get("DEV_CLOCK_SHIFT")
            .map(|text| dev_clock_shift(&text, &database_url, listen_addr))
            .transpose()
            .map_err(err("DEV_CLOCK_SHIFT"))?
            .unwrap_or_default();
        Ok(Config {
            dev_clock_shift,
            listen_addr,
            metrics_addr,
            auth,
            database_url,
            pool_size,
            db_limits,
            seed,
            provider_url,
            provider_token,
            provider_token_file,
            provider_ca_file,
            pay_schedule,
            daily_schedule,
            pay_concurrency: number(&get, "PAY_CONCURRENCY", 16, 1..=256)?,
            pay_max_runs: number(&get, "PAY_MAX_RUNS", 4, 1..=64)?,
            charge_timeout,
            retry_max_elapsed,
            claim_lease,
            idempotency_key_retention: Duration::from_secs(
                3600 * number(&get, "IDEMPOTENCY_KEY_RETENTION_HOURS", 24, 24..=8760)?,
            ),
            dunning_schedule: get("DUNNING_SCHEDULE")
                .map(|text| DunningSchedule::parse(&text))
                .transpose()
                .map_err(err("DUNNING_SCHEDULE"))?
                .unwrap_or_default(),
            log_format: text("LOG_FORMAT", "auto")
                .parse()
                .map_err(err("LOG_FORMAT"))?,
        })
    }
}

impl Config {
    /// Whether the API's only credential is the well-known development key (auth's rule,
    /// over this listen address).
    pub fn uses_dev_api_key(&self) -> Result<bool, ConfigError> {
        self.auth.uses_dev_api_key(self.listen_addr)
    }
}

/// How the provider is reached: over https (trusting `PAYMENT_PROVIDER_CA_FILE` when set, the
/// system's roots otherwise), or over plain http to loopback only unless
/// `PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP=true` says so on purpose (a service mesh encrypts
/// the traffic): the bearer token travels with every charge. The CA file, if any.
fn provider_transport(
    get: &dyn Fn(&'static str) -> Option<String>,
    provider_url: &str,
) -> Result<Option<std::path::PathBuf>, ConfigError> {
    let err = |var: &'static str| move |reason: String| ConfigError { var, reason };
    let url = reqwest::Url::parse(provider_url)
        .map_err(|e| err("PAYMENT_PROVIDER_URL")(format!("{e} (expected an https:// URL)")))?;
    let allow_plaintext = match get("PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP")
        .as_deref()
        .map(str::trim)
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(err("PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP")(format!(
                "{other:?}: expected true or false"
            )));
        }
    };
    let ca_file = get("PAYMENT_PROVIDER_CA_FILE").map(|path| std::path::PathBuf::from(path.trim()));
    match url.scheme() {
        "https" => {
            if allow_plaintext {
                return Err(err("PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP")(
                    "has no effect with an https:// PAYMENT_PROVIDER_URL".into(),
                ));
            }
        }
        _ => {
            if ca_file.is_some() {
                return Err(err("PAYMENT_PROVIDER_CA_FILE")(format!(
                    "has no effect with PAYMENT_PROVIDER_URL {provider_url}: use https://"
                )));
            }
            if !allow_plaintext && !is_loopback(&url) {
                return Err(err("PAYMENT_PROVIDER_URL")(format!(
                    "{provider_url} is plain http and not on loopback: the bearer token would \
                     cross the network in clear; use https:// (PAYMENT_PROVIDER_CA_FILE for a \
                     private CA), or PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP=true where something \
                     else encrypts the traffic"
                )));
            }
        }
    }
    if let Some(path) = &ca_file {
        crate::payment_client::read_ca_bundle(path).map_err(err("PAYMENT_PROVIDER_CA_FILE"))?;
    }
    Ok(ca_file)
}

/// A shift of the clock for the local demo only: production's clock is PostgreSQL's and
/// cannot be moved from here, so it is refused unless the database is SQLite and the API
/// listens on loopback (the demo's set-up; the chart refuses the variable too).
fn dev_clock_shift(
    text: &str,
    database_url: &DbUrl,
    listen_addr: SocketAddr,
) -> Result<chrono::TimeDelta, String> {
    if !matches!(database_url, DbUrl::Sqlite(_)) || !listen_addr.ip().is_loopback() {
        return Err(
            "only for the local demo: it needs a SQLite DATABASE_URL and a loopback LISTEN_ADDR"
                .into(),
        );
    }
    let shift = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (expected a duration such as 4d)"))?;
    chrono::TimeDelta::from_std(shift)
        .ok()
        .filter(|shift| *shift <= chrono::TimeDelta::days(366))
        .ok_or_else(|| "at most 366 days".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenTypes;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn the_dev_provider_token_is_never_guessed_for_a_provider_off_loopback() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            let c = config(&[("PAYMENT_PROVIDER_URL", url)]).expect("loopback");
            assert!(c.provider_token.is_none());
        }
        for url in [
            "https://payment-provider.payments.svc:8080",
            "https://10.0.0.7:8080",
            "https://127.0.0.1.example.com",
        ] {
            let e = config(&[("PAYMENT_PROVIDER_URL", url)]).expect_err(url);
            assert_eq!(e.var, "PAYMENT_PROVIDER_TOKEN");
            assert!(e.reason.contains("not on loopback"), "{}", e.reason);
            let explicit = [
                ("PAYMENT_PROVIDER_URL", url),
                ("PAYMENT_PROVIDER_TOKEN", DEV_PROVIDER_TOKEN),
            ];
            config(&explicit).expect("an explicit token is the operator's choice");
            let path = std::env::temp_dir().join(format!("pp-token-{}", std::process::id()));
            std::fs::write(&path, "a-token-from-a-file").expect("written");
            let path = path.to_string_lossy().into_owned();
            let file = [
                ("PAYMENT_PROVIDER_URL", url),
                ("PAYMENT_PROVIDER_TOKEN_FILE", path.as_str()),
            ];
            config(&file).expect("a token file");
        }
    }

    #[test]
    fn the_provider_is_reached_over_tls_off_loopback() {
        let token = ("PAYMENT_PROVIDER_TOKEN", "a-static-token-0123456789");
        let allow = ("PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP", "true");
        for url in [
            "http://payment-provider.payments.svc.cluster.local:8080",
            "http://10.0.0.7:8080",
            "http://localhost.example.com",
        ] {
            let e = config(&[("PAYMENT_PROVIDER_URL", url), token]).expect_err(url);
            assert_eq!(e.var, "PAYMENT_PROVIDER_URL", "{e}");
            assert!(
                e.reason.contains("PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP"),
                "{e}"
            );
            config(&[("PAYMENT_PROVIDER_URL", url), token, allow]).expect("said on purpose");
        }
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            config(&[("PAYMENT_PROVIDER_URL", url)]).expect("loopback");
        }
        let https = (
            "PAYMENT_PROVIDER_URL",
            "https://payment-provider.payments.svc:8443",
        );
        let c = config(&[https, token]).expect("system roots");
        assert_eq!(c.provider_ca_file, None);

        let dir = std::env::temp_dir().join(format!("ia-ca-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (ca, not_pem) = (dir.join("ca.crt"), dir.join("x"));
        std::fs::write(&ca, TEST_CA).expect("write");
        std::fs::write(&not_pem, "not a certificate").expect("write");
        let (ca, not_pem) = (ca.to_string_lossy(), not_pem.to_string_lossy());
        let c = config(&[https, token, ("PAYMENT_PROVIDER_CA_FILE", &ca)]).expect("a CA file");
        assert_eq!(
            c.provider_ca_file.as_deref(),
            Some(std::path::Path::new(&*ca))
        );
        for (vars, var) in [
            (
                vec![https, token, ("PAYMENT_PROVIDER_CA_FILE", &*not_pem)],
                "PAYMENT_PROVIDER_CA_FILE",
            ),
            (
                vec![https, token, ("PAYMENT_PROVIDER_CA_FILE", "/nonexistent")],
                "PAYMENT_PROVIDER_CA_FILE",
            ),
            (
                vec![https, token, allow],
                "PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP",
            ),
            (
                vec![("PAYMENT_PROVIDER_CA_FILE", &*ca)],
                "PAYMENT_PROVIDER_CA_FILE",
            ),
            (
                vec![("PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP", "yes")],
                "PAYMENT_PROVIDER_ALLOW_PLAINTEXT_HTTP",
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
    fn defaults_need_no_configuration() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.listen_addr.port(), 8081);
        assert_eq!(c.provider_url, "http://127.0.0.1:8080");
        assert!(c.pay_schedule.is_some());
        assert_eq!(c.seed, Seed::Demo);
    }

    #[test]
    fn monthly_schedule_fires_on_the_first() {
        let c = config(&[]).expect("valid");
        let schedule = c.pay_schedule.expect("on by default");
        for next in schedule.upcoming(chrono::Utc).take(3) {
            assert_eq!(chrono::Datelike::day(&next), 1);
        }
        assert!(
            config(&[("PAY_SCHEDULE", "off")])
                .expect("valid")
                .pay_schedule
                .is_none()
        );
    }

    #[test]
    fn the_clock_shifts_only_for_a_local_sqlite_demo() {
        let shifted = config(&[("DEV_CLOCK_SHIFT", "4d")]).expect("the demo's set-up");
        assert_eq!(shifted.dev_clock_shift, chrono::TimeDelta::days(4));
        assert_eq!(
            config(&[]).expect("valid").dev_clock_shift,
            chrono::TimeDelta::zero()
        );
        for refused in [
            vec![("DATABASE_URL", "postgres://db.internal/invoices")],
            vec![("LISTEN_ADDR", "0.0.0.0:8081")],
        ] {
            let mut env = refused.clone();
            env.push(("DEV_CLOCK_SHIFT", "4d"));
            let e = config(&env).expect_err("refused outside the demo");
            assert_eq!(e.var, "DEV_CLOCK_SHIFT", "{e}");
        }
    }

    #[test]
    fn daily_schedule_fires_every_day_after_the_monthly_run() {
        let c = config(&[]).expect("valid");
        let schedule = c.daily_schedule.expect("on by default");
        let days: Vec<_> = schedule.upcoming(chrono::Utc).take(3).collect();
        for pair in days.windows(2) {
            assert_eq!(pair[1] - pair[0], chrono::TimeDelta::days(1));
        }
        assert_eq!(chrono::Timelike::hour(&days[0]), 6);
        assert!(
            config(&[("DAILY_SCHEDULE", "off")])
                .expect("valid")
                .daily_schedule
                .is_none()
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("LISTEN_ADDR", "nope"),
            ("DATABASE_URL", "mysql://x/y"),
            ("PAYMENT_PROVIDER_URL", "ftp://x"),
            ("PAY_SCHEDULE", "every tuesday"),
            ("DAILY_SCHEDULE", "daily"),
            ("DEV_CLOCK_SHIFT", "4 days later"),
            ("PAY_CONCURRENCY", "0"),
            ("PAY_MAX_RUNS", "0"),
            ("CHARGE_TIMEOUT_MS", "abc"),
            ("CLAIM_LEASE_SECS", "10"),
            ("SEED", "lots"),
            ("METRICS_ADDR", "9081"),
            ("API_KEYS", "[]"),
            ("API_AUTH_ALGORITHMS", "RS256,HS256"),
            ("API_AUTH_AUDIENCE", "invoice-app"),
            ("API_AUTH_JWKS_URL", "https://idp.example.com/keys"),
        ] {
            let e = config(&[(var, value)]).expect_err(var);
            assert_eq!(e.var, var, "{e}");
        }
    }

    #[test]
    fn the_dev_key_serves_loopback_only() {
        let local = config(&[]).expect("valid");
        assert_eq!(local.metrics_addr.to_string(), "127.0.0.1:9081");
        assert!(local.uses_dev_api_key().expect("loopback"));
        let open = config(&[("LISTEN_ADDR", "0.0.0.0:8080")]).expect("parses");
        let e = open.uses_dev_api_key().expect_err("not loopback");
        assert_eq!(e.var, "API_AUTH_ISSUER");
        assert!(e.reason.contains("API_KEYS"), "{e}");
        let keys = format!(
            r#"[{{"client":"ci","scopes":["invoices:read"],"sha256":"{}"}}]"#,
            "ab".repeat(32)
        );
        let with_keys =
            config(&[("LISTEN_ADDR", "0.0.0.0:8080"), ("API_KEYS", &keys)]).expect("valid");
        assert!(!with_keys.uses_dev_api_key().expect("configured"));
        let with_issuer = config(&[
            ("LISTEN_ADDR", "[::]:8080"),
            ("API_AUTH_ISSUER", "https://idp.example.com/realms/x"),
            ("API_AUTH_AUDIENCE", "invoice-app"),
        ])
        .expect("valid");
        assert!(!with_issuer.uses_dev_api_key().expect("configured"));
        assert!(
            config(&[("LISTEN_ADDR", "[::1]:8080")])
                .expect("valid")
                .uses_dev_api_key()
                .expect("IPv6 loopback")
        );
    }

    #[test]
    fn an_issuer_needs_an_audience_and_a_safe_place_for_its_keys() {
        let e = config(&[("API_AUTH_ISSUER", "https://idp.example.com")]).expect_err("no aud");
        assert_eq!(e.var, "API_AUTH_AUDIENCE");
        let e = config(&[
            ("API_AUTH_ISSUER", "http://idp.example.com"),
            ("API_AUTH_AUDIENCE", "invoice-app"),
        ])
        .expect_err("keys in the clear");
        assert_eq!(e.var, "API_AUTH_ISSUER");
        // An issuer that is no URL is fine when the keys come from elsewhere.
        let c = config(&[
            ("API_AUTH_ISSUER", "kubernetes/serviceaccount"),
            ("API_AUTH_AUDIENCE", "invoice-app"),
            ("API_AUTH_JWKS_URL", "https://idp.example.com/keys"),
        ])
        .expect("valid");
        let jwt = c.auth.jwt.expect("configured");
        assert_eq!(jwt.algorithms.len(), 2, "RS256 and ES256 by default");
    }

    #[test]
    fn access_token_profile_settings() {
        let issuer = [
            ("API_AUTH_ISSUER", "https://idp.example.com"),
            ("API_AUTH_AUDIENCE", "invoice-app"),
        ];
        let jwt = config(&issuer).expect("valid").auth.jwt.expect("issuer");
        assert_eq!(jwt.token_types, TokenTypes::default());
        assert_eq!(jwt.max_lifetime, Duration::from_secs(86_400));
        assert_eq!(jwt.max_age, Duration::from_secs(3600));
        let set = [
            ("API_AUTH_TOKEN_TYPES", "at+jwt"),
            ("API_AUTH_MAX_TOKEN_LIFETIME_SECS", "3600"),
            ("API_AUTH_JWKS_MAX_AGE_SECS", "7200"),
        ];
        let jwt = config(&[&issuer[..], &set[..]].concat())
            .expect("valid")
            .auth
            .jwt
            .expect("issuer");
        assert_eq!(jwt.token_types, TokenTypes::parse("at+jwt").expect("valid"));
        assert_eq!(jwt.max_lifetime, Duration::from_secs(3600));
        assert_eq!(jwt.max_age, Duration::from_secs(7200));
        for (var, value) in [
            ("API_AUTH_TOKEN_TYPES", "text/plain"),
            ("API_AUTH_MAX_TOKEN_LIFETIME_SECS", "31536000"),
            ("API_AUTH_JWKS_MAX_AGE_SECS", "60"),
        ] {
            let e = config(&[&issuer[..], &[(var, value)]].concat()).expect_err(var);
            assert_eq!(e.var, var, "{e}");
            // Without an issuer they do nothing, which is a mistake worth naming.
            assert_eq!(config(&[(var, value)]).expect_err(var).var, var);
        }
    }

    #[test]
    fn idempotency_keys_are_kept_at_least_a_day() {
        let hours = |c: Config| c.idempotency_key_retention.as_secs() / 3600;
        assert_eq!(hours(config(&[]).expect("default")), 24);
        let week = [("IDEMPOTENCY_KEY_RETENTION_HOURS", "168")];
        assert_eq!(hours(config(&week).expect("a week")), 168);
        for short in ["23", "0", "8761", "1.5"] {
            let e = config(&[("IDEMPOTENCY_KEY_RETENTION_HOURS", short)]).expect_err(short);
            assert_eq!(e.var, "IDEMPOTENCY_KEY_RETENTION_HOURS");
        }
    }

    #[test]
    fn token_never_shows_in_debug() {
        let c = config(&[("PAYMENT_PROVIDER_TOKEN", "very-secret-token-value")]).expect("valid");
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
