//! Validated types and rules of invoicing. No actix, diesel or reqwest here.

mod invoice;
mod outcome;

pub use invoice::{Invoice, InvoiceStatus, NewInvoice, idempotency_key_for};
pub use outcome::{CallOutcome, RunStatus, Sent, Settlement};
