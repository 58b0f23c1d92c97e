//! Building the application: pool, migrations, seed, state, listener.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::auth::{CallerTokens, DEV_TOKEN};
use crate::config::Config;
use crate::db::{self, DbPool};
use crate::faults::Faults;
use crate::metrics::Metrics;
use crate::{http, pact_states, seed};

/// Shared by every worker.
pub struct AppState {
    pub pool: DbPool,
    pub callers: CallerTokens,
    pub faults: Faults,
    pub stale_claim_after: Duration,
    pub metrics: Metrics,
    /// Used by Pact provider states only.
    pub pact_held: pact_states::HeldConnections,
}

pub struct Application {
    port: u16,
    server: Server,
    pool: DbPool,
}

impl Application {
    /// Binds the listener first, so `127.0.0.1:0` gives tests a free port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = migrated_pool(&config).await?;
        let created = seed::apply(&pool, &config.seed).await?;
        if created > 0 {
            tracing::info!(created, "seeded accounts");
        }
        let callers = config.callers.clone().unwrap_or_else(|| {
            tracing::warn!(
                token = DEV_TOKEN,
                "CALLER_TOKENS is not set: accepting the development token for caller invoice-app; never do this in production"
            );
            CallerTokens::dev_default()
        });
        if config.faults.configured() {
            tracing::warn!(faults = ?config.faults, "fault injection is on");
        }
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            callers,
            faults: config.faults.clone(),
            stale_claim_after: config.stale_claim_after,
            metrics: Metrics::new()?,
            pact_held: Default::default(),
        });

        let listener = TcpListener::bind(config.listen_addr)
            .with_context(|| format!("binding LISTEN_ADDR {}", config.listen_addr))?;
        let port = listener.local_addr()?.port();
        let pact_states = config.pact_states;
        if pact_states {
            tracing::warn!(
                path = http::PACT_STATES_PATH,
                "PACT_PROVIDER_STATES is on: every state change empties the ledger; for contract verification only"
            );
        }
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(http::observe))
                .app_data(state.clone())
                .configure(|cfg| {
                    if pact_states {
                        http::pact_state_routes(cfg);
                    }
                    http::routes(cfg);
                })
        })
        .listen(listener)?
        .shutdown_timeout(20)
        .run();
        tracing::info!(
            port,
            backend = config.database_url.backend(),
            "payment-provider listening"
        );
        Ok(Application { port, server, pool })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application's own pool, for tests and audits of the ledger.
    pub fn pool(&self) -> DbPool {
        self.pool.clone()
    }

    /// Stops the server from elsewhere (tests simulate an outage with it).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT, then finishes in-flight requests (graceful shutdown).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// A pool whose database has every migration applied.
pub async fn migrated_pool(config: &Config) -> anyhow::Result<DbPool> {
    let pool = db::pool(&config.database_url, config.pool_size);
    let applied = db::run(&pool, db::migrate)
        .await
        .with_context(|| format!("preparing the {} database", config.database_url.backend()))?;
    if applied > 0 {
        tracing::info!(applied, "ran database migrations");
    }
    Ok(pool)
}
