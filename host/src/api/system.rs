//! System endpoints: server-wide preferences and build metadata (`/api/system`), and health and
//! readiness for probes (`/api/health`, `/api/ready`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, ApiJson, ApiState, AppState};
use crate::models::{SystemMetadata, SystemPreferences};

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(get_system_preferences, update_system_preferences))
        .routes(routes!(get_system_metadata))
        .routes(routes!(health))
        .routes(routes!(ready))
}

/// `GET /api/health`'s answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok`: the process answers.
    pub status: String,
}

/// `GET /api/ready`'s answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyResponse {
    /// Every check passed.
    pub ready: bool,
    pub checks: Vec<crate::app::health::ReadinessCheck>,
}

/// Liveness: the process answers (no token and no version header needed, for probes).
#[utoipa::path(get, path = "/api/health", tag = "System", operation_id = "health",
    responses((status = 200, body = HealthResponse)))]
async fn health() -> ApiJson<HealthResponse> {
    ApiJson(HealthResponse {
        status: "ok".into(),
    })
}

/// Readiness: the database takes a write, the container engine answers, the plugins folder is
/// loaded; 503 when a check fails, each check's state in the body (no token and no version
/// header needed, for probes).
#[utoipa::path(get, path = "/api/ready", tag = "System", operation_id = "ready",
    responses((status = 200, body = ReadyResponse), (status = 503, body = ReadyResponse)))]
async fn ready(state: AppState) -> (axum::http::StatusCode, ApiJson<ReadyResponse>) {
    let checks = state.app.readiness().await;
    let ready = checks.iter().all(|check| check.ok);
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, ApiJson(ReadyResponse { ready, checks }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSystemPreferencesRequest {
    /// Pause (true) or resume (false) the start of new runs on every pipeline.
    pub ignore_pipeline_run_events: Option<bool>,
}

/// Empty object, as Gofer v0 answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UpdateSystemPreferencesResponse {}

/// The commit this binary was built from (set by the build), or `unknown`.
pub fn build_commit() -> &'static str {
    option_env!("GOFER_BUILD_COMMIT").unwrap_or("unknown")
}

/// Get server-wide preferences.
#[utoipa::path(get, path = "/api/system", tag = "System", operation_id = "get_system_preferences",
    responses((status = 200, body = SystemPreferences), (status = "4XX", body = super::ErrorBody)))]
async fn get_system_preferences(state: AppState) -> Result<ApiJson<SystemPreferences>, ApiError> {
    Ok(ApiJson(state.read(|db| db.get_system()).await?))
}

/// Change server-wide preferences.
#[utoipa::path(patch, path = "/api/system", tag = "System", operation_id = "update_system_preferences",
    request_body = UpdateSystemPreferencesRequest,
    responses((status = 200, body = UpdateSystemPreferencesResponse), (status = "4XX", body = super::ErrorBody)))]
async fn update_system_preferences(
    state: AppState,
    ApiJson(request): ApiJson<UpdateSystemPreferencesRequest>,
) -> Result<ApiJson<UpdateSystemPreferencesResponse>, ApiError> {
    if let Some(ignore) = request.ignore_pipeline_run_events {
        state
            .write(move |db| db.set_ignore_pipeline_run_events(ignore))
            .await?;
    }
    Ok(ApiJson(UpdateSystemPreferencesResponse {}))
}

/// Build information; also a cheap health check.
#[utoipa::path(get, path = "/api/system/metadata", tag = "System", operation_id = "get_system_metadata",
    responses((status = 200, body = SystemMetadata), (status = "4XX", body = super::ErrorBody)))]
async fn get_system_metadata() -> ApiJson<SystemMetadata> {
    ApiJson(SystemMetadata {
        commit: build_commit().to_string(),
        semver: env!("CARGO_PKG_VERSION").to_string(),
    })
}
