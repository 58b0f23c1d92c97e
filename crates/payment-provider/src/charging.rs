//! The charge flow: fault injection, idempotency claim, then debit, ledger entry and stored
//! response in one transaction. Exactly one debit per caller and key, whatever arrives twice.

use std::time::Duration;

use api_contract::{ChargeResponse, ChargeStatus, CustomerId, InvoiceId, Money};
use chrono::{NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use diesel::Connection;

use crate::db::{self, AnyConnection, DbError, DbPool, accounts, charges, idempotency};
use crate::domain::{AccountSeen, ChargeCommand, Decline};
use crate::faults::{Faults, Injected};
use crate::metrics::Metrics;

/// What a charge needs: the ledger, the injected faults, when a claim is stale, and the
/// outcome counter. Nothing of HTTP.
#[derive(Clone)]
pub struct Charging {
    pub pool: DbPool,
    pub faults: Faults,
    pub stale_claim_after: Duration,
    pub metrics: Metrics,
}

/// Why a charge was not processed; `error.rs` says how each is answered.
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    #[error("unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after_secs: u32,
    },
    #[error("rate limited")]
    RateLimited { retry_after_secs: u32 },
    /// Another request holds the key (or charged first, after taking a stale claim over).
    #[error("a request with this Idempotency-Key is in flight")]
    KeyInFlight,
    #[error("Idempotency-Key reused with a different request")]
    KeyReused,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What the handler answers.
#[derive(Debug)]
pub enum ChargeReply {
    Created(ChargeResponse),
    Declined(Decline),
    /// A stored response, returned as it was (a success comes back as 200).
    Replayed {
        status: u16,
        body: String,
    },
}

impl Charging {
    /// Faults first, then the idempotency claim, then the debit in one transaction.
    pub async fn charge(&self, cmd: ChargeCommand) -> Result<ChargeReply, ChargeError> {
        match self.faults.roll() {
            None => {}
            Some(Injected::Unavailable) => {
                self.metrics.charge_outcome("fault_injected");
                return Err(ChargeError::Unavailable {
                    reason: "injected fault: try again".to_owned(),
                    retry_after_secs: self.faults.retry_after_secs,
                });
            }
            Some(Injected::RateLimited) => {
                self.metrics.charge_outcome("rate_limited");
                return Err(ChargeError::RateLimited {
                    retry_after_secs: self.faults.retry_after_secs,
                });
            }
        }

        let stale = TimeDelta::from_std(self.stale_claim_after).unwrap_or(TimeDelta::MAX);
        let begin = {
            let cmd = cmd.clone();
            db::run(&self.pool, move |c| {
                idempotency::begin(
                    c,
                    &cmd.caller,
                    cmd.key.as_str(),
                    &cmd.request_hashes,
                    now(),
                    stale,
                )
                .map_err(DbError::from)
            })
            .await?
        };
        let lock_token = match begin {
            idempotency::Begin::Acquired { lock_token } => lock_token,
            idempotency::Begin::Replay { status, body } => {
                self.metrics.charge_outcome("replayed");
                return Ok(ChargeReply::Replayed { status, body });
            }
            idempotency::Begin::InFlight => {
                self.metrics.charge_outcome("in_flight");
                return Err(ChargeError::KeyInFlight);
            }
            idempotency::Begin::Reused => {
                self.metrics.charge_outcome("key_reused");
                return Err(ChargeError::KeyReused);
            }
        };

        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }

        let result = {
            let cmd = cmd.clone();
            let lock_token = lock_token.clone();
            db::run(&self.pool, move |c| execute(c, &cmd, &lock_token)).await
        };
        match &result {
            Ok(reply) => self.metrics.charge_outcome(outcome_label(reply)),
            Err(_) => {
                // Nothing was charged (the transaction rolled back): free the key so a retry
                // need not wait for the claim to go stale. Failing that, staleness frees it.
                let released = db::run(&self.pool, move |c| {
                    idempotency::release(c, &cmd.caller, cmd.key.as_str(), &lock_token)
                        .map_err(DbError::from)
                })
                .await;
                if let Err(e) = released {
                    tracing::warn!(error = %e, "could not release idempotency claim");
                }
            }
        }
        result
    }
}

/// What a key lookup found.
#[derive(Debug)]
pub enum LookupReply {
    /// The key's stored response, as a replay of its charge would give it.
    Replayed { status: u16, body: String },
    /// The caller never used the key (or nothing was charged under it and it was freed).
    NotFound,
}

impl Charging {
    /// What `caller`'s key `key` holds: read-only, so it charges nothing and claims nothing.
    /// Injected outages and rate limits apply, as they do to charges (the caller must
    /// handle them here too); injected latency does not, being a charge's processing time.
    pub async fn lookup(&self, caller: String, key: String) -> Result<LookupReply, ChargeError> {
        match self.faults.roll() {
            None => {}
            Some(Injected::Unavailable) => {
                return Err(ChargeError::Unavailable {
                    reason: "injected fault: try again".to_owned(),
                    retry_after_secs: self.faults.retry_after_secs,
                });
            }
            Some(Injected::RateLimited) => {
                return Err(ChargeError::RateLimited {
                    retry_after_secs: self.faults.retry_after_secs,
                });
            }
        }
        let stored = db::run(&self.pool, move |c| {
            idempotency::find(c, &caller, &key).map_err(DbError::from)
        })
        .await?;
        match stored {
            None => Ok(LookupReply::NotFound),
            Some(idempotency::Stored::Completed { status, body }) => {
                Ok(LookupReply::Replayed { status, body })
            }
            Some(idempotency::Stored::InFlight) => Err(ChargeError::KeyInFlight),
        }
    }
}

