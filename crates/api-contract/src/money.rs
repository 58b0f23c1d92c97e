//! Money as integer minor units of an ISO 4217 currency. No floating point anywhere:
//! decimal strings are parsed and formatted digit by digit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Currencies the platform settles in. The exponent is the number of minor-unit digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Currency {
    Chf,
    Dkk,
    Eur,
    Gbp,
    Jpy,
    Nok,
    Sek,
    Usd,
}

impl Currency {
    pub const ALL: [Currency; 8] = [
        Currency::Chf,
        Currency::Dkk,
        Currency::Eur,
        Currency::Gbp,
        Currency::Jpy,
        Currency::Nok,
        Currency::Sek,
        Currency::Usd,
    ];

    /// The ISO 4217 alphabetic code.
    pub const fn code(self) -> &'static str {
        match self {
            Currency::Chf => "CHF",
            Currency::Dkk => "DKK",
            Currency::Eur => "EUR",
            Currency::Gbp => "GBP",
            Currency::Jpy => "JPY",
            Currency::Nok => "NOK",
            Currency::Sek => "SEK",
            Currency::Usd => "USD",
        }
    }

    /// Digits after the decimal point (ISO 4217 minor unit).
    pub const fn exponent(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            _ => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == s)
            .ok_or_else(|| MoneyError::UnknownCurrency(s.chars().take(16).collect()))
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for &'static str {
    fn from(c: Currency) -> Self {
        c.code()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}: expected an ISO 4217 code such as EUR, DKK, SEK, GBP or USD")]
    UnknownCurrency(String),
    #[error("amount {0:?} is not a decimal number such as 12.15")]
    NotADecimal(String),
    #[error("amount has more than {exponent} decimal places for {currency}")]
    TooPrecise { currency: Currency, exponent: u32 },
    #[error(
        "amount is out of range (at most {} minor units)",
        Money::MAX_MINOR_UNITS
    )]
    OutOfRange,
    #[error("amount must not be negative")]
    Negative,
}

/// An amount of one currency in its minor units (cents, øre, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyWire", deny_unknown_fields)]
pub struct Money {
    minor_units: i64,
    currency: Currency,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyWire {
    #[serde(deserialize_with = "whole_number")]
    minor_units: i64,
    currency: Currency,
}

/// A JSON integer. JSON (and JSON Schema) also count `1215.0` as the integer 1215, so a
/// number whose fraction is zero is taken as that integer; any other fraction is refused,
/// never rounded. Beyond 2^53 a double no longer tells integers apart, so those are refused
/// too (amounts end at `Money::MAX_MINOR_UNITS`, far below).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct WholeNumber;
    impl serde::de::Visitor<'_> for WholeNumber {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number of minor units")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("minor_units is out of range"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
            if v.fract() != 0.0 || !v.is_finite() {
                return Err(E::custom(format!(
                    "minor_units must be a whole number of minor units, not {v}"
                )));
            }
            if v.abs() > EXACT {
                return Err(E::custom("minor_units is out of range"));
            }
            // Whole and within 2^53: the conversion is exact.
            Ok(v as i64)
        }
    }
    d.deserialize_any(WholeNumber)
}

impl TryFrom<MoneyWire> for Money {
    type Error = MoneyError;
    fn try_from(w: MoneyWire) -> Result<Self, Self::Error> {
        Money::new(w.minor_units, w.currency)
    }
}

impl Money {
    /// Upper bound of any single amount: a trillion minor units leaves ample room below
    /// `i64::MAX` for balances to add up without overflow.
    pub const MAX_MINOR_UNITS: i64 = 1_000_000_000_000;

    pub fn new(minor_units: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor_units < 0 {
            return Err(MoneyError::Negative);
        }
        if minor_units > Self::MAX_MINOR_UNITS {
            return Err(MoneyError::OutOfRange);
        }
        Ok(Money {
            minor_units,
            currency,
        })
    }

    pub const fn minor_units(self) -> i64 {
        self.minor_units
    }

    pub const fn currency(self) -> Currency {
        self.currency
    }

    pub const fn is_zero(self) -> bool {
        self.minor_units == 0
    }

