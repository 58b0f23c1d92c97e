//! OpenAPI schemas of the shared wire types (feature `openapi`), for a service's document.
//! Written from the same constants the types check against, so a schema cannot promise
//! what the type refuses.

use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::{Currency, Money};

impl PartialSchema for Currency {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Currency::ALL.map(Currency::code)))
            .into()
    }
}

impl ToSchema for Currency {}

impl PartialSchema for Money {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
            .required("minor_units")
            .required("currency")
            .property(
                "minor_units",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(Money::MAX_MINOR_UNITS)),
            )
            .property("currency", Ref::from_schema_name(Currency::name()))
            .schema_type(Type::Object)
            .into()
    }
}

impl ToSchema for Money {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Currency::name().into_owned(), Currency::schema()));
    }
}

/// A string of `min`–`max` characters of one class: the schema of the id types.
pub(crate) fn id_schema(class: &str, max: usize) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(format!("^[{class}]+$")))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CustomerId, IdempotencyKey, InvoiceId};

    fn json<T: PartialSchema>() -> serde_json::Value {
        serde_json::to_value(T::schema()).expect("serialises")
    }

    #[test]
    fn money_schema_says_what_money_accepts() {
        let money = json::<Money>();
        assert_eq!(money["additionalProperties"], false);
        assert_eq!(
            money["required"],
            serde_json::json!(["minor_units", "currency"])
        );
        assert_eq!(money["properties"]["minor_units"]["minimum"], 0);
        assert_eq!(
            money["properties"]["minor_units"]["maximum"],
            Money::MAX_MINOR_UNITS
        );
        assert!(Money::new(Money::MAX_MINOR_UNITS, Currency::Eur).is_ok());
        assert!(Money::new(Money::MAX_MINOR_UNITS + 1, Currency::Eur).is_err());
        let codes: Vec<_> = Currency::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(json::<Currency>()["enum"], serde_json::json!(codes));
    }

    #[test]
    fn id_schemas_say_what_the_ids_accept() {
        let customer = json::<CustomerId>();
        assert_eq!(customer["pattern"], "^[A-Za-z0-9_-]+$");
        assert_eq!(customer["maxLength"], CustomerId::MAX_LEN);
        assert_eq!(json::<InvoiceId>()["maxLength"], InvoiceId::MAX_LEN);
        let key = json::<IdempotencyKey>();
        assert_eq!(key["pattern"], "^[!-~]+$");
        assert_eq!(key["minLength"], 1);
        assert_eq!(key["maxLength"], IdempotencyKey::MAX_LEN);
        // The class bounds are the checks' bounds: '!' and '~' are the first and last
        // visible ASCII characters, and nothing else in the class is refused.
        for (text, ok) in [("!", true), ("~", true), (" ", false), ("\u{7f}", false)] {
            assert_eq!(IdempotencyKey::parse(text).is_ok(), ok, "{text:?}");
        }
        for (text, ok) in [("aZ09_-", true), ("a.b", false), ("a b", false)] {
            assert_eq!(CustomerId::parse(text).is_ok(), ok, "{text:?}");
        }
    }
}
