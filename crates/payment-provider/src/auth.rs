//! Caller identity: each caller (e.g. `invoice-app`) has its own bearer token. Tokens are
//! kept only as SHA-256 digests and compared in constant time.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Token used when none is configured, so `cargo run` works out of the box. Start-up warns.
pub const DEV_TOKEN: &str = "dev-only-insecure-token";
const MIN_TOKEN_LEN: usize = 16;

#[derive(Clone)]
pub struct CallerTokens {
    callers: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for CallerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.callers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("CallerTokens")
            .field("callers", &names)
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl CallerTokens {
    /// Parses `caller:token[,caller:token…]`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut callers = Vec::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, token) = pair
                .split_once(':')
                .ok_or("expected caller:token pairs separated by commas")?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "caller name {name:?} may contain only letters, digits, '-' and '_'"
                ));
            }
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "the token of caller {name} must be at least {MIN_TOKEN_LEN} visible ASCII characters"
                ));
            }
            if callers.iter().any(|(n, _)| n == name) {
                return Err(format!("caller {name} is listed twice"));
            }
            callers.push((name.to_owned(), digest(token)));
        }
        if callers.is_empty() {
            return Err("no caller tokens given".into());
        }
        Ok(CallerTokens { callers })
    }

    pub fn dev_default() -> Self {
        CallerTokens {
            callers: vec![("invoice-app".to_owned(), digest(DEV_TOKEN))],
        }
    }

    /// The caller whose token this is. Every configured token is compared, in constant
    /// time, so the answer's timing says nothing about which one nearly matched.
    pub fn authenticate(&self, presented: &str) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        for (name, token) in &self.callers {
            if bool::from(token.ct_eq(&presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticates_each_caller_by_its_own_token() {
        let tokens = CallerTokens::parse("invoice-app:aaaaaaaaaaaaaaaa, audit:bbbbbbbbbbbbbbbb")
            .expect("valid");
        assert_eq!(tokens.authenticate("aaaaaaaaaaaaaaaa"), Some("invoice-app"));
        assert_eq!(tokens.authenticate("bbbbbbbbbbbbbbbb"), Some("audit"));
        assert_eq!(tokens.authenticate("aaaaaaaaaaaaaaab"), None);
        assert_eq!(tokens.authenticate(""), None);
    }

    #[test]
    fn rejects_weak_or_malformed_specs() {
        assert!(CallerTokens::parse("invoice-app:short").is_err());
        assert!(CallerTokens::parse("no-colon-here-at-all").is_err());
        assert!(CallerTokens::parse("").is_err());
        assert!(CallerTokens::parse("a b:aaaaaaaaaaaaaaaa").is_err());
        assert!(CallerTokens::parse("x:aaaaaaaaaaaaaaaa,x:bbbbbbbbbbbbbbbb").is_err());
    }

    #[test]
    fn debug_never_shows_tokens() {
        let tokens = CallerTokens::parse("invoice-app:supersecretvalue123").expect("valid");
        let shown = format!("{tokens:?}");
        assert!(shown.contains("invoice-app"));
        assert!(!shown.contains("supersecret"));
    }
}
