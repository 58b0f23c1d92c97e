use std::process::ExitCode;

use clap::{Parser, Subcommand};
use payment_provider::config::Config;
use payment_provider::startup::{Application, migrated_pool};
use payment_provider::telemetry;

/// Stand-in payment service provider. Configured by environment variables (see README).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone, Copy)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("payment-provider: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match telemetry::init("payment-provider", config.log_format) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("payment-provider: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                match cli.command.unwrap_or(Command::Serve) {
                    Command::Serve => {
                        Application::build(config)
                            .await?
                            .run_until_stopped()
                            .await?
                    }
                    Command::Migrate => drop(migrated_pool(&config).await?),
                }
                anyhow::Ok(())
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "payment-provider failed");
            eprintln!("payment-provider: {e:#}");
            ExitCode::FAILURE
        }
    }
}
