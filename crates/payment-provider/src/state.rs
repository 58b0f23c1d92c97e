//! What every worker shares. Handlers read it; services take only the part they need.

use crate::auth::Authenticator;
use crate::charging::Charging;
use crate::db::DbPool;
use crate::metrics::Metrics;
use crate::pact_states::HeldConnections;

pub struct AppState {
    pub pool: DbPool,
    pub auth: Authenticator,
    pub charging: Charging,
    pub metrics: Metrics,
    /// Used by Pact provider states only.
    pub pact_held: HeldConnections,
}
