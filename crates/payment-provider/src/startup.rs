//! Building the application: pool, migrations, seed, state, listener.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::auth::{Authenticator, CallerTokens, DEV_TOKEN, WorkloadIdentity, dev_token_allowed};
use crate::charging::Charging;
use crate::config::Config;
use crate::db::{self, DbPool};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::{http, seed};

pub struct Application {
    port: u16,
    server: Server,
    metrics_port: u16,
    metrics_server: Server,
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
        let auth = authenticator(&config)?;
        if config.faults.configured() {
            tracing::warn!(faults = ?config.faults, "fault injection is on");
        }
        let metrics = Metrics::new()?;
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            auth,
            charging: Charging {
                pool: pool.clone(),
                faults: config.faults.clone(),
                stale_claim_after: config.stale_claim_after,
                metrics: metrics.clone(),
            },
            metrics,
            pact_held: Default::default(),
        });

        let listener = TcpListener::bind(config.listen_addr)
            .with_context(|| format!("binding LISTEN_ADDR {}", config.listen_addr))?;
        let port = listener.local_addr()?.port();
        let metrics_state = state.clone();
        let pact_states = config.pact_states;
        if pact_states {
            tracing::warn!(
                path = http::PACT_STATES_PATH,
                "PACT_PROVIDER_STATES is on: every state change empties the ledger; for contract verification only"
            );
        }
        let tls = api_tls(&config)?;
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
        });
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        }
        .shutdown_timeout(20)
        .run();

        // Metrics on a port of their own, which only Prometheus is let reach. Plain HTTP: it
        // serves /metrics alone, which takes and shows no credential.
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .with_context(|| format!("binding METRICS_ADDR {}", config.metrics_addr))?;
        let metrics_port = metrics_listener.local_addr()?.port();
        let metrics_server = HttpServer::new(move || {
            App::new()
                .app_data(metrics_state.clone())
                .configure(http::metrics_routes)
        })
        .workers(1)
        // Stopped with the API server (see `run_until_stopped`), not by signals of its own.
        .disable_signals()
        .listen(metrics_listener)?
        .shutdown_timeout(5)
        .run();
        tracing::info!(
            port,
            metrics_port,
            tls = config.tls.is_some(),
            backend = config.database_url.backend(),
            "payment-provider listening"
        );
        Ok(Application {
            port,
            server,
            metrics_port,
            metrics_server,
            pool,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `/metrics` is served on.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
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
    /// The metrics server lives as long as the API server.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics_server.handle();
        let metrics_task = tokio::spawn(self.metrics_server);
        let served = self.server.await;
        metrics.stop(true).await;
        if let Ok(Err(e)) = metrics_task.await {
            tracing::warn!(error = %e, "metrics server failed");
        }
        served
    }
}

/// How callers are known, as configured; the development token only on loopback.
fn authenticator(config: &Config) -> anyhow::Result<Authenticator> {
    let workload = config
        .workload
        .clone()
        .map(WorkloadIdentity::new)
        .transpose()
        .context("workload identity (CALLER_SUBJECTS, SA_*)")?;
    if let Some(workload) = &workload {
        tracing::info!(?workload, "accepting Kubernetes ServiceAccount tokens");
    }
    let tokens = match (&config.callers, &workload) {
        (Some(tokens), _) => {
            if tokens.includes_dev_token() {
                // Config refuses this too; `build` may be given a Config made by hand.
                anyhow::ensure!(
                    dev_token_allowed(config.listen_addr),
                    "CALLER_TOKENS lists the public development token, and LISTEN_ADDR {} is not loopback",
                    config.listen_addr
                );
                tracing::warn!(
                    token = DEV_TOKEN,
                    "CALLER_TOKENS includes the public development token; never do this in production"
                );
            }
            Some(tokens.clone())
        }
        (None, Some(_)) => None,
        (None, None) => {
            anyhow::ensure!(
                dev_token_allowed(config.listen_addr),
                "no CALLER_TOKENS and no CALLER_SUBJECTS, and LISTEN_ADDR {} is not loopback: the development token is accepted only on loopback",
                config.listen_addr
            );
            tracing::warn!(
                token = DEV_TOKEN,
                "neither CALLER_TOKENS nor CALLER_SUBJECTS is set: accepting the development token for caller invoice-app on loopback only; never do this in production"
            );
            Some(CallerTokens::dev_default())
        }
    };
    Ok(Authenticator::new(tokens, workload))
}

/// The API's TLS, as configured; plain HTTP only on loopback or when allowed on purpose
/// (config refuses the rest too; `build` may be given a Config made by hand).
fn api_tls(config: &Config) -> anyhow::Result<Option<rustls::ServerConfig>> {
    let Some(settings) = &config.tls else {
        anyhow::ensure!(
            config.listen_addr.ip().is_loopback() || config.allow_plaintext_http,
            "no TLS_CERT_FILE, and LISTEN_ADDR {} is not loopback: set TLS_CERT_FILE and TLS_KEY_FILE, or ALLOW_PLAINTEXT_HTTP=true",
            config.listen_addr
        );
        if !config.listen_addr.ip().is_loopback() {
            tracing::warn!(
                listen_addr = %config.listen_addr,
                "ALLOW_PLAINTEXT_HTTP=true: serving the API without TLS off loopback; callers' tokens cross the network in clear unless something else encrypts it"
            );
        }
        return Ok(None);
    };
    let tls = crate::tls::server_config(settings).context("TLS_CERT_FILE / TLS_KEY_FILE")?;
    tracing::info!(
        cert_file = %settings.cert_file.display(),
        reload_every_secs = settings.reload_every.as_secs_f64(),
        "serving the API over TLS"
    );
    Ok(Some(tls))
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
