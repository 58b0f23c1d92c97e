//! A state-machine property test of the claim protocol, on the real queries: random
//! interleavings of three workers claiming, calling (renewing the claim first), settling,
//! crashing and the clock moving on, checked after every step against invariants read from
//! the database. The provider is a model: one charge per key, replayed after that.
//!
//! The seed is printed; `CLAIMS_MODEL_SEED=<n>` replays a run.

use std::collections::HashMap;

use chrono::{NaiveDateTime, TimeDelta, Utc};
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use invoice_app::db::{self, AnyConnection, invoices, pay_runs, schema};
use invoice_app::domain::{RunId, RunResult, Summary, Trigger, WorkerId};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use test_support::{Service, TestDb};

use crate::helpers::Backend;
use test_support::both_backends;

const INVOICES: i64 = 6;
const WORKERS: usize = 3;
const LEASE: i64 = 10;

#[derive(Debug, Clone)]
enum Op {
    Claim {
        w: usize,
        limit: i64,
    },
    /// The k-th invoice the worker holds: renew, then call if still held.
    Call {
        w: usize,
        k: usize,
        transient: bool,
    },
    /// Record every answer the worker has, as `billing::settle` does.
    Settle {
        w: usize,
    },
    /// The process dies: its memory is gone, a new process takes its place.
    Crash {
        w: usize,
    },
    Tick {
        secs: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WORKERS;
    prop_oneof![
        1 => (w.clone(), 1..4i64).prop_map(|(w, limit)| Op::Claim { w, limit }),
        3 => (w.clone(), 0..4usize, prop::bool::weighted(0.2))
            .prop_map(|(w, k, transient)| Op::Call { w, k, transient }),
        2 => w.clone().prop_map(|w| Op::Settle { w }),
        1 => w.prop_map(|w| Op::Crash { w }),
        1 => (0..15i64).prop_map(|secs| Op::Tick { secs }),
    ]
}

struct Worker {
    id: WorkerId,
    run: RunId,
    held: Vec<String>,
    /// Invoice → the model provider's charge id, or `None` for a transient failure.
    answered: Vec<(String, Option<String>)>,
}

impl Worker {
    fn holder(&self) -> invoices::Holder<'_> {
        invoices::Holder {
            worker: &self.id,
            run: &self.run,
        }
    }
}

struct Model {
    now: NaiveDateTime,
    workers: Vec<Worker>,
    /// The provider's ledger: one charge per invoice key.
    charges: HashMap<String, String>,
    /// Who last called each invoice and until when its lease ran, to catch two live holders.
    live: HashMap<String, (WorkerId, NaiveDateTime)>,
}

fn new_worker(c: &mut AnyConnection, now: NaiveDateTime) -> Worker {
    let worker = Worker {
        id: WorkerId::new("w"),
        run: RunId::generate(),
        held: Vec::new(),
        answered: Vec::new(),
    };
    pay_runs::insert(
        c,
        &pay_runs::PayRunRow {
            id: worker.run.clone(),
            trigger: Trigger::Api,
            status: invoice_app::domain::RunStatus::Running,
            paid: 0,
            failed: 0,
            retry_later: 0,
            error: None,
            started_at: now,
            finished_at: None,
            worker_id: Some(worker.id.clone()),
            heartbeat_at: Some(now),
            started_by: None,
            kind: invoice_app::domain::RunKind::Pay,
        },
    )
    .expect("run row");
    worker
}

fn reset(c: &mut AnyConnection) {
    diesel::delete(schema::payment_attempts::table)
        .execute(c)
        .expect("reset");
    diesel::delete(schema::invoices::table)
        .execute(c)
        .expect("reset");
    diesel::delete(schema::pay_runs::table)
        .execute(c)
        .expect("reset");
    let now = Utc::now().naive_utc();
    let rows: Vec<invoices::InvoiceRow> = (0..INVOICES)
        .map(|i| invoices::InvoiceRow {
            id: format!("inv-{i}"),
            customer_id: "C001".into(),
            amount_minor: 100 + i,
            currency: "EUR".into(),
            description: String::new(),
            status: invoice_app::domain::InvoiceStatus::Pending,
            failure_reason: None,
            charge_id: None,
            claimed_by: None,
            lease_until: None,
            last_run_id: None,
            created_at: now,
            updated_at: now,
            paid_at: None,
            attention: None,
            created_by: None,
            attempt_count: 0,
            past_due_since: None,
            next_attempt_at: None,
        })
        .collect();
    invoices::insert(c, &rows).expect("invoices");
}

