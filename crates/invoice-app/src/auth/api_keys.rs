//! Static API keys, for machines without an IdP. Only SHA-256 digests are configured
//! (`API_KEYS`: `[{"client":"ci","scopes":["invoices:read"],"sha256":"<64 hex>"}]`), a
//! client may hold several keys at once (rotation), and a presented key is compared with
//! every digest in constant time.

use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{DEV_API_KEY, Principal, Scope};

#[derive(Clone)]
pub struct ApiKeys {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    principal: Principal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    client: String,
    scopes: Vec<String>,
    sha256: String,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Parses the JSON array of `API_KEYS`. Error texts never quote a value: a key pasted
    /// where its digest belongs must not reach a log.
    pub fn parse(json: &str) -> Result<Self, String> {
        let specs: Vec<Spec> = serde_json::from_str(json).map_err(|e| {
            format!(
                "expected a JSON array of {{\"client\", \"scopes\", \"sha256\"}} objects \
                 (problem at line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        if specs.is_empty() {
            return Err("the array holds no key".to_owned());
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(specs.len());
        for (n, spec) in specs.into_iter().enumerate() {
            let at = format!("entry {n}");
            if spec.client.is_empty()
                || spec.client.len() > 64
                || !spec
                    .client
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(format!(
                    "{at}: client must be 1-64 letters, digits, '-', '_' or '.'"
                ));
            }
            let at = format!("{at} (client {})", spec.client);
            let mut scopes = Vec::with_capacity(spec.scopes.len());
            for name in &spec.scopes {
                scopes.push(Scope::parse(name).ok_or_else(|| {
                    format!("{at}: unknown scope; expected invoices:read, invoices:write, invoices:pay or invoices:manage")
                })?);
            }
            if scopes.is_empty() {
                return Err(format!("{at}: scopes is empty"));
            }
            let mut digest = [0u8; 32];
            hex::decode_to_slice(spec.sha256.trim(), &mut digest).map_err(|_| {
                format!(
                    "{at}: sha256 must be 64 hex digits, the SHA-256 of the key (printf %s \"$KEY\" | sha256sum)"
                )
            })?;
            if digest == self::digest(DEV_API_KEY) {
                return Err(format!(
                    "{at}: that is the digest of the public development key"
                ));
            }
            if entries.iter().any(|e| e.digest == digest) {
                return Err(format!("{at}: the same key is listed twice"));
            }
            entries.push(Entry {
                digest,
                principal: Principal::client(&spec.client, scopes.into_iter().collect()),
            });
        }
        Ok(ApiKeys { entries })
    }

    pub fn none() -> Self {
        ApiKeys {
            entries: Vec::new(),
        }
    }

    pub(super) fn dev() -> Self {
        ApiKeys {
            entries: vec![Entry {
                digest: digest(DEV_API_KEY),
                principal: Principal::dev(),
            }],
        }
    }

    /// The principal whose key this is. Every digest is compared, in constant time, so the
    /// answer's timing says nothing about which one nearly matched.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let presented = digest(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(&entry.principal);
            }
        }
        found.cloned()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| e.principal.name()).collect();
        f.debug_struct("ApiKeys")
            .field("keys", &names)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(client: &str, scopes: &str, key: &str) -> String {
        format!(
            r#"{{"client":"{client}","scopes":{scopes},"sha256":"{}"}}"#,
            hex::encode(digest(key))
        )
    }

    #[test]
    fn each_key_of_each_client_authenticates_with_its_scopes() {
        let json = format!(
            "[{}, {}, {}]",
            spec("ci", r#"["invoices:read"]"#, "ci-old-key-0123456789"),
            spec("ci", r#"["invoices:read"]"#, "ci-new-key-0123456789"),
            spec(
                "billing",
                r#"["invoices:write","invoices:pay"]"#,
                "billing-key-01234"
            ),
        );
        let keys = ApiKeys::parse(&json).expect("valid");
        for key in ["ci-old-key-0123456789", "ci-new-key-0123456789"] {
            let p = keys.authenticate(key).expect("known key");
            assert_eq!(p.name(), "key:ci");
            assert!(p.may(Scope::Read) && !p.may(Scope::Write) && !p.may(Scope::Pay));
        }
        let p = keys.authenticate("billing-key-01234").expect("known key");
        assert!(p.may(Scope::Pay) && p.may(Scope::Write) && !p.may(Scope::Read));
        assert_eq!(keys.authenticate("ci-old-key-012345678"), None);
        assert_eq!(keys.authenticate(""), None);
        assert_eq!(keys.authenticate(DEV_API_KEY), None);
    }

    #[test]
    fn refuses_what_would_weaken_or_confuse() {
        let good = spec("ci", r#"["invoices:read"]"#, "k-0123456789abcdef");
        for bad in [
            "[]".to_owned(),
            "{}".to_owned(),
            "not json".to_owned(),
            spec("ci", r#"["invoices:admin"]"#, "k"),
            spec("ci", "[]", "k"),
            spec("c i", r#"["invoices:read"]"#, "k"),
            spec("", r#"["invoices:read"]"#, "k"),
            spec("dev", r#"["invoices:read"]"#, DEV_API_KEY),
            format!("[{good}, {good}]"),
            r#"[{"client":"ci","scopes":["invoices:read"],"sha256":"abc"}]"#.to_owned(),
            r#"[{"client":"ci","scopes":["invoices:read"],"sha256":"00","key":"x"}]"#.to_owned(),
        ] {
            let bad = if bad.starts_with('[') || !bad.starts_with('{') {
                bad
            } else {
                format!("[{bad}]")
            };
            assert!(ApiKeys::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_what_was_configured() {
        let raw_key = "a-raw-key-pasted-where-the-digest-belongs";
        let json =
            format!(r#"[{{"client":"ci","scopes":["invoices:read"],"sha256":"{raw_key}"}}]"#);
        let e = ApiKeys::parse(&json).expect_err("not a digest");
        assert!(!e.contains("raw-key"), "{e}");
        let json = format!(r#"[{{"client":"ci","scopes":["invoices:read"],"sha256":{raw_key}}}]"#);
        let e = ApiKeys::parse(&json).expect_err("not JSON");
        assert!(!e.contains("raw-key"), "{e}");
        let keys = ApiKeys::parse(&format!(
            "[{}]",
            spec("ci", r#"["invoices:read"]"#, "secret-key-123456")
        ))
        .expect("valid");
        let shown = format!("{keys:?}");
        assert!(shown.contains("key:ci"), "{shown}");
        assert!(!shown.contains(&hex::encode(digest("secret-key-123456"))[..16]));
    }
}
