use std::fmt;
use std::str::FromStr;

use api_contract::{CustomerId, IdempotencyKey, InvoiceId, Money};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use strum::{EnumIter, IntoStaticStr};

/// Where an invoice stands. The text forms are what the database and the API hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EnumIter, IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum InvoiceStatus {
    Pending,
    /// Claimed by a worker that is charging it.
    Processing,
    Paid,
    /// Refused by the provider for good (a hard decline); `failure_reason` says why.
    Failed,
    /// Declined softly (insufficient funds, try again later): tried again at
    /// `next_attempt_at`, as the dunning schedule says.
    PastDue,
    /// Declined softly on every attempt of the dunning schedule: given up on.
    Uncollectible,
    /// Cancelled by an operator while it waited (pending or past due): never charged again.
    Void,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Where an invoice waits for a run: what the claims take, and what an operator's
    /// action applies to.
    pub const WAITING: [InvoiceStatus; 2] = [InvoiceStatus::Pending, InvoiceStatus::PastDue];

    /// Where an invoice waits for its next run: `past_due` once it has been declined
    /// softly (`attempt_count` > 0), else `pending`.
    pub fn waiting(attempt_count: i32) -> Self {
        if attempt_count > 0 {
            InvoiceStatus::PastDue
        } else {
            InvoiceStatus::Pending
        }
    }
}

impl FromStr for InvoiceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::parse_variant("status", s)
    }
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An invoice to be created: a customer, a positive amount, a short description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvoice {
    pub customer_id: CustomerId,
    pub amount: Money,
    pub description: String,
}

impl NewInvoice {
    pub const MAX_DESCRIPTION: usize = 500;

    pub fn parse(
        customer_id: CustomerId,
        amount: Money,
        description: Option<String>,
    ) -> Result<Self, String> {
        if amount.is_zero() {
            return Err("amount.minor_units must be greater than zero".into());
        }
        let description = description.unwrap_or_default();
        if description.chars().count() > Self::MAX_DESCRIPTION {
            return Err(format!(
                "description is longer than {} characters",
                Self::MAX_DESCRIPTION
            ));
        }
        if description.chars().any(char::is_control) {
            return Err("description may not contain control characters".into());
        }
        Ok(NewInvoice {
            customer_id,
            amount,
            description,
        })
    }

    /// SHA-256 of what defines the invoice, in a fixed text form of our own (as the
    /// provider's charge fingerprint): the same request however its JSON was written (key
    /// order, spacing, an absent description or an empty one), another one if anything
    /// that would be stored differs. The description goes last, length first.
    pub fn fingerprint(&self) -> String {
        let canonical = format!(
            "POST /invoices v1\ncustomer_id={}\nminor_units={}\ncurrency={}\ndescription={}:{}",
            self.customer_id.as_str(),
            self.amount.minor_units(),
            self.amount.currency().code(),
            self.description.len(),
            self.description,
        );
        hex::encode(Sha256::digest(canonical))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub id: InvoiceId,
    pub customer_id: CustomerId,
    pub amount: Money,
    pub description: String,
    pub status: InvoiceStatus,
    pub failure_reason: Option<String>,
    pub charge_id: Option<String>,
    /// Why a person should look at this pending invoice (a key conflict, an answer we do
    /// not understand, our credential refused); cleared when it is paid or failed.
    pub attention: Option<String>,
    /// Soft declines so far (dunning counts these, not transient errors).
    pub attempt_count: i32,
    /// When a past-due invoice is tried again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
}

/// The key of every charge attempt for one invoice after `declines` soft declines. Stable
/// across retries, runs, replicas and restarts: that is what lets the provider charge it at
/// most once. A decline is a key's final answer (the provider replays it), so each dunning
/// retry is a charge of its own, under the next key; a key is only left once the provider
/// has declined it, so no two keys can both charge.
pub fn idempotency_key_for(invoice_id: &str, declines: i32) -> Result<IdempotencyKey, String> {
    let key = match declines {
        0 => format!("invoice-{invoice_id}"),
        n => format!("invoice-{invoice_id}-retry-{n}"),
    };
    IdempotencyKey::parse(key).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_contract::Currency;

    #[test]
    fn new_invoice_rules() {
        let c = CustomerId::parse("C001").expect("valid");
        let m = |n| Money::new(n, Currency::Eur).expect("valid");
        assert!(NewInvoice::parse(c.clone(), m(1), None).is_ok());
        assert!(NewInvoice::parse(c.clone(), m(0), None).is_err());
        assert!(NewInvoice::parse(c.clone(), m(1), Some("x".repeat(501))).is_err());
        assert!(NewInvoice::parse(c, m(1), Some("bell\u{7}".into())).is_err());
    }

    #[test]
    fn fingerprint_is_of_the_invoice_not_of_its_json() {
        let c = CustomerId::parse("C001").expect("valid");
        let m = |n| Money::new(n, Currency::Eur).expect("valid");
        let new = |n, d: Option<&str>| {
            NewInvoice::parse(c.clone(), m(n), d.map(str::to_owned)).expect("valid")
        };
        assert_eq!(new(5, None).fingerprint(), new(5, Some("")).fingerprint());
        assert_ne!(new(5, None).fingerprint(), new(6, None).fingerprint());
        assert_ne!(
            new(5, None).fingerprint(),
            new(5, Some("May")).fingerprint()
        );
        let usd = NewInvoice::parse(
            c.clone(),
            Money::new(5, Currency::Usd).expect("valid"),
            None,
        )
        .expect("valid");
        assert_ne!(new(5, None).fingerprint(), usd.fingerprint());
        // Fixed: a release that changes it turns every stored key's retry into a 422.
        assert_eq!(
            new(5, Some("May")).fingerprint(),
            hex::encode(Sha256::digest(
                "POST /invoices v1\ncustomer_id=C001\nminor_units=5\ncurrency=EUR\ndescription=3:May"
            ))
        );
    }

    #[test]
    fn status_round_trip() {
        use strum::IntoEnumIterator;
        for s in InvoiceStatus::iter() {
            assert_eq!(s.as_str().parse::<InvoiceStatus>(), Ok(s));
            // The API shows the text the database holds.
            assert_eq!(
                serde_json::to_value(s).expect("serialises"),
                serde_json::Value::from(s.as_str())
            );
        }
        assert_eq!(
            "PAID".parse::<InvoiceStatus>(),
            Err(
                "unknown status \"PAID\": expected pending, processing, paid, failed, \
                 past_due, uncollectible or void"
                    .into()
            )
        );
    }

    #[test]
    fn key_is_stable() {
        let a = idempotency_key_for("0193", 0).expect("valid");
        assert_eq!(a, idempotency_key_for("0193", 0).expect("valid"));
        // The first attempt's key is what every release before dunning used.
        assert_eq!(a.as_str(), "invoice-0193");
        assert_eq!(
            idempotency_key_for("0193", 2).expect("valid").as_str(),
            "invoice-0193-retry-2"
        );
    }
}
