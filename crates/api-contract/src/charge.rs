//! The charge call: `POST /v1/charges` and the inspection responses.

use serde::{Deserialize, Serialize};

use crate::{CustomerId, InvoiceId, Money};

/// Body of `POST /v1/charges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    pub invoice_id: InvoiceId,
    pub customer_id: CustomerId,
    pub amount: Money,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    Succeeded,
}

/// Body of a created (201) or replayed (200) charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeResponse {
    /// Provider's charge id, `ch_` followed by a UUID.
    pub id: String,
    pub status: ChargeStatus,
    pub invoice_id: InvoiceId,
    pub customer_id: CustomerId,
    pub amount: Money,
    /// RFC 3339 timestamp in UTC.
    pub created_at: String,
}

/// Body of `GET /v1/accounts/{customer_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountResponse {
    pub customer_id: CustomerId,
    /// Balance left to charge, in the account's currency.
    pub balance: Money,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    #[test]
    fn request_round_trip_and_shape() {
        let req = ChargeRequest {
            invoice_id: InvoiceId::parse("0193c3a0-aaaa").expect("valid"),
            customer_id: CustomerId::parse("C001").expect("valid"),
            amount: Money::new(1215, Currency::Eur).expect("valid"),
        };
        let json = serde_json::to_value(&req).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "invoice_id": "0193c3a0-aaaa",
                "customer_id": "C001",
                "amount": {"minor_units": 1215, "currency": "EUR"}
            })
        );
        assert_eq!(
            serde_json::from_value::<ChargeRequest>(json).expect("parses"),
            req
        );
    }

    #[test]
    fn request_rejects_unknown_fields() {
        let body = r#"{"invoice_id":"i","customer_id":"C","amount":{"minor_units":1,"currency":"EUR"},"amount_eur":1}"#;
        assert!(serde_json::from_str::<ChargeRequest>(body).is_err());
    }
}
