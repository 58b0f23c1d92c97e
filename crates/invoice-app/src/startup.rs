//! Building the application: pool, migrations, seed, payment client, biller, schedule,
//! authentication, the API listener and the metrics listener.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use secrecy::SecretString;

use crate::auth::{Authenticator, DEV_API_KEY};
use crate::billing::{Biller, Cadence, PaySettings};
use crate::config::{Config, DEV_PROVIDER_TOKEN, Seed};
use crate::db::{self, DbPool};
use crate::metrics::Metrics;
use crate::payment_client::{PaymentClient, ProviderToken};
use crate::state::AppState;
use crate::{http, scheduler, seed};

/// How long shutdown waits for pay runs in progress before handing back their claims.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

pub struct Application {
    port: u16,
    metrics_port: u16,
    server: Server,
    metrics_server: Server,
    biller: Arc<Biller>,
    schedule: Vec<tokio::task::JoinHandle<()>>,
    housekeeping: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Binds the listener first, so `127.0.0.1:0` gives tests a free port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Before anything else: an API open to the network without credentials must not start.
        let auth = Authenticator::new(&config.auth, config.listen_addr)?;
        let pool = migrated_pool(&config).await?;
        if config.seed == Seed::Demo {
            let created = seed::apply_demo(&pool).await?;
            if created > 0 {
                tracing::info!(created, "seeded demo invoices");
            }
        }
        let metrics = Metrics::new()?.with_routes(http::slo_labels());
        let biller = biller(&config, pool.clone(), metrics.clone())?;
        // Best effort: any later run or the housekeeping closes them too.
        if let Err(e) = biller.close_abandoned().await {
            tracing::warn!(error = %e, "could not close abandoned pay runs at start-up");
        }
        let schedule = [
            (Cadence::Monthly, &config.pay_schedule),
            (Cadence::Daily, &config.daily_schedule),
        ]
        .into_iter()
        .filter_map(|(cadence, schedule)| {
            let schedule = schedule.clone()?;
            Some(scheduler::spawn(biller.clone(), cadence, schedule))
        })
        .collect();
        let housekeeping = scheduler::spawn_housekeeping(
            biller.clone(),
            pool.clone(),
            config.idempotency_key_retention,
            (config.claim_lease / 2).min(Duration::from_secs(60)),
        );
        let state = web::Data::new(AppState {
            pool,
            biller: biller.clone(),
            metrics,
            auth,
        });
        let prefetch = state.clone();
        tokio::spawn(async move { prefetch.auth.prefetch().await });
        if config.uses_dev_api_key()? {
            tracing::warn!(
                key = DEV_API_KEY,
                "neither API_AUTH_ISSUER nor API_KEYS is set: the API accepts the public development key, on loopback only"
            );
        }

        let listener = TcpListener::bind(config.listen_addr)
            .with_context(|| format!("binding LISTEN_ADDR {}", config.listen_addr))?;
        let port = listener.local_addr()?.port();
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .with_context(|| format!("binding METRICS_ADDR {}", config.metrics_addr))?;
        let metrics_port = metrics_listener.local_addr()?.port();
        let api_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(http::observe))
                .app_data(api_state.clone())
                .configure(http::routes)
        })
        .listen(listener)?
        .shutdown_timeout(20)
        // Stopped by `run_until_stopped`, which tells the biller first (see `StopHandle`).
        .disable_signals()
        .run();
        // Stopped with the API server (see `run_until_stopped`), not by signals of its own.
        let metrics_server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(http::metrics_routes)
        })
        .workers(1)
        .disable_signals()
        .listen(metrics_listener)?
        .run();
        tracing::info!(port, metrics_port, backend = config.database_url.backend(), provider = %config.provider_url, "invoice-app listening");
        Ok(Application {
            port,
            metrics_port,
            server,
            metrics_server,
            biller,
            schedule,
            housekeeping,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Stops the application as SIGTERM does.
    pub fn handle(&self) -> StopHandle {
        StopHandle {
            server: self.server.handle(),
            biller: self.biller.clone(),
        }
    }

    /// Serves until SIGTERM/SIGINT (or `StopHandle::stop`); then lets pay runs finish (for a
    /// while) and hands back whatever they still hold.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stop = self.handle();
        let signals = tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("stop signal: stopping");
            stop.stop(true).await;
        });
        let metrics = self.metrics_server.handle();
        let metrics_served = tokio::spawn(self.metrics_server);
        let served = self.server.await;
        signals.abort();
        metrics.stop(true).await;
        drop(metrics_served.await);
        self.housekeeping.abort();
        for schedule in self.schedule {
            schedule.abort();
        }
        self.biller.shutdown(SHUTDOWN_GRACE).await;
        served
    }
}

