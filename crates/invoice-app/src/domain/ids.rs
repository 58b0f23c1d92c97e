//! The ids invoice-app makes itself. Each is its own type, so a run's id cannot be passed
//! where a worker's is expected: the claim and settlement queries take several at once.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

macro_rules! text_id {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Any text the database holds: these ids are made here, never taken from a client.
        impl FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($name(s.to_owned()))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    )*};
}

text_id! {
    /// A pay run: a UUIDv7, so ids sort by start.
    RunId,
    /// One call (or lookup) recorded in `payment_attempts`.
    AttemptId,
    /// A process that claims invoices: its host name and a random suffix per start.
    WorkerId,
}

impl RunId {
    pub fn generate() -> Self {
        RunId(uuid::Uuid::now_v7().to_string())
    }
}

impl AttemptId {
    pub fn generate() -> Self {
        AttemptId(uuid::Uuid::now_v7().to_string())
    }
}

impl WorkerId {
    pub fn new(host: &str) -> Self {
        WorkerId(format!("{host}-{}", uuid::Uuid::new_v4().simple()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_differ_and_read_back_as_written() {
        let (a, b) = (RunId::generate(), RunId::generate());
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<RunId>(), Ok(a.clone()));
        assert!(a < b, "UUIDv7 run ids sort by start: {a} then {b}");
        let w = WorkerId::new("host");
        assert!(w.as_str().starts_with("host-"), "{w}");
        assert_eq!(serde_json::to_value(&a).ok(), Some(a.as_str().into()));
    }
}
