//! What every worker shares. Handlers read it; services take only the part they need.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::billing::Biller;
use crate::db::DbPool;
use crate::metrics::Metrics;

pub struct AppState {
    pub pool: DbPool,
    pub biller: Arc<Biller>,
    pub metrics: Metrics,
    pub auth: Authenticator,
}
