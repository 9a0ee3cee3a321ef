//! Deployment endpoints (`/api/namespaces/{ns}/pipelines/{p}/deployments...`): v0's list and get,
//! and beyond v0 starting a canary or an A/B test, promoting, aborting and comparing.
//!
//! Starting, promoting and aborting are the application layer's (`crate::app`); the handlers here
//! translate HTTP and read. Must not hold SQL.

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Identity;
use super::pipelines::{DeploymentResponse, ListDeploymentsResponse, require_pipeline};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState, PageQuery};
use crate::app::{DeploymentRequest, PromoteRequest};
use crate::rollouts::Comparison;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_deployments, start_deployment))
        .routes(routes!(get_deployment))
        .routes(routes!(promote_deployment))
        .routes(routes!(abort_deployment))
        .routes(routes!(compare_deployment))
}

/// Path of a pipeline.
#[derive(Debug, Deserialize)]
struct PipelinePath {
    namespace_id: String,
    pipeline_id: String,
}

/// Path of a deployment.
#[derive(Debug, Deserialize)]
struct DeploymentPath {
    namespace_id: String,
    pipeline_id: String,
    deployment_id: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeploymentsQuery {
    /// Page size (default `api.default_page_limit`).
    pub limit: Option<u64>,
    /// Deployments to skip.
    pub offset: Option<u64>,
    /// Newest first (default: oldest first; beyond v0).
    pub reverse: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CompareDeploymentResponse {
    pub comparison: Comparison,
}

/// List a pipeline's deployments, oldest first (`reverse=true`: newest first), each with its
/// log (and for a canary or an A/B test its weights, rules and per-version tallies).
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/deployments", tag = "Deployments", operation_id = "list_deployments",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ListDeploymentsQuery),
    responses((status = 200, body = ListDeploymentsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_deployments(
    state: AppState,
    ApiPath(path): ApiPath<PipelinePath>,
    ApiQuery(query): ApiQuery<ListDeploymentsQuery>,
) -> Result<ApiJson<ListDeploymentsResponse>, ApiError> {
    let page = state.page(&PageQuery {
        limit: query.limit,
        offset: query.offset,
    })?;
    let reverse = query.reverse.unwrap_or(false);
    let deployments = state
        .read(move |db| {
            require_pipeline(db, &path.namespace_id, &path.pipeline_id)?;
            db.list_deployments(&path.namespace_id, &path.pipeline_id, page, reverse)?
                .into_iter()
                .map(|deployment| crate::app::filled_deployment(db, deployment))
                .collect()
        })
        .await?;
    Ok(ApiJson(ListDeploymentsResponse { deployments }))
}

/// Get one deployment, with its log (and for a canary or an A/B test its tallies).
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/deployments/{deployment_id}", tag = "Deployments", operation_id = "get_deployment",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("deployment_id" = u64, Path)),
    responses((status = 200, body = DeploymentResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_deployment(
    state: AppState,
    ApiPath(path): ApiPath<DeploymentPath>,
) -> Result<ApiJson<DeploymentResponse>, ApiError> {
    let deployment = state
        .read(move |db| {
            require_pipeline(db, &path.namespace_id, &path.pipeline_id)?;
            let deployment =
                db.get_deployment(&path.namespace_id, &path.pipeline_id, path.deployment_id)?;
            crate::app::filled_deployment(db, deployment)
        })
        .await?;
    Ok(ApiJson(DeploymentResponse { deployment }))
}

/// Start a deployment (beyond v0): `{"kind": "canary", "version": 3, "weight": 10}` keeps the
/// live version live and sends 10% of new runs (trigger fires, and starts that name no version)
/// to version 3, raising it step by step (`steps`) while its runs do as well as the live
/// version's and rolling it back when they do not (`promote_after`, `rollback_after_failures`,
/// `tolerance`, `min_success_rate`); `{"kind": "ab", "b": 3, "weight": 50}` runs the live
/// version and version 3 side by side until a winner is promoted; `{"kind": "switch",
/// "version": 3}` is v0's deploy. `sticky_variable` routes runs with the same value of that run
/// variable to the same version. 409 while another deployment of the pipeline is in progress.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/deployments", tag = "Deployments", operation_id = "start_deployment",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path)),
    request_body = DeploymentRequest,
    responses((status = 201, body = DeploymentResponse), (status = "4XX", body = super::ErrorBody)))]
async fn start_deployment(
    state: AppState,
    ApiPath(path): ApiPath<PipelinePath>,
    ApiJson(request): ApiJson<DeploymentRequest>,
) -> Result<(StatusCode, ApiJson<DeploymentResponse>), ApiError> {
    let deployment = state
        .app
        .start_deployment(path.namespace_id, path.pipeline_id, request)
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(DeploymentResponse { deployment }),
    ))
}

/// Promote a deployment in progress by hand (beyond v0): a canary to its next step (from its
/// last step its version becomes live, with its declared triggers); an A/B test ends with the
/// `version` named live.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/deployments/{deployment_id}/promote", tag = "Deployments", operation_id = "promote_deployment",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("deployment_id" = u64, Path)),
    request_body = PromoteRequest,
    responses((status = 200, body = DeploymentResponse), (status = "4XX", body = super::ErrorBody)))]
async fn promote_deployment(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(path): ApiPath<DeploymentPath>,
    ApiJson(request): ApiJson<PromoteRequest>,
) -> Result<ApiJson<DeploymentResponse>, ApiError> {
    let deployment = state
        .app
        .promote_deployment(
            &identity,
            (path.namespace_id, path.pipeline_id),
            path.deployment_id,
            request,
        )
        .await?;
    Ok(ApiJson(DeploymentResponse { deployment }))
}

/// Abort a canary or an A/B test (beyond v0): no more runs go to its new version, the live
/// version stays live, and it ends `Failed` with reason `Aborted`.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/deployments/{deployment_id}/abort", tag = "Deployments", operation_id = "abort_deployment",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("deployment_id" = u64, Path)),
    responses((status = 200, body = DeploymentResponse), (status = "4XX", body = super::ErrorBody)))]
async fn abort_deployment(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(path): ApiPath<DeploymentPath>,
) -> Result<ApiJson<DeploymentResponse>, ApiError> {
    let deployment = state
        .app
        .abort_deployment(
            &identity,
            (path.namespace_id, path.pipeline_id),
            path.deployment_id,
        )
        .await?;
    Ok(ApiJson(DeploymentResponse { deployment }))
}

/// Compare a canary's or an A/B test's two versions (beyond v0): per version the runs, success
/// rate, duration p50 and p95, and per task failures and median duration; with verdicts on
/// whether the success rates differ (two-proportion z-test) and the durations differ (Mann-Whitney
/// U test), at the 0.05 level.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/deployments/{deployment_id}/compare", tag = "Deployments", operation_id = "compare_deployment",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("deployment_id" = u64, Path)),
    responses((status = 200, body = CompareDeploymentResponse), (status = "4XX", body = super::ErrorBody)))]
async fn compare_deployment(
    state: AppState,
    ApiPath(path): ApiPath<DeploymentPath>,
) -> Result<ApiJson<CompareDeploymentResponse>, ApiError> {
    let comparison = state
        .app
        .compare_deployment(path.namespace_id, path.pipeline_id, path.deployment_id)
        .await?;
    Ok(ApiJson(CompareDeploymentResponse { comparison }))
}
