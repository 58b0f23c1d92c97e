//! Validated types and the rules of charging. No actix, diesel or reqwest here.

mod account;
mod charge;
mod decline;

pub use account::{AccountAction, AccountStatus, takes_funds, transition};
pub use charge::{ChargeCommand, request_hash};
pub use decline::{AccountSeen, Decline};
