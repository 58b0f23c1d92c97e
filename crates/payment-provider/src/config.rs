//! Settings from the environment, typed and validated once at start-up. A bad variable
//! stops the process with one line naming it. Secrets may come from `<NAME>_FILE`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::CallerTokens;
use crate::db::DbUrl;
use crate::faults::Faults;
use crate::telemetry::LogFormat;

#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

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
    pub database_url: DbUrl,
    pub pool_size: u32,
    pub seed: Seed,
    /// `None` means the built-in development token (start-up warns).
    pub callers: Option<CallerTokens>,
    pub faults: Faults,
    /// An in-flight idempotency claim older than this belongs to a request that died.
    pub stale_claim_after: Duration,
    pub log_format: LogFormat,
    /// Serve `POST /_pact/provider-states` (test mode; see `pact_states`).
    pub pact_states: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &'static str| env(var).filter(|v| !v.trim().is_empty());
        let parse = |var: &'static str, default: &str| -> Result<String, ConfigError> {
            Ok(get(var).unwrap_or_else(|| default.to_owned()))
        };
        let err = |var: &'static str| move |reason: String| ConfigError { var, reason };

        let listen_addr = parse("LISTEN_ADDR", "127.0.0.1:8080")?
            .parse()
            .map_err(|e| err("LISTEN_ADDR")(format!("{e} (expected host:port)")))?;
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
        if pact_states && (callers.is_some() || matches!(database_url, DbUrl::Postgres(_))) {
            return Err(err("PACT_PROVIDER_STATES")(
                "on empties the ledger at every state change: allowed only on SQLite with the development token (CALLER_TOKENS unset)".into(),
            ));
        }

        Ok(Config {
            listen_addr,
            database_url,
            pool_size,
            seed,
            callers,
            faults,
            stale_claim_after,
            log_format,
            pact_states,
        })
    }
}

/// A whole number within `range`, or the default when unset.
fn number<T>(
    get: &dyn Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = get(var) else {
        return Ok(default);
    };
    let value: T = raw.trim().parse().map_err(|_| ConfigError {
        var,
        reason: format!("{raw:?} is not a whole number"),
    })?;
    if !range.contains(&value) {
        return Err(ConfigError {
            var,
            reason: format!("{value} is outside {}..={}", range.start(), range.end()),
        });
    }
    Ok(value)
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

/// `NAME` or the contents of the file named by `NAME_FILE` (trailing newline dropped).
fn secret(
    env: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<String>, ConfigError> {
    let file_var = format!("{var}_FILE");
    match (
        env(var).filter(|v| !v.is_empty()),
        env(&file_var).filter(|v| !v.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(ConfigError {
            var,
            reason: format!("set either {var} or {file_var}, not both"),
        }),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| ConfigError {
                var,
                reason: format!("cannot read {file_var}={path}: {e}"),
            }),
        (None, None) => Ok(None),
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
    }

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
