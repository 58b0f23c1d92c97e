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
    /// Fingerprints of the charge, to tell a replay from a reused key: the current one
    /// first (stored with new keys), then the one earlier releases stored.
    pub request_hashes: [String; 2],
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
            request_hashes: [request_hash(&request), legacy_request_hash(&request)],
            caller,
            key,
            invoice_id: request.invoice_id,
            customer_id: request.customer_id,
            amount: request.amount,
        })
    }
}

/// SHA-256 of the fields that define the charge, in a fixed text form of our own: what the
/// charge is, never how this release happens to serialise it, so a change of serialisation
/// or a client that writes the JSON differently cannot turn a replay into a key conflict.
pub fn request_hash(request: &ChargeRequest) -> String {
    let canonical = format!(
        "charge/v1\ninvoice_id={}\ncustomer_id={}\nminor_units={}\ncurrency={}",
        request.invoice_id.as_str(),
        request.customer_id.as_str(),
        request.amount.minor_units(),
        request.amount.currency().code(),
    );
    hex::encode(Sha256::digest(canonical))
}

/// The fingerprint releases before the canonical one stored (the request re-serialised as
/// JSON), accepted so keys stored by them still replay.
fn legacy_request_hash(request: &ChargeRequest) -> String {
    let json = serde_json::to_vec(request).unwrap_or_default();
    hex::encode(Sha256::digest(json))
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

    #[test]
    fn fingerprint_is_of_the_charge_not_of_its_serialisation() {
        // Fixed: a release that changes it breaks every stored key (see the legacy hash).
        assert_eq!(
            request_hash(&request(5)),
            hex::encode(Sha256::digest(
                "charge/v1\ninvoice_id=inv-1\ncustomer_id=C001\nminor_units=5\ncurrency=EUR"
            ))
        );
        let key = IdempotencyKey::parse("k").expect("valid");
        let cmd = ChargeCommand::parse("c".into(), key, request(5)).expect("valid");
        assert_eq!(
            cmd.request_hashes[1],
            hex::encode(Sha256::digest(
                r#"{"invoice_id":"inv-1","customer_id":"C001","amount":{"minor_units":5,"currency":"EUR"}}"#
            )),
            "the hash earlier releases stored"
        );
    }
}
