//! Validated types and rules of invoicing. No actix, diesel or reqwest here.

mod action;
mod dunning;
mod ids;
mod invoice;
mod outcome;
mod transition;

pub use action::{Action, Reason, Refusal};
pub use dunning::DunningSchedule;
pub use ids::{AttemptId, RunId, WorkerId};
pub use invoice::{Invoice, InvoiceStatus, NewInvoice, idempotency_key_for};
pub use outcome::{
    AttemptKind, AttemptOutcome, CallOutcome, LookupOutcome, RunKind, RunStatus, Sent, Settlement,
    Trigger, decline_class,
};
pub use transition::{Guard, HAND_BACK, RunResult, Summary, Target, Transition, Write, transition};

use strum::IntoEnumIterator;

/// The variant of `T` whose text is `text`; the error names them all, so a caller who
/// mistyped one learns the choices.
fn parse_variant<T>(what: &str, text: &str) -> Result<T, String>
where
    T: IntoEnumIterator + Into<&'static str> + Copy,
{
    T::iter().find(|v| (*v).into() == text).ok_or_else(|| {
        let names: Vec<&'static str> = T::iter().map(Into::into).collect();
        let choices = match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        format!(
            "unknown {what} {:?}: expected {choices}",
            text.chars().take(32).collect::<String>()
        )
    })
}
