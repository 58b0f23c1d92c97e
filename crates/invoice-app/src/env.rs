//! Typed values from environment variables, for `config` and for the modules that read
//! their own settings (`auth`): the error that names the variable, whole numbers within a
//! range, secrets from `<NAME>_FILE`. It imports nothing of this crate, so any module may
//! use it without closing an import circle. A deliberate fork of payment-provider's `env`
//! (README, "Deliberate forks").

use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// The variable's value, unless it is unset or blank (a chart's empty default).
pub fn get(env: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    env(var).filter(|v| !v.trim().is_empty())
}

/// A whole number within `range`, or the default when unset.
pub fn number<T>(
    get: &dyn Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
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

/// `NAME` or the contents of the file named by `NAME_FILE` (trailing newline dropped).
pub fn secret(
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
