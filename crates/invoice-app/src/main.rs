use std::process::ExitCode;

use api_contract::InvoiceId;
use clap::{Parser, Subcommand};
use invoice_app::billing::{Biller, BillingError, Detail, PayRunReport, Trigger};
use invoice_app::config::Config;
use invoice_app::domain::{RunKind, RunStatus};
use invoice_app::metrics::Metrics;
use invoice_app::startup::{Application, SHUTDOWN_GRACE, biller, migrated_pool, stop_signal};
use invoice_app::telemetry;

/// Keeps invoices and pays them at payment-provider. Configured by environment variables.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// Serve the API and the in-process schedule (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Pay every pending invoice once and exit (for a Kubernetes CronJob).
    Pay,
    /// Look every invoice that may have been charged up at payment-provider by its
    /// idempotency key, settle it from the answer, and exit.
    Reconcile {
        /// Only this invoice, if it waits (pending or past due), whatever its last attempt.
        #[arg(long, value_name = "ID")]
        invoice: Option<String>,
    },
    /// Retry the past-due invoices that are due once and exit (the daily CronJob).
    Daily,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // The API's credentials matter only to the command that serves it.
    let config = Config::from_env().and_then(|config| match command {
        Command::Serve => config.uses_dev_api_key().map(|_| config),
        Command::Migrate | Command::Pay | Command::Daily | Command::Reconcile { .. } => Ok(config),
    });
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("invoice-app: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match telemetry::init("invoice-app", config.log_format) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("invoice-app: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(command, config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "invoice-app failed");
            eprintln!("invoice-app: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            Application::build(config)
                .await?
                .run_until_stopped()
                .await?
        }
        Command::Migrate => drop(migrated_pool(&config).await?),
        Command::Pay => run_once(&config, RunKind::Pay).await?,
        Command::Daily => {
            // The retries first, then the look-ups, as the in-process daily schedule does.
            let pool = migrated_pool(&config).await?;
            let biller = biller(&config, pool, Metrics::new()?)?;
            let retrying = biller.pay_all(RunKind::Dunning, Trigger::Cli, Detail::Counts);
            run_to_the_end(&biller, retrying, "daily").await?;
            let reconciling = biller.reconcile(Trigger::Cli, None, None);
            run_to_the_end(&biller, reconciling, "reconcile").await?;
        }
        Command::Reconcile { invoice } => {
            // A bad id is the operator's typo: said before anything is claimed.
            let only = invoice
                .map(InvoiceId::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--invoice: {e}"))?;
            let pool = migrated_pool(&config).await?;
            let biller = biller(&config, pool, Metrics::new()?)?;
            let reconciling = biller.reconcile(Trigger::Cli, None, only);
            run_to_the_end(&biller, reconciling, "reconcile").await?;
        }
    }
    Ok(())
}

/// One run of `kind`, to its end; an error unless it completed.
async fn run_once(config: &Config, kind: RunKind) -> anyhow::Result<()> {
    let pool = migrated_pool(config).await?;
    let biller = biller(config, pool, Metrics::new()?)?;
    let paying = biller.pay_all(kind, Trigger::Cli, Detail::Counts);
    run_to_the_end(&biller, paying, "pay").await
}

/// Runs a run of the CLI (`what`) until it ends or a stop signal comes, then prints its
/// summary as JSON; an error unless it completed.
async fn run_to_the_end(
    biller: &Biller,
    run: impl std::future::Future<Output = Result<PayRunReport, BillingError>>,
    what: &str,
) -> anyhow::Result<()> {
    tokio::pin!(run);
    let report = tokio::select! {
        report = &mut run => report?,
        () = stop_signal() => {
            // As the server does (a Job's pod is stopped the same way): claim no more,
            // settle the calls in hand, hand back what is still claimed. The run
            // closes failed, saying why, instead of staying `running`.
            tracing::warn!("stop signal: finishing the calls in hand");
            let (report, ()) =
                tokio::join!(&mut run, biller.shutdown(SHUTDOWN_GRACE));
            report?
        }
    };
    // A run whose end could not be written (the database away) is written before the
    // process exits, if the database is back within a lease.
    if !biller.finish_closing(biller.lease()).await {
        tracing::error!(run_id = %report.run_id, "the run's end could not be written within a lease; another process's housekeeping will close it");
    }
    println!(
        "{}",
        serde_json::json!({
            "run_id": report.run_id,
            "status": report.status.as_str(),
            "paid": report.summary.paid,
            "failed": report.summary.failed,
            "retry_later": report.summary.retry_later,
            "error": report.error,
        })
    );
    // Anything but completed fails the Job, so Kubernetes retries it (backoffLimit).
    if report.status != RunStatus::Completed {
        let why = report
            .error
            .unwrap_or_else(|| report.status.as_str().to_owned());
        anyhow::bail!("{what} run {} did not complete: {why}", report.run_id);
    }
    Ok(())
}