impl Model {
    fn apply(&mut self, c: &mut AnyConnection, op: &Op) -> Result<(), TestCaseError> {
        let lease = TimeDelta::seconds(LEASE);
        let now = self.now;
        match *op {
            Op::Tick { secs } => self.now += TimeDelta::seconds(secs),
            Op::Crash { w } => self.workers[w] = new_worker(c, now),
            Op::Claim { w, limit } => {
                let worker = &mut self.workers[w];
                let claimed = invoices::claim(
                    c,
                    worker.holder(),
                    invoices::Scan::default(),
                    now,
                    now + lease,
                    limit,
                )
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                worker.held.extend(claimed.rows.into_iter().map(|r| r.id));
            }
            Op::Call { w, k, transient } => {
                let worker = &mut self.workers[w];
                if worker.held.is_empty() {
                    return Ok(());
                }
                let id = worker.held.remove(k % worker.held.len());
                let held = invoices::renew(c, &id, worker.holder(), now, now + lease)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                if !held {
                    return Ok(()); // taken over: no call
                }
                if let Some((other, until)) = self.live.get(&id) {
                    prop_assert!(
                        other == &worker.id || *until <= now,
                        "{} called {id} while {other}'s lease ran until {until} (now {now})",
                        worker.id
                    );
                }
                self.live
                    .insert(id.clone(), (worker.id.clone(), now + lease));
                let answer = (!transient).then(|| {
                    self.charges
                        .entry(id.clone())
                        .or_insert_with(|| format!("ch-{id}"))
                        .clone()
                });
                worker.answered.push((id, answer));
            }
            Op::Settle { w } => {
                let worker = &mut self.workers[w];
                let answered = std::mem::take(&mut worker.answered);
                let paid: Vec<(&str, &str)> = answered
                    .iter()
                    .filter_map(|(id, ch)| Some((id.as_str(), ch.as_deref()?)))
                    .collect();
                let changed = invoices::mark_all_paid(c, &paid, now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut counts = Summary::default();
                counts.add(
                    RunResult::Paid,
                    i64::try_from(changed.len()).unwrap_or(i64::MAX),
                );
                for (id, _) in answered.iter().filter(|(_, ch)| ch.is_none()) {
                    let released = invoices::release(c, id, worker.holder(), now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    counts.add(RunResult::RetryLater, i64::try_from(released).unwrap_or(0));
                }
                pay_runs::add(c, &worker.run, counts, now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                // Settled or handed back: the worker's claims on these end here.
                for (id, _) in &answered {
                    if self
                        .live
                        .get(id)
                        .is_some_and(|(holder, _)| holder == &worker.id)
                    {
                        self.live.remove(id);
                    }
                }
            }
        }
        self.check(c)
    }

    /// Invariants read from the database.
    fn check(&self, c: &mut AnyConnection) -> Result<(), TestCaseError> {
        use schema::invoices::dsl;
        let rows: Vec<(String, String, Option<String>, Option<String>)> = dsl::invoices
            .select((dsl::id, dsl::status, dsl::charge_id, dsl::claimed_by))
            .load(c)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut paid = 0;
        for (id, status, charge, claimed_by) in &rows {
            match status.as_str() {
                "paid" => {
                    paid += 1;
                    prop_assert_eq!(charge.as_ref(), self.charges.get(id), "{} paid", id);
                }
                "processing" => prop_assert!(claimed_by.is_some(), "{id} processing unclaimed"),
                _ => prop_assert!(charge.is_none(), "{id} {status} with a charge id"),
            }
        }
        let counted: Vec<i32> = schema::pay_runs::table
            .select(schema::pay_runs::paid)
            .load(c)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            counted.iter().map(|n| i64::from(*n)).sum::<i64>(),
            paid,
            "Σ paid over runs = invoices paid"
        );
        Ok(())
    }

    /// Everyone dies, the leases lapse, one worker pays the rest.
    fn drain(&mut self, c: &mut AnyConnection) -> Result<(), TestCaseError> {
        self.now += TimeDelta::seconds(LEASE + 1);
        self.workers[0] = new_worker(c, self.now);
        for _ in 0..4 {
            self.apply(
                c,
                &Op::Claim {
                    w: 0,
                    limit: INVOICES,
                },
            )?;
            while !self.workers[0].held.is_empty() {
                self.apply(
                    c,
                    &Op::Call {
                        w: 0,
                        k: 0,
                        transient: false,
                    },
                )?;
            }
            self.apply(c, &Op::Settle { w: 0 })?;
        }
        let unpaid: i64 = schema::invoices::table
            .filter(schema::invoices::status.ne("paid"))
            .count()
            .get_result(c)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(unpaid, 0, "invoices left unpaid after the drain");
        prop_assert_eq!(self.charges.len() as i64, INVOICES);
        Ok(())
    }
}

async fn random_interleavings_keep_the_claim_invariants(backend: Backend) {
    let test_db = TestDb::create(backend, Service::InvoiceApp);
    let url = crate::helpers::db_url(&test_db);
    let pool = db::pool(&url, 1);
    db::run(&pool, db::migrate).await.expect("migrated");
    let seed: u64 = std::env::var("CLAIMS_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("claims model seed: {seed} (replay with CLAIMS_MODEL_SEED={seed})");
    let result = tokio::task::spawn_blocking(move || {
        let conn = std::cell::RefCell::new(pool.get().expect("connection"));
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let config = Config {
            cases: 128,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
        runner.run(&prop::collection::vec(op(), 1..60), |ops| {
            let mut conn = conn.borrow_mut();
            let c: &mut AnyConnection = &mut conn;
            reset(c);
            let now = Utc::now().naive_utc();
            let workers = (0..WORKERS).map(|_| new_worker(c, now)).collect();
            let mut model = Model {
                now,
                workers,
                charges: HashMap::new(),
                live: HashMap::new(),
            };
            for op in &ops {
                model.apply(c, op)?;
            }
            model.drain(c)
        })
    })
    .await
    .expect("model task");
    if let Err(e) = result {
        panic!("claims model failed with seed {seed}: {e}");
    }
}

both_backends!(random_interleavings_keep_the_claim_invariants);
