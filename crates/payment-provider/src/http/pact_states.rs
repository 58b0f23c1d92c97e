use actix_web::{HttpResponse, web};

use crate::error::ApiError;
use crate::pact_states::{self, StateChange};
use crate::state::AppState;

/// `POST /_pact/provider-states` (test mode only): a state the provider cannot set up is a
/// 422 naming why, so the verifier's log shows it.
pub async fn change(
    body: web::Json<StateChange>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let values = pact_states::apply(&state.charging, &state.pact_held, &body)
        .await
        .map_err(|e| ApiError::InvalidRequest(format!("{e:#}")))?;
    Ok(HttpResponse::Ok().json(values))
}
