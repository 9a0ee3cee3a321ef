//! Pipeline, config and deployment endpoints (`/api/namespaces/{ns}/pipelines/...`).
//!
//! Registering, deploying and deleting are the application layer's (`crate::app`); the handlers
//! here translate HTTP and read. Must not hold SQL.

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Identity;
use crate::auth::Needed;

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState, PageQuery};
use crate::models::{
    ConfigState, Deployment, EventKind, Pipeline, PipelineConfig, PipelineMetadata, PipelineState,
    now_millis,
};
use crate::pipeline_config::RegisterConfigRequest;
use crate::storage::{Db, StorageError};

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_pipelines))
        .routes(routes!(get_pipeline, update_pipeline, delete_pipeline))
        .routes(routes!(list_configs, register_config))
        .routes(routes!(get_config, deploy_config, delete_config))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListPipelinesResponse {
    pub pipelines: Vec<PipelineMetadata>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetPipelineResponse)]
pub struct PipelineResponse {
    pub pipeline: PipelineMetadata,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePipelineRequest {
    /// `active` to accept runs, `disabled` to refuse them.
    pub state: Option<PipelineState>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = ListPipelineConfigsResponse)]
pub struct ListConfigsResponse {
    pub configs: Vec<PipelineConfig>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetPipelineConfigResponse)]
pub struct ConfigResponse {
    pub config: PipelineConfig,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = RegisterPipelineConfigResponse)]
pub struct RegisterConfigResponse {
    pub pipeline: Pipeline,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListDeploymentsResponse {
    pub deployments: Vec<Deployment>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetDeploymentResponse)]
pub struct DeploymentResponse {
    pub deployment: Deployment,
}

/// Path of a pipeline.
#[derive(Debug, Deserialize)]
struct PipelinePath {
    namespace_id: String,
    pipeline_id: String,
}

/// Path of a config version.
#[derive(Debug, Deserialize)]
struct ConfigPath {
    namespace_id: String,
    pipeline_id: String,
    version: u64,
}

/// Fails with 404 unless the pipeline exists (checking its namespace first, for a precise message).
pub(super) fn require_pipeline(
    db: &Db,
    namespace_id: &str,
    pipeline_id: &str,
) -> Result<PipelineMetadata, StorageError> {
    db.get_namespace(namespace_id)?;
    db.get_pipeline(namespace_id, pipeline_id)
}