/// Stops an `Application`: pay runs stop claiming and calling first, then the HTTP server
/// drains its requests (a synchronous pay run among them ends as soon as its calls in
/// flight are recorded), then the runs' claims are handed back.
#[derive(Clone)]
pub struct StopHandle {
    server: actix_web::dev::ServerHandle,
    biller: Arc<Biller>,
}

impl StopHandle {
    pub async fn stop(&self, graceful: bool) {
        self.biller.stop_claiming();
        self.server.stop(graceful).await;
    }
}

/// SIGTERM (what Kubernetes sends a pod it stops) or Ctrl-C; never, if neither can be
/// listened for.
pub async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                () = ctrl_c => {}
            }
            return;
        }
    }
    ctrl_c.await;
}

/// A pool whose database has every migration applied.
pub async fn migrated_pool(config: &Config) -> anyhow::Result<DbPool> {
    let pool = db::pool_with(&config.database_url, config.pool_size, config.db_limits);
    let applied = db::run(&pool, db::migrate)
        .await
        .with_context(|| format!("preparing the {} database", config.database_url.backend()))?;
    if applied > 0 {
        tracing::info!(applied, "ran database migrations");
    }
    // The database's clock decides leases and billing from the first claim on.
    if !config.dev_clock_shift.is_zero() {
        tracing::warn!(
            shift = %humantime::format_duration(config.dev_clock_shift.to_std().unwrap_or_default()),
            "DEV_CLOCK_SHIFT: this demo's SQLite database reads its clock shifted ahead"
        );
        db::clock::shift_sqlite(config.dev_clock_shift);
    }
    let offset = db::run(&pool, db::clock::sync)
        .await
        .context("reading the database's clock")?;
    tracing::debug!(
        offset_ms = offset.num_milliseconds(),
        "database clock offset"
    );
    tokio::spawn(db::clock::keep_in_step(pool.clone()));
    Ok(pool)
}

/// The biller with its payment client, as configured.
pub fn biller(config: &Config, pool: DbPool, metrics: Metrics) -> anyhow::Result<Arc<Biller>> {
    let token = config.provider_token.clone().unwrap_or_else(|| {
        tracing::warn!(
            "PAYMENT_PROVIDER_TOKEN is not set: using payment-provider's development token"
        );
        SecretString::from(DEV_PROVIDER_TOKEN)
    });
    let token = match &config.provider_token_file {
        Some(path) => ProviderToken::file(path.clone(), token),
        None => token.into(),
    };
    let client = PaymentClient::trusting(
        &config.provider_url,
        token,
        config.charge_timeout,
        config.pay_concurrency,
        config.provider_ca_file.as_deref(),
    )
    .context("building the payment-provider client")?;
    let settings = PaySettings {
        concurrency: config.pay_concurrency,
        lease: config.claim_lease,
        retry_max_elapsed: config.retry_max_elapsed,
        max_runs: config.pay_max_runs,
        dunning: config.dunning_schedule.clone(),
    };
    Ok(Biller::new(pool, client, settings, metrics))
}
