//! Identifiers that cross the wire, validated once at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be 1 to {max} characters long")]
    Length { what: &'static str, max: usize },
    #[error("{what} may contain only {allowed}")]
    Charset {
        what: &'static str,
        allowed: &'static str,
    },
}

fn check(
    s: &str,
    what: &'static str,
    max: usize,
    ok: fn(u8) -> bool,
    allowed: &'static str,
) -> Result<(), IdError> {
    if s.is_empty() || s.len() > max {
        return Err(IdError::Length { what, max });
    }
    if !s.bytes().all(ok) {
        return Err(IdError::Charset { what, allowed });
    }
    Ok(())
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Whether `s` has the shape of every id on this platform (invoices, charges, pay runs,
/// customers): 1 to 64 letters, digits, '_' and '-'. Anything else names nothing, so it is
/// answered before any query (PostgreSQL would refuse a NUL byte with an error).
pub fn is_id(s: &str) -> bool {
    check(s, "id", 64, is_id_byte, "").is_ok()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $ok:expr, $allowed:literal, $class:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check(&s, $what, $max, $ok, $allowed)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::openapi::id_schema($class, $max)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    /// A customer account at the payment provider, e.g. `C001`.
    CustomerId, "customer_id", 64, is_id_byte, "letters, digits, '_' and '-'", "A-Za-z0-9_-"
);
id_type!(
    /// The caller's reference of what is being paid (invoice-app sends the invoice id).
    InvoiceId, "invoice_id", 64, is_id_byte, "letters, digits, '_' and '-'", "A-Za-z0-9_-"
);
id_type!(
    /// Makes a charge safe to retry: the same key and body are charged at most once.
    IdempotencyKey, "Idempotency-Key", 255, |b: u8| b.is_ascii_graphic(), "visible ASCII characters", "!-~"
);

impl IdempotencyKey {
    /// The key a request sent in its `Idempotency-Key` header, given every value of that
    /// header as sent: `Ok(None)` when there is none. Both services read it this way, so a
    /// key one accepts the other does too; the error says why, for their 400.
    pub fn from_header<'a>(
        mut values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Option<IdempotencyKey>, String> {
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err("send the header once".to_owned()),
            (Some(value), None) => {
                let text = std::str::from_utf8(value)
                    .ok()
                    .filter(|text| text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()))
                    .ok_or_else(|| "not visible ASCII".to_owned())?;
                IdempotencyKey::parse(text)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_bounds() {
        assert!(IdempotencyKey::parse("inv-123").is_ok());
        assert!(IdempotencyKey::parse("k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse("k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("ключ").is_err());
    }

    #[test]
    fn idempotency_key_header() {
        let read = |values: &[&[u8]]| IdempotencyKey::from_header(values.iter().copied());
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(
            read(&[b"inv-1"]),
            Ok(Some(IdempotencyKey::parse("inv-1").expect("valid")))
        );
        assert_eq!(read(&[b"a", b"a"]), Err("send the header once".into()));
        assert_eq!(read(&[b"bell\x07"]), Err("not visible ASCII".into()));
        assert_eq!(read(&["ключ".as_bytes()]), Err("not visible ASCII".into()));
        assert!(read(&[b"has space"]).is_err_and(|why| why.contains("visible ASCII")));
        assert!(read(&[b""]).is_err());
    }

    #[test]
    fn id_shape() {
        assert!(is_id("0195b4c0-7a10-7000-8000-000000000002"));
        assert!(is_id("ch_0195b4c07a10700080000000000000"));
        assert!(!is_id(""));
        assert!(!is_id("a\0b"));
        assert!(!is_id("é"));
        assert!(!is_id(&"x".repeat(65)));
    }

    #[test]
    fn customer_id_charset() {
        assert!(CustomerId::parse("C001").is_ok());
        assert!(CustomerId::parse("c-1_x").is_ok());
        assert!(CustomerId::parse("C 1").is_err());
        assert!(CustomerId::parse("C/1").is_err());
        assert!(CustomerId::parse("x".repeat(65)).is_err());
    }

    #[test]
    fn ids_validate_when_deserialised() {
        assert!(serde_json::from_str::<CustomerId>(r#""C001""#).is_ok());
        assert!(serde_json::from_str::<CustomerId>(r#""""#).is_err());
        assert!(serde_json::from_str::<InvoiceId>(r#""a;drop""#).is_err());
    }
}