/// List the pipelines of a namespace, ordered by id.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines", tag = "Pipelines", operation_id = "list_pipelines",
    params(("namespace_id" = String, Path), PageQuery),
    responses((status = 200, body = ListPipelinesResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_pipelines(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(namespace_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListPipelinesResponse>, ApiError> {
    let page = state.page(&query)?;
    let pipelines = state
        .visible_page(
            &identity,
            page,
            move |db, page| {
                db.get_namespace(&namespace_id)?;
                db.list_pipelines(&namespace_id, page)
            },
            |pipeline| {
                vec![
                    Needed::on("namespaces", &pipeline.namespace_id),
                    Needed::on("pipelines", &pipeline.pipeline_id),
                ]
            },
        )
        .await?;
    Ok(ApiJson(ListPipelinesResponse { pipelines }))
}

/// Get a pipeline's metadata.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}", tag = "Pipelines", operation_id = "get_pipeline",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path)),
    responses((status = 200, body = PipelineResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_pipeline(
    state: AppState,
    ApiPath(path): ApiPath<PipelinePath>,
) -> Result<ApiJson<PipelineResponse>, ApiError> {
    let pipeline = state
        .read(move |db| require_pipeline(db, &path.namespace_id, &path.pipeline_id))
        .await?;
    Ok(ApiJson(PipelineResponse { pipeline }))
}

/// Enable or disable a pipeline. A disabled pipeline refuses new runs.
#[utoipa::path(patch, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}", tag = "Pipelines", operation_id = "update_pipeline",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path)),
    request_body = UpdatePipelineRequest,
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn update_pipeline(
    state: AppState,
    ApiPath(path): ApiPath<PipelinePath>,
    ApiJson(request): ApiJson<UpdatePipelineRequest>,
) -> Result<StatusCode, ApiError> {
    let new_state = match request.state {
        None => {
            return Err(ApiError::bad_request(
                "nothing to update: give \"state\": \"active\" or \"disabled\"",
            ));
        }
        Some(PipelineState::Unknown) => {
            return Err(ApiError::bad_request(
                "state must be \"active\" or \"disabled\"",
            ));
        }
        Some(new_state) => new_state,
    };
    state
        .write(move |db| {
            let pipeline = require_pipeline(db, &path.namespace_id, &path.pipeline_id)?;
            if pipeline.state == new_state {
                return Ok(());
            }
            db.update_pipeline_state(
                &path.namespace_id,
                &path.pipeline_id,
                new_state,
                now_millis(),
            )?;
            let (namespace_id, pipeline_id) = (path.namespace_id, path.pipeline_id);
            db.insert_event(match new_state {
                PipelineState::Disabled => EventKind::DisabledPipeline {
                    namespace_id,
                    pipeline_id,
                },
                _ => EventKind::EnabledPipeline {
                    namespace_id,
                    pipeline_id,
                },
            })?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a pipeline with all its configs, deployments and runs.
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}", tag = "Pipelines", operation_id = "delete_pipeline",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_pipeline(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(path): ApiPath<PipelinePath>,
) -> Result<StatusCode, ApiError> {
    state
        .app
        .delete_pipeline(&identity, &path.namespace_id, &path.pipeline_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List a pipeline's config versions, newest first.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/configs", tag = "Configs", operation_id = "list_configs",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), PageQuery),
    responses((status = 200, body = ListConfigsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_configs(
    state: AppState,
    ApiPath(path): ApiPath<PipelinePath>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListConfigsResponse>, ApiError> {
    let page = state.page(&query)?;
    let configs = state
        .read(move |db| {
            require_pipeline(db, &path.namespace_id, &path.pipeline_id)?;
            db.list_configs(&path.namespace_id, &path.pipeline_id, page)
        })
        .await?;
    Ok(ApiJson(ListConfigsResponse {
        configs: configs.into_iter().map(PipelineConfig::redacted).collect(),
    }))
}

/// Register a new config version (created `unreleased`; deploy it to make it run). The first
/// registration creates the pipeline. The config is checked first: ids, duplicate tasks, unknown
/// dependencies, cycles and images; an error names the offending task.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/configs", tag = "Configs", operation_id = "register_config",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path)),
    request_body = RegisterConfigRequest,
    responses((status = 201, body = RegisterConfigResponse), (status = "4XX", body = super::ErrorBody)))]
async fn register_config(
    state: AppState,
    ApiPath(path): ApiPath<PipelinePath>,
    ApiJson(request): ApiJson<RegisterConfigRequest>,
) -> Result<(StatusCode, ApiJson<RegisterConfigResponse>), ApiError> {
    let pipeline = state
        .app
        .register_config(path.namespace_id, path.pipeline_id, request.config)
        .await?;
    let pipeline = Pipeline {
        config: pipeline.config.redacted(),
        ..pipeline
    };
    Ok((
        StatusCode::CREATED,
        ApiJson(RegisterConfigResponse { pipeline }),
    ))
}

/// Get one config version; version 0 means the latest.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/configs/{version}", tag = "Configs", operation_id = "get_config",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("version" = u64, Path, description = "Config version; 0 for the latest")),
    responses((status = 200, body = ConfigResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_config(
    state: AppState,
    ApiPath(path): ApiPath<ConfigPath>,
) -> Result<ApiJson<ConfigResponse>, ApiError> {
    let config = state
        .read(move |db| {
            require_pipeline(db, &path.namespace_id, &path.pipeline_id)?;
            let version = match path.version {
                0 => db
                    .latest_config_version(&path.namespace_id, &path.pipeline_id)?
                    .unwrap_or(0),
                version => version,
            };
            db.get_config(&path.namespace_id, &path.pipeline_id, version)
        })
        .await?;
    Ok(ApiJson(ConfigResponse {
        config: config.redacted(),
    }))
}

/// Deploy a config version: it becomes `live` (what runs execute) and the previous live version
/// becomes `deprecated`. Deploying an older version rolls back. Returns the completed deployment.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/configs/{version}", tag = "Configs", operation_id = "deploy_config",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("version" = u64, Path)),
    responses((status = 201, body = DeploymentResponse), (status = "4XX", body = super::ErrorBody)))]
async fn deploy_config(
    state: AppState,
    ApiPath(path): ApiPath<ConfigPath>,
) -> Result<(StatusCode, ApiJson<DeploymentResponse>), ApiError> {
    let deployment = state
        .app
        .deploy(path.namespace_id, path.pipeline_id, path.version)
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(DeploymentResponse { deployment }),
    ))
}

/// Delete a config version. The latest version, the live version and versions that runs were
/// made from are kept.
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/configs/{version}", tag = "Configs", operation_id = "delete_config",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("version" = u64, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_config(
    state: AppState,
    ApiPath(path): ApiPath<ConfigPath>,
) -> Result<StatusCode, ApiError> {
    let refused = state
        .write(move |db| {
            let (namespace_id, pipeline_id, version) = (path.namespace_id, path.pipeline_id, path.version);
            require_pipeline(db, &namespace_id, &pipeline_id)?;
            let config = db.get_config(&namespace_id, &pipeline_id, version)?;
            if db.latest_config_version(&namespace_id, &pipeline_id)? == Some(version) {
                return Ok(Some(format!(
                    "cannot delete version {version}: it is the latest config version; register a new one first"
                )));
            }
            if config.state == ConfigState::Live {
                return Ok(Some(format!(
                    "cannot delete version {version}: it is live; deploy another version first"
                )));
            }
            if let Some(deployment) = db.deployment_in_progress(&namespace_id, &pipeline_id)?
                && (deployment.start_version == version || deployment.end_version == version)
            {
                return Err(StorageError::Conflict(format!(
                    "cannot delete version {version}: deployment {} is running with it; promote or abort it first",
                    deployment.deployment_id
                )));
            }
            if db.config_has_runs(&namespace_id, &pipeline_id, version)? {
                return Err(StorageError::Conflict(format!(
                    "cannot delete version {version}: runs were made from it"
                )));
            }
            db.delete_config(&namespace_id, &pipeline_id, version)?;
            db.insert_event(EventKind::DeletedPipelineConfig {
                namespace_id,
                pipeline_id,
                version,
            })?;
            Ok(None)
        })
        .await?;
    match refused {
        Some(message) => Err(ApiError::bad_request(message)),
        None => Ok(StatusCode::NO_CONTENT),
    }
}
