//! The real payment-provider on a random loopback port with a database of its own: the
//! provider's own tests and invoice-app's charge against it.

use api_contract::{AccountResponse, CustomerId, Money};
use diesel::RunQueryDsl;
use payment_provider::auth::CallerTokens;
use payment_provider::config::{Config, Seed};
use payment_provider::db::{self, DbPool, charges::Charge};
use payment_provider::domain::AccountAction;
use payment_provider::startup::Application;

use crate::db::{Backend, DbUrl, Service, TestDb};

/// The token tests use for caller `invoice-app`.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// The real provider, serving on a random loopback port with its own database.
pub struct TestProvider {
    pub base_url: String,
    /// Where `/metrics` is served (its own listener).
    pub metrics_url: String,
    pub token: String,
    pub pool: DbPool,
    pub handle: actix_web::dev::ServerHandle,
    config: Config,
    // Dropped last: the database outlives the server's use of it.
    pub db: TestDb,
}

impl TestProvider {
    /// Starts a provider with no accounts; `configure` adjusts the settings (faults, …).
    pub async fn spawn(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestProvider {
        crate::init_test_log();
        let db = TestDb::create(backend, Service::PaymentProvider);
        let mut config = Config::from_lookup(&|_| None).expect("default configuration is valid");
        config.listen_addr = ([127, 0, 0, 1], 0).into();
        config.metrics_addr = ([127, 0, 0, 1], 0).into();
        config.database_url = match &db.url {
            DbUrl::Postgres(url) => db::DbUrl::Postgres(url.clone()),
            DbUrl::Sqlite(path) => db::DbUrl::Sqlite(path.clone()),
        };
        config.pool_size = config.database_url.default_pool_size();
        config.seed = Seed::None;
        config.callers =
            Some(CallerTokens::parse(&format!("invoice-app:{TEST_TOKEN}")).expect("valid token"));
        configure(&mut config);
        let app = Application::build(config.clone())
            .await
            .expect("payment-provider starts");
        // A restart comes back on the same port.
        config.listen_addr.set_port(app.port());
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let provider = TestProvider {
            base_url: format!("{scheme}://127.0.0.1:{}", app.port()),
            metrics_url: format!("http://127.0.0.1:{}/metrics", app.metrics_port()),
            token: TEST_TOKEN.to_owned(),
            pool: app.pool(),
            handle: app.handle(),
            config,
            db,
        };
        tokio::spawn(app.run_until_stopped());
        provider
    }

    /// The provider's own database, as its configuration names it.
    pub fn database_url(&self) -> db::DbUrl {
        self.config.database_url.clone()
    }

    /// Stops the server at once (requests in flight are cut off, as in a crash).
    pub async fn kill(&self) {
        self.handle.stop(false).await;
    }

    /// Starts the provider again on the same port and database, after [`Self::kill`].
    pub async fn restart(&mut self) {
        let app = Application::build(self.config.clone())
            .await
            .expect("payment-provider restarts");
        self.pool = app.pool();
        self.handle = app.handle();
        self.metrics_url = format!("http://127.0.0.1:{}/metrics", app.metrics_port());
        tokio::spawn(app.run_until_stopped());
    }

    /// Opens an account with `balance`.
    pub async fn fund(&self, customer_id: &str, balance: Money) {
        let account = AccountResponse {
            customer_id: CustomerId::parse(customer_id).expect("valid customer id"),
            balance,
        };
        payment_provider::seed::insert(&self.pool, vec![account])
            .await
            .expect("account created");
    }

    /// Pays `amount` into an existing account, through the operators' own action.
    pub async fn deposit(&self, customer_id: &str, amount: Money) {
        let customer = CustomerId::parse(customer_id).expect("valid customer id");
        payment_provider::accounts::fund(&self.pool, customer, amount)
            .await
            .expect("account funded");
    }

    /// Holds, releases or closes an account, through the operators' own action.
    pub async fn account_action(&self, customer_id: &str, action: AccountAction) {
        let customer = CustomerId::parse(customer_id).expect("valid customer id");
        payment_provider::accounts::change_status(&self.pool, customer, action)
            .await
            .expect("account status changed");
    }

    /// Balance in minor units, `None` for no account.
    pub async fn balance(&self, customer_id: &str) -> Option<i64> {
        let id = customer_id.to_owned();
        db::run(&self.pool, move |c| {
            db::accounts::find(c, &id).map_err(anyhow::Error::from)
        })
        .await
        .expect("account lookup")
        .map(|a| a.balance_minor)
    }

    /// Sets an account's balance directly, as a deposit would.
    pub async fn set_balance(&self, customer_id: &str, minor_units: i64) {
        use diesel::{ExpressionMethods, QueryDsl};
        use payment_provider::db::schema::accounts::dsl;
        let id = customer_id.to_owned();
        db::run(&self.pool, move |c| {
            diesel::update(dsl::accounts.find(id))
                .set(dsl::balance_minor.eq(minor_units))
                .execute(c)
                .map_err(anyhow::Error::from)
        })
        .await
        .expect("balance set");
    }

    /// Every charge in the ledger.
    pub async fn ledger(&self) -> Vec<Charge> {
        db::run(&self.pool, |c| {
            db::charges::all(c).map_err(anyhow::Error::from)
        })
        .await
        .expect("ledger read")
    }
}
