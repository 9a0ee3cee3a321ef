//! Secret endpoints: pipeline secrets (`.../pipelines/{id}/secrets`) and global secrets
//! (`/api/secrets/global`). Values go to the secret store and come back only from an explicit get
//! with `include_secret=true`. Must not hold SQL (storage) or encryption (`crate::secrets`).

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState, PageQuery};
use crate::models::{Secret, now_millis};
use crate::secrets::{SecretError, SecretKey};

/// Longest secret value accepted (1 MiB).
const MAX_SECRET_BYTES: usize = 1 << 20;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_pipeline_secrets, put_pipeline_secret))
        .routes(routes!(get_pipeline_secret, delete_pipeline_secret))
        .routes(routes!(list_global_secrets, put_global_secret))
        .routes(routes!(get_global_secret, delete_global_secret))
}

impl From<SecretError> for ApiError {
    fn from(error: SecretError) -> Self {
        tracing::error!(%error, "secret store");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = ListPipelineSecretsResponse)]
pub struct ListSecretsResponse {
    pub secrets: Vec<Secret>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = PutPipelineSecretResponse)]
pub struct PutSecretResponse {
    pub secret: Secret,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetPipelineSecretResponse)]
pub struct GetSecretResponse {
    pub metadata: Secret,
    /// The plaintext value, only with `include_secret=true`.
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPipelineSecretRequest {
    /// The secret's name: 1 to 128 of `[a-zA-Z0-9_.-]`.
    pub key: String,
    /// The value (at most 1 MiB).
    pub content: String,
    /// Replace the value if the secret exists (otherwise that is a 409).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutGlobalSecretRequest {
    /// The secret's name: 1 to 128 of `[a-zA-Z0-9_.-]`.
    pub key: String,
    /// The value (at most 1 MiB).
    pub content: String,
    /// Namespaces whose pipelines may use it: regexes, each matched against the whole namespace
    /// id (`"devops-.*"`, `".*"`).
    pub namespaces: Vec<String>,
    /// Replace the value (and namespaces) if the secret exists (otherwise that is a 409).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncludeSecretQuery {
    /// Include the plaintext value in the response.
    #[serde(default)]
    pub include_secret: bool,
}

/// Checks a secret's name.
fn validate_key(key: &str) -> Result<(), ApiError> {
    let valid = (1..=128).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid secret key '{key}': use 1 to 128 of [a-zA-Z0-9_.-]"
        )))
    }
}

fn validate_content(content: &str) -> Result<(), ApiError> {
    if content.len() > MAX_SECRET_BYTES {
        return Err(ApiError::bad_request(format!(
            "the secret is {} bytes; at most {MAX_SECRET_BYTES} are allowed",
            content.len()
        )));
    }
    // A value goes into a task's environment, which cannot hold a NUL byte (the engine refuses
    // the container and quotes the variable, value and all, in its error).
    if content.contains('\0') {
        return Err(ApiError::bad_request(
            "the secret contains a NUL byte, which an environment variable cannot hold",
        ));
    }
    Ok(())
}

type PipelinePath = (String, String);
type PipelineKeyPath = (String, String, String);

/// List a pipeline's secrets (names only).
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/secrets", tag = "Secrets",
    operation_id = "list_pipeline_secrets",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), PageQuery),
    responses((status = 200, body = ListSecretsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_pipeline_secrets(
    state: AppState,
    ApiPath((namespace_id, pipeline_id)): ApiPath<PipelinePath>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListSecretsResponse>, ApiError> {
    let page = state.page(&query)?;
    let secrets = state
        .read(move |db| db.list_pipeline_secrets(&namespace_id, &pipeline_id, page))
        .await?;
    Ok(ApiJson(ListSecretsResponse { secrets }))
}

/// Store a pipeline secret; `force` replaces an existing one.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/secrets", tag = "Secrets",
    operation_id = "put_pipeline_secret",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path)),
    request_body = PutPipelineSecretRequest,
    responses((status = 201, body = PutSecretResponse), (status = "4XX", body = super::ErrorBody)))]
async fn put_pipeline_secret(
    state: AppState,
    ApiPath((namespace_id, pipeline_id)): ApiPath<PipelinePath>,
    ApiJson(request): ApiJson<PutPipelineSecretRequest>,
) -> Result<(StatusCode, ApiJson<PutSecretResponse>), ApiError> {
    validate_key(&request.key)?;
    validate_content(&request.content)?;
    // The metadata first: it refuses an existing secret without `force` before any value is
    // written.
    let (namespace, pipeline, key) = (
        namespace_id.clone(),
        pipeline_id.clone(),
        request.key.clone(),
    );
    let force = request.force;
    let secret = state
        .write(move |db| db.put_pipeline_secret(&namespace, &pipeline, &key, now_millis(), force))
        .await?;
    let store_key = SecretKey::Pipeline {
        namespace: namespace_id,
        pipeline: pipeline_id,
        key: request.key,
    };
    state.secrets.put(&store_key, &request.content).await?;
    Ok((StatusCode::CREATED, ApiJson(PutSecretResponse { secret })))
}