fn outcome_label(reply: &ChargeReply) -> &'static str {
    match reply {
        ChargeReply::Created(_) => "succeeded",
        ChargeReply::Declined(d) => d.code().as_str(),
        ChargeReply::Replayed { .. } => "replayed",
    }
}

#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    #[error("idempotency claim lost")]
    LostClaim,
}

fn execute(
    conn: &mut AnyConnection,
    cmd: &ChargeCommand,
    lock_token: &str,
) -> Result<ChargeReply, ChargeError> {
    let now = now();
    let currency = cmd.amount.currency().code();
    let charge = charges::Charge {
        id: format!("ch_{}", uuid::Uuid::now_v7().simple()),
        caller: cmd.caller.clone(),
        idempotency_key: cmd.key.as_str().to_owned(),
        invoice_id: cmd.invoice_id.as_str().to_owned(),
        customer_id: cmd.customer_id.as_str().to_owned(),
        amount_minor: cmd.amount.minor_units(),
        currency: currency.to_owned(),
        status: "succeeded".to_owned(),
        created_at: now,
    };
    // The answer if the debit goes through; replays get the same from the stored response.
    let created = ChargeReply::Created(ChargeResponse {
        id: charge.id.clone(),
        status: ChargeStatus::Succeeded,
        invoice_id: cmd.invoice_id.clone(),
        customer_id: cmd.customer_id.clone(),
        amount: cmd.amount,
        created_at: rfc3339(now),
    });
    let outcome = conn.transaction::<_, ExecError, _>(|c| {
        // The debit comes first: a conditional update that cannot overdraw, and on SQLite a
        // write that takes the lock at once. PostgreSQL also writes the ledger row and the
        // response in the same statement.
        let debited = match c {
            AnyConnection::Postgresql(pg) => {
                let (status, body) = stored_response(&created);
                let debit = |pg: &mut diesel::PgConnection| {
                    charges::debit_and_record(pg, &charge, lock_token, status, &body)
                };
                let mut recorded = debit(pg)?;
                if recorded == charges::Recorded::NotDebited {
                    // The account may have changed since the debit looked (a hold released,
                    // funds paid in). Decided again with its row held locked, the debit and
                    // the decline's reason read below are true of one version of it.
                    accounts::lock(pg, cmd.customer_id.as_str())?;
                    recorded = debit(pg)?;
                }
                match recorded {
                    charges::Recorded::Charged => return Ok(created),
                    charges::Recorded::ClaimLost => return Err(ExecError::LostClaim),
                    charges::Recorded::NotDebited => false,
                }
            }
            AnyConnection::Sqlite(_) => {
                accounts::debit(c, &charge.customer_id, currency, charge.amount_minor, now)?
            }
        };
        let reply = if debited {
            charges::insert(c, &charge)?;
            created
        } else {
            let account = accounts::find(c, cmd.customer_id.as_str())?;
            ChargeReply::Declined(Decline::for_account(
                &cmd.customer_id,
                cmd.amount.currency(),
                account.as_ref().map(|a| AccountSeen {
                    status: a.status,
                    currency: &a.currency,
                }),
            ))
        };
        let (status, body) = stored_response(&reply);
        if !idempotency::complete(
            c,
            &cmd.caller,
            cmd.key.as_str(),
            lock_token,
            status,
            &body,
            now,
        )? {
            return Err(ExecError::LostClaim);
        }
        Ok(reply)
    });
    match outcome {
        Ok(reply) => Ok(reply),
        Err(ExecError::LostClaim) => Err(ChargeError::KeyInFlight),
        // The ledger holds one charge per caller and key: another replica, which took this
        // request's stale claim over, charged first. Same answer as a lost claim.
        Err(ExecError::Db(e)) if db::is_unique_violation(&e) => Err(ChargeError::KeyInFlight),
        Err(ExecError::Db(e)) => Err(DbError::from(e).into()),
    }
}

/// The status and body kept for replays.
fn stored_response(reply: &ChargeReply) -> (u16, String) {
    match reply {
        ChargeReply::Created(charge) => (201, serde_json::to_string(charge).unwrap_or_default()),
        ChargeReply::Declined(decline) => {
            let problem = decline.problem();
            (
                problem.status,
                serde_json::to_string(&problem).unwrap_or_default(),
            )
        }
        ChargeReply::Replayed { status, body } => (*status, body.clone()),
    }
}

/// A charge as the API shows it; `None` for a row that no longer parses (never expected).
pub fn to_response(charge: charges::Charge) -> Option<ChargeResponse> {
    Some(ChargeResponse {
        amount: Money::new(charge.amount_minor, charge.currency.parse().ok()?).ok()?,
        invoice_id: InvoiceId::parse(charge.invoice_id).ok()?,
        customer_id: CustomerId::parse(charge.customer_id).ok()?,
        status: ChargeStatus::Succeeded,
        created_at: rfc3339(charge.created_at),
        id: charge.id,
    })
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(SecondsFormat::Millis, true)
}
