use std::process::ExitCode;

use api_contract::{Currency, CustomerId, Money};
use clap::{Parser, Subcommand};
use payment_provider::accounts::{self, AccountError, AccountView};
use payment_provider::config::Config;
use payment_provider::db::DbPool;
use payment_provider::domain::AccountAction;
use payment_provider::startup::{Application, migrated_pool};
use payment_provider::telemetry;

/// Stand-in payment service provider. Configured by environment variables (see README).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// An operator's action on an account, in the database DATABASE_URL names (never over
    /// the API: callers charge accounts, only operators fund, hold or close them).
    #[command(subcommand)]
    Accounts(AccountsCommand),
}

#[derive(Subcommand, Clone)]
enum AccountsCommand {
    /// Print the account's balance and status.
    Show {
        #[arg(value_parser = customer)]
        customer: CustomerId,
    },
    /// Pay money into the account, in its currency: `fund C001 25.00 EUR`. A closed account
    /// takes none.
    Fund {
        #[arg(value_parser = customer)]
        customer: CustomerId,
        /// In major units, e.g. 25.00 (at most the currency's decimals).
        #[arg(allow_hyphen_values = true)]
        amount: String,
        /// The account's currency, e.g. EUR.
        #[arg(value_parser = currency)]
        currency: Currency,
    },
    /// Put the account on hold: its charges are declined try_again_later until released.
    Hold {
        #[arg(value_parser = customer)]
        customer: CustomerId,
    },
    /// Lift a hold: the account is charged again.
    Release {
        #[arg(value_parser = customer)]
        customer: CustomerId,
    },
    /// Close the account for good: its charges are declined account_closed.
    Close {
        #[arg(value_parser = customer)]
        customer: CustomerId,
    },
}

fn customer(s: &str) -> Result<CustomerId, String> {
    CustomerId::parse(s).map_err(|e| e.to_string())
}

fn currency(s: &str) -> Result<Currency, String> {
    s.parse()
        .map_err(|e: api_contract::MoneyError| e.to_string())
}

impl AccountsCommand {
    async fn run(self, pool: &DbPool) -> Result<AccountView, AccountError> {
        match self {
            AccountsCommand::Show { customer } => accounts::show(pool, customer).await,
            AccountsCommand::Fund {
                customer,
                amount,
                currency,
            } => {
                let amount = Money::parse_decimal(amount.trim(), currency)
                    .map_err(|e| AccountError::Refused(format!("amount {amount:?}: {e}")))?;
                accounts::fund(pool, customer, amount).await
            }
            AccountsCommand::Hold { customer } => {
                accounts::change_status(pool, customer, AccountAction::Hold).await
            }
            AccountsCommand::Release { customer } => {
                accounts::change_status(pool, customer, AccountAction::Release).await
            }
            AccountsCommand::Close { customer } => {
                accounts::change_status(pool, customer, AccountAction::Close).await
            }
        }
    }
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
        .and_then(|runtime| runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A refused operator action is an answer to print, not a failure to log.
            if let Some(refused @ (AccountError::NotFound(_) | AccountError::Refused(_))) =
                e.downcast_ref::<AccountError>()
            {
                eprintln!("payment-provider: {refused}");
                return ExitCode::FAILURE;
            }
            tracing::error!(error = %format!("{e:#}"), "payment-provider failed");
            eprintln!("payment-provider: {e:#}");
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
        Command::Accounts(action) => {
            let account = action.run(&migrated_pool(&config).await?).await?;
            println!("{account}");
        }
    }
    Ok(())
}
