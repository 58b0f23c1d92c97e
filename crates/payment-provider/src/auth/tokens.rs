//! Static caller tokens, for use outside Kubernetes. A caller may hold several at once, so a
//! token is rotated by adding the new one next to the old, moving the caller over, and then
//! removing the old. Tokens are kept only as SHA-256 digests and compared in constant time.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{check_caller_name, entries};

/// Token used when none is configured, so `cargo run` works out of the box. Accepted only
/// on a loopback address; start-up warns.
pub const DEV_TOKEN: &str = "dev-only-insecure-token";
const MIN_TOKEN_LEN: usize = 16;

#[derive(Clone)]
pub struct CallerTokens {
    /// Caller name and token digest; a name appears once per token it holds.
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
    /// Parses `caller:token[,caller:token…]`; line breaks separate pairs too. The same
    /// caller may appear several times (a rotation); the same token may not.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut callers: Vec<(String, [u8; 32])> = Vec::new();
        for pair in entries(spec) {
            let (name, token) = pair
                .split_once(':')
                .ok_or("expected caller:token pairs separated by commas or line breaks")?;
            check_caller_name(name)?;
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "a token of caller {name} must be at least {MIN_TOKEN_LEN} visible ASCII characters"
                ));
            }
            let token = digest(token);
            // One token naming two callers, or listed twice, is a mistake in the list.
            if callers.iter().any(|(_, t)| *t == token) {
                return Err(format!(
                    "a token of caller {name} is listed twice (each token must be different)"
                ));
            }
            callers.push((name.to_owned(), token));
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

    /// Whether the public development token is among the configured ones.
    pub fn includes_dev_token(&self) -> bool {
        self.authenticate(DEV_TOKEN).is_some()
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
    fn a_caller_may_hold_several_tokens() {
        for spec in [
            "invoice-app:aaaaaaaaaaaaaaaa,invoice-app:bbbbbbbbbbbbbbbb",
            "invoice-app:aaaaaaaaaaaaaaaa\ninvoice-app:bbbbbbbbbbbbbbbb\n",
            "invoice-app:aaaaaaaaaaaaaaaa\r\n\r\ninvoice-app:bbbbbbbbbbbbbbbb",
        ] {
            let tokens = CallerTokens::parse(spec).expect(spec);
            assert_eq!(tokens.authenticate("aaaaaaaaaaaaaaaa"), Some("invoice-app"));
            assert_eq!(tokens.authenticate("bbbbbbbbbbbbbbbb"), Some("invoice-app"));
        }
    }

    #[test]
    fn rejects_weak_or_malformed_specs() {
        for spec in [
            "invoice-app:short",
            "no-colon-here-at-all",
            "",
            " ,\n",
            "a b:aaaaaaaaaaaaaaaa",
            // The same token twice, for one caller or for two.
            "x:aaaaaaaaaaaaaaaa,x:aaaaaaaaaaaaaaaa",
            "x:aaaaaaaaaaaaaaaa\ny:aaaaaaaaaaaaaaaa",
        ] {
            assert!(CallerTokens::parse(spec).is_err(), "{spec:?}");
        }
    }

    #[test]
    fn knows_the_development_token() {
        assert!(CallerTokens::dev_default().includes_dev_token());
        let spec = format!("invoice-app:{DEV_TOKEN}");
        assert!(
            CallerTokens::parse(&spec)
                .expect("valid")
                .includes_dev_token()
        );
        let real = CallerTokens::parse("invoice-app:aaaaaaaaaaaaaaaa").expect("valid");
        assert!(!real.includes_dev_token());
    }

    #[test]
    fn debug_never_shows_tokens() {
        let tokens = CallerTokens::parse("invoice-app:supersecretvalue123").expect("valid");
        let shown = format!("{tokens:?}");
        assert!(shown.contains("invoice-app"));
        assert!(!shown.contains("supersecret"));
    }
}