    /// Parses a decimal string ("12.15", "12.1", "12") in major units of `currency`.
    pub fn parse_decimal(s: &str, currency: Currency) -> Result<Self, MoneyError> {
        let not_decimal = || MoneyError::NotADecimal(s.chars().take(32).collect());
        if s.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (s.contains('.') && !digits(frac)) {
            return Err(not_decimal());
        }
        let exponent = currency.exponent();
        if frac.len() > exponent as usize {
            return Err(MoneyError::TooPrecise { currency, exponent });
        }
        let scale = 10i64.pow(exponent);
        let whole: i64 = whole.parse().map_err(|_| MoneyError::OutOfRange)?;
        let frac_units: i64 = if frac.is_empty() {
            0
        } else {
            // "1" in "12.1" is ten cents: pad to the exponent.
            let padded = format!("{frac:0<width$}", width = exponent as usize);
            padded.parse().map_err(|_| not_decimal())?
        };
        let minor = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(frac_units))
            .ok_or(MoneyError::OutOfRange)?;
        Money::new(minor, currency)
    }

    /// The amount in major units with exactly `exponent` decimals, e.g. "12.15".
    pub fn to_decimal_string(self) -> String {
        let exponent = self.currency.exponent();
        if exponent == 0 {
            return self.minor_units.to_string();
        }
        let scale = 10i64.pow(exponent);
        format!(
            "{}.{:0width$}",
            self.minor_units / scale,
            self.minor_units % scale,
            width = exponent as usize
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_formats_without_floats() {
        let m = Money::parse_decimal("12.15", Currency::Eur).expect("valid");
        assert_eq!(m.minor_units(), 1215);
        assert_eq!(m.to_decimal_string(), "12.15");
        assert_eq!(
            Money::parse_decimal("12.1", Currency::Dkk)
                .expect("valid")
                .minor_units(),
            1210
        );
        assert_eq!(
            Money::parse_decimal("7", Currency::Sek)
                .expect("valid")
                .minor_units(),
            700
        );
        assert_eq!(
            Money::new(5, Currency::Usd).expect("valid").to_string(),
            "0.05 USD"
        );
        // 0.1 + 0.2 is where floats go wrong.
        assert_eq!(
            Money::parse_decimal("0.30", Currency::Gbp)
                .expect("valid")
                .minor_units(),
            30
        );
    }

    #[test]
    fn zero_exponent_currency() {
        let m = Money::parse_decimal("1500", Currency::Jpy).expect("valid");
        assert_eq!(m.minor_units(), 1500);
        assert_eq!(m.to_decimal_string(), "1500");
        assert!(matches!(
            Money::parse_decimal("15.5", Currency::Jpy),
            Err(MoneyError::TooPrecise { .. })
        ));
    }

    #[test]
    fn rejects_bad_amounts() {
        for bad in [
            "", ".", "1.", ".5", "1,5", "1e3", "+1", " 1", "1.2.3", "abc",
        ] {
            assert!(
                matches!(
                    Money::parse_decimal(bad, Currency::Eur),
                    Err(MoneyError::NotADecimal(_))
                ),
                "{bad:?} should be rejected"
            );
        }
        assert_eq!(
            Money::parse_decimal("-1", Currency::Eur),
            Err(MoneyError::Negative)
        );
        assert_eq!(
            Money::parse_decimal("1.999", Currency::Eur),
            Err(MoneyError::TooPrecise {
                currency: Currency::Eur,
                exponent: 2
            })
        );
        assert_eq!(
            Money::parse_decimal("99999999999999999999", Currency::Eur),
            Err(MoneyError::OutOfRange)
        );
        assert_eq!(Money::new(-1, Currency::Eur), Err(MoneyError::Negative));
        assert_eq!(
            Money::new(Money::MAX_MINOR_UNITS + 1, Currency::Eur),
            Err(MoneyError::OutOfRange)
        );
    }

    #[test]
    fn serde_shape_is_minor_units_and_code() {
        let m = Money::new(1215, Currency::Eur).expect("valid");
        let json = serde_json::to_value(m).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"minor_units": 1215, "currency": "EUR"})
        );
        let back: Money = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, m);
    }

    #[test]
    fn a_number_with_a_zero_fraction_is_that_integer() {
        for (json, minor) in [
            (r#"{"minor_units": 1215.0, "currency": "EUR"}"#, 1215),
            (r#"{"minor_units": 1.215e3, "currency": "EUR"}"#, 1215),
            (
                r#"{"minor_units": 1e12, "currency": "EUR"}"#,
                Money::MAX_MINOR_UNITS,
            ),
        ] {
            let m: Money = serde_json::from_str(json).expect(json);
            assert_eq!(m.minor_units(), minor, "{json}");
        }
    }

    #[test]
    fn serde_rejects_floats_unknown_currency_and_negatives() {
        for bad in [
            r#"{"minor_units": 12.15, "currency": "EUR"}"#,
            r#"{"minor_units": 0.5, "currency": "EUR"}"#,
            r#"{"minor_units": 1e300, "currency": "EUR"}"#,
            r#"{"minor_units": -5.0, "currency": "EUR"}"#,
            r#"{"minor_units": "1215", "currency": "EUR"}"#,
            r#"{"minor_units": 1215, "currency": "eur"}"#,
            r#"{"minor_units": 1215, "currency": "XXX"}"#,
            r#"{"minor_units": -5, "currency": "EUR"}"#,
            r#"{"minor_units": 1215}"#,
            r#"{"minor_units": 1215, "currency": "EUR", "extra": 1}"#,
        ] {
            assert!(
                serde_json::from_str::<Money>(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    proptest! {
        #[test]
        fn decimal_round_trip(minor in 0i64..=Money::MAX_MINOR_UNITS, idx in 0usize..Currency::ALL.len()) {
            let currency = Currency::ALL[idx];
            let m = Money::new(minor, currency).expect("in range");
            let parsed = Money::parse_decimal(&m.to_decimal_string(), currency).expect("own output parses");
            prop_assert_eq!(parsed, m);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Money::parse_decimal(&s, Currency::Eur);
        }
    }
}