/// Get a pipeline secret's metadata, and its value with `include_secret=true`.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/secrets/{key}", tag = "Secrets",
    operation_id = "get_pipeline_secret",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("key" = String, Path), IncludeSecretQuery),
    responses((status = 200, body = GetSecretResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_pipeline_secret(
    state: AppState,
    ApiPath((namespace_id, pipeline_id, key)): ApiPath<PipelineKeyPath>,
    ApiQuery(query): ApiQuery<IncludeSecretQuery>,
) -> Result<ApiJson<GetSecretResponse>, ApiError> {
    let (namespace, pipeline, name) = (namespace_id.clone(), pipeline_id.clone(), key.clone());
    let metadata = state
        .read(move |db| db.get_pipeline_secret(&namespace, &pipeline, &name))
        .await?;
    let secret = if query.include_secret {
        let store_key = SecretKey::Pipeline {
            namespace: namespace_id,
            pipeline: pipeline_id,
            key,
        };
        state.secrets.get(&store_key).await?
    } else {
        None
    };
    Ok(ApiJson(GetSecretResponse { metadata, secret }))
}

/// Delete a pipeline secret.
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/secrets/{key}", tag = "Secrets",
    operation_id = "delete_pipeline_secret",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_pipeline_secret(
    state: AppState,
    ApiPath((namespace_id, pipeline_id, key)): ApiPath<PipelineKeyPath>,
) -> Result<StatusCode, ApiError> {
    let (namespace, pipeline, name) = (namespace_id.clone(), pipeline_id.clone(), key.clone());
    state
        .write(move |db| db.delete_pipeline_secret(&namespace, &pipeline, &name))
        .await?;
    let store_key = SecretKey::Pipeline {
        namespace: namespace_id,
        pipeline: pipeline_id,
        key,
    };
    state.secrets.delete(&store_key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List global secrets (names and namespaces only).
#[utoipa::path(get, path = "/api/secrets/global", tag = "Secrets", operation_id = "list_global_secrets",
    params(PageQuery),
    responses((status = 200, body = ListSecretsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_global_secrets(
    state: AppState,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListSecretsResponse>, ApiError> {
    let page = state.page(&query)?;
    let secrets = state.read(move |db| db.list_global_secrets(page)).await?;
    Ok(ApiJson(ListSecretsResponse { secrets }))
}

/// Store a global secret for the listed namespaces; `force` replaces an existing one.
#[utoipa::path(post, path = "/api/secrets/global", tag = "Secrets", operation_id = "put_global_secret",
    request_body = PutGlobalSecretRequest,
    responses((status = 201, body = PutSecretResponse), (status = "4XX", body = super::ErrorBody)))]
async fn put_global_secret(
    state: AppState,
    ApiJson(request): ApiJson<PutGlobalSecretRequest>,
) -> Result<(StatusCode, ApiJson<PutSecretResponse>), ApiError> {
    validate_key(&request.key)?;
    validate_content(&request.content)?;
    crate::secrets::namespace_patterns(&request.namespaces).map_err(ApiError::bad_request)?;
    let secret = Secret {
        key: request.key.clone(),
        namespaces: request.namespaces,
        created: now_millis(),
    };
    let stored = secret.clone();
    let force = request.force;
    state
        .write(move |db| db.put_global_secret(&stored, force))
        .await?;
    state
        .secrets
        .put(&SecretKey::Global { key: request.key }, &request.content)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(PutSecretResponse { secret })))
}

/// Get a global secret's metadata, and its value with `include_secret=true`.
#[utoipa::path(get, path = "/api/secrets/global/{key}", tag = "Secrets", operation_id = "get_global_secret",
    params(("key" = String, Path), IncludeSecretQuery),
    responses((status = 200, body = GetSecretResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_global_secret(
    state: AppState,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<IncludeSecretQuery>,
) -> Result<ApiJson<GetSecretResponse>, ApiError> {
    let name = key.clone();
    let metadata = state.read(move |db| db.get_global_secret(&name)).await?;
    let secret = if query.include_secret {
        state.secrets.get(&SecretKey::Global { key }).await?
    } else {
        None
    };
    Ok(ApiJson(GetSecretResponse { metadata, secret }))
}

/// Delete a global secret.
#[utoipa::path(delete, path = "/api/secrets/global/{key}", tag = "Secrets", operation_id = "delete_global_secret",
    params(("key" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_global_secret(
    state: AppState,
    ApiPath(key): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let name = key.clone();
    state
        .write(move |db| db.delete_global_secret(&name))
        .await?;
    state.secrets.delete(&SecretKey::Global { key }).await?;
    Ok(StatusCode::NO_CONTENT)
}
