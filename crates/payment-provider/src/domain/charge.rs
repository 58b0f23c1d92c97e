use api_contract::{ChargeRequest, CustomerId, IdempotencyKey, InvoiceId, Money};
use sha2::{Digest, Sha256};

/// A charge that passed validation: a positive amount, a valid key.
#[derive(Debug, Clone)]
pub struct ChargeCommand {
    pub caller: String,
    pub key: IdempotencyKey,
    pub invoice_id: InvoiceId,
    pub customer_id: CustomerId,
    pub amount: Money,
    /// Fingerprint of the request body, to tell a replay from a reused key.
    pub request_hash: String,
}

impl ChargeCommand {
    pub fn parse(
        caller: String,
        key: IdempotencyKey,
        request: ChargeRequest,
    ) -> Result<Self, String> {
        if request.amount.is_zero() {
            return Err("amount.minor_units must be greater than zero".into());
        }
        Ok(ChargeCommand {
            request_hash: request_hash(&request),
            caller,
            key,
            invoice_id: request.invoice_id,
            customer_id: request.customer_id,
            amount: request.amount,
        })
    }
}

/// SHA-256 of the request as re-serialised from the parsed value, so two bodies that differ
/// only in whitespace or field order count as the same request.
pub fn request_hash(request: &ChargeRequest) -> String {
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    hex::encode(Sha256::digest(canonical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_contract::Currency;

    fn request(minor: i64) -> ChargeRequest {
        ChargeRequest {
            invoice_id: InvoiceId::parse("inv-1").expect("valid"),
            customer_id: CustomerId::parse("C001").expect("valid"),
            amount: Money::new(minor, Currency::Eur).expect("valid"),
        }
    }

    #[test]
    fn zero_amount_is_refused() {
        let key = IdempotencyKey::parse("k").expect("valid");
        assert!(ChargeCommand::parse("c".into(), key.clone(), request(0)).is_err());
        assert!(ChargeCommand::parse("c".into(), key, request(1)).is_ok());
    }

    #[test]
    fn hash_ignores_formatting_but_not_content() {
        let a: ChargeRequest = serde_json::from_str(
            r#"{"invoice_id":"inv-1","customer_id":"C001","amount":{"minor_units":5,"currency":"EUR"}}"#,
        )
        .expect("valid");
        let b: ChargeRequest = serde_json::from_str(
            r#"{ "amount": {"currency":"EUR","minor_units":5}, "customer_id":"C001", "invoice_id":"inv-1" }"#,
        )
        .expect("valid");
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&request(6)));
    }
}
