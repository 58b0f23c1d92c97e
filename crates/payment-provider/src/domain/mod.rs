//! Validated types and the rules of charging. No actix, diesel or reqwest here.

mod charge;
mod decline;

pub use charge::{ChargeCommand, request_hash};
pub use decline::Decline;
