//! Object endpoints: pipeline objects (kept until deleted, at most `objects.pipeline_object_limit`
//! per pipeline, oldest evicted), run objects (expire `objects.run_object_expiry` runs later) and
//! plugin objects (`/api/extensions/{plugin}/objects`, v0's path). Uploads and downloads are
//! streamed. Must not hold SQL (storage) or file handling (`crate::objects`).

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState, PageQuery};
use crate::app::Owner;
use crate::models::Object;
use crate::objects::ObjectError;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_pipeline_objects))
        .routes(routes!(
            get_pipeline_object,
            put_pipeline_object,
            delete_pipeline_object
        ))
        .routes(routes!(list_run_objects))
        .routes(routes!(get_run_object, put_run_object, delete_run_object))
        .routes(routes!(list_extension_objects))
        .routes(routes!(
            get_extension_object,
            put_extension_object,
            delete_extension_object
        ))
}

impl From<ObjectError> for ApiError {
    fn from(error: ObjectError) -> Self {
        match error {
            ObjectError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
            }
            ObjectError::Upload(_) | ObjectError::InvalidScope(_) => {
                ApiError::bad_request(error.to_string())
            }
            // The server's paths are for its log, not for callers.
            ObjectError::Io { .. } | ObjectError::S3Settings(_) => {
                tracing::error!(%error, "object store");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the object store failed; the server log has the details",
                )
            }
            // The bucket is upstream of us: its failure is a bad gateway, not our own.
            ObjectError::Remote { .. } => {
                tracing::error!(%error, "object store");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "the object store's bucket did not answer as expected; the server log has the details",
                )
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = ListPipelineObjectsResponse)]
pub struct ListObjectsResponse {
    /// Oldest first.
    pub objects: Vec<Object>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = PutPipelineObjectResponse)]
pub struct PutObjectResponse {
    pub object: Object,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Replace the object if it exists (otherwise that is a 409).
    #[serde(default)]
    pub force: bool,
}

fn pipeline(namespace: String, pipeline: String) -> Owner {
    Owner::Pipeline {
        namespace,
        pipeline,
    }
}

fn run(namespace: String, pipeline: String, run: u64) -> Owner {
    Owner::Run {
        namespace,
        pipeline,
        run,
    }
}

fn plugin(plugin: String) -> Owner {
    Owner::Plugin { plugin }
}

async fn list(
    state: &ApiState,
    owner: Owner,
    query: &PageQuery,
) -> Result<ApiJson<ListObjectsResponse>, ApiError> {
    let page = state.page(query)?;
    let objects = state.app.list_objects(owner, page).await?;
    Ok(ApiJson(ListObjectsResponse { objects }))
}

async fn download(state: &ApiState, owner: Owner, key: String) -> Result<Response, ApiError> {
    let stream = state.app.download_object(owner, &key).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn upload(
    state: &ApiState,
    owner: Owner,
    key: String,
    force: bool,
    body: Body,
) -> Result<(StatusCode, ApiJson<PutObjectResponse>), ApiError> {
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    let object = state.app.upload_object(owner, &key, force, stream).await?;
    Ok((StatusCode::CREATED, ApiJson(PutObjectResponse { object })))
}

async fn remove(state: &ApiState, owner: Owner, key: String) -> Result<StatusCode, ApiError> {
    state.app.delete_object(owner, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

type PipelinePath = (String, String);
type PipelineKeyPath = (String, String, String);
type RunPath = (String, String, u64);
type RunKeyPath = (String, String, u64, String);

/// List a pipeline's objects, oldest first.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/objects", tag = "Objects",
    operation_id = "list_pipeline_objects",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), PageQuery),
    responses((status = 200, body = ListObjectsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_pipeline_objects(
    state: AppState,
    ApiPath((namespace_id, pipeline_id)): ApiPath<PipelinePath>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListObjectsResponse>, ApiError> {
    list(&state, pipeline(namespace_id, pipeline_id), &query).await
}

/// Download a pipeline object (streamed, `application/octet-stream`).
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/objects/{key}", tag = "Objects",
    operation_id = "get_pipeline_object",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("key" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = "4XX", body = super::ErrorBody)))]
async fn get_pipeline_object(
    state: AppState,
    ApiPath((namespace_id, pipeline_id, key)): ApiPath<PipelineKeyPath>,
) -> Result<Response, ApiError> {
    download(&state, pipeline(namespace_id, pipeline_id), key).await
}

/// Upload a pipeline object (the raw body, streamed); the oldest is evicted past the limit.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/objects/{key}", tag = "Objects",
    operation_id = "put_pipeline_object",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("key" = String, Path), ForceQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = PutObjectResponse), (status = "4XX", body = super::ErrorBody)))]
async fn put_pipeline_object(
    state: AppState,
    ApiPath((namespace_id, pipeline_id, key)): ApiPath<PipelineKeyPath>,
    ApiQuery(query): ApiQuery<ForceQuery>,
    body: Body,
) -> Result<(StatusCode, ApiJson<PutObjectResponse>), ApiError> {
    let owner = pipeline(namespace_id, pipeline_id);
    upload(&state, owner, key, query.force, body).await
}

/// Delete a pipeline object.
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/objects/{key}", tag = "Objects",
    operation_id = "delete_pipeline_object",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_pipeline_object(
    state: AppState,
    ApiPath((namespace_id, pipeline_id, key)): ApiPath<PipelineKeyPath>,
) -> Result<StatusCode, ApiError> {
    remove(&state, pipeline(namespace_id, pipeline_id), key).await
}

/// List a run's objects, oldest first.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/objects", tag = "Objects",
    operation_id = "list_run_objects",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), PageQuery),
    responses((status = 200, body = ListObjectsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_run_objects(
    state: AppState,
    ApiPath((namespace_id, pipeline_id, run_id)): ApiPath<RunPath>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListObjectsResponse>, ApiError> {
    list(&state, run(namespace_id, pipeline_id, run_id), &query).await
}

/// Download a run object.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/objects/{key}", tag = "Objects",
    operation_id = "get_run_object",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), ("key" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = "4XX", body = super::ErrorBody)))]
async fn get_run_object(
    state: AppState,
    ApiPath((namespace_id, pipeline_id, run_id, key)): ApiPath<RunKeyPath>,
) -> Result<Response, ApiError> {
    download(&state, run(namespace_id, pipeline_id, run_id), key).await
}

/// Upload a run object (the raw body, streamed).
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/objects/{key}", tag = "Objects",
    operation_id = "put_run_object",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), ("key" = String, Path), ForceQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = PutObjectResponse), (status = "4XX", body = super::ErrorBody)))]
async fn put_run_object(
    state: AppState,
    ApiPath((namespace_id, pipeline_id, run_id, key)): ApiPath<RunKeyPath>,
    ApiQuery(query): ApiQuery<ForceQuery>,
    body: Body,
) -> Result<(StatusCode, ApiJson<PutObjectResponse>), ApiError> {
    let owner = run(namespace_id, pipeline_id, run_id);
    upload(&state, owner, key, query.force, body).await
}

/// Delete a run object.
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/objects/{key}", tag = "Objects",
    operation_id = "delete_run_object",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), ("key" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_run_object(
    state: AppState,
    ApiPath((namespace_id, pipeline_id, run_id, key)): ApiPath<RunKeyPath>,
) -> Result<StatusCode, ApiError> {
    remove(&state, run(namespace_id, pipeline_id, run_id), key).await
}

/// List a plugin's objects (its key-value store), oldest first.
#[utoipa::path(get, path = "/api/extensions/{extension_id}/objects", tag = "Objects",
    operation_id = "list_extension_objects",
    params(("extension_id" = String, Path, description = "The plugin's name"), PageQuery),
    responses((status = 200, body = ListObjectsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_extension_objects(
    state: AppState,
    ApiPath(plugin_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListObjectsResponse>, ApiError> {
    list(&state, plugin(plugin_id), &query).await
}

/// Download a plugin object.
#[utoipa::path(get, path = "/api/extensions/{extension_id}/objects/{key}", tag = "Objects",
    operation_id = "get_extension_object",
    params(("extension_id" = String, Path, description = "The plugin's name"), ("key" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = "4XX", body = super::ErrorBody)))]
async fn get_extension_object(
    state: AppState,
    ApiPath((plugin_id, key)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    download(&state, plugin(plugin_id), key).await
}

/// Upload a plugin object (the raw body, streamed).
#[utoipa::path(post, path = "/api/extensions/{extension_id}/objects/{key}", tag = "Objects",
    operation_id = "put_extension_object",
    params(("extension_id" = String, Path, description = "The plugin's name"), ("key" = String, Path), ForceQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = PutObjectResponse), (status = "4XX", body = super::ErrorBody)))]
async fn put_extension_object(
    state: AppState,
    ApiPath((plugin_id, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ForceQuery>,
    body: Body,
) -> Result<(StatusCode, ApiJson<PutObjectResponse>), ApiError> {
    upload(&state, plugin(plugin_id), key, query.force, body).await
}

/// Delete a plugin object.
#[utoipa::path(delete, path = "/api/extensions/{extension_id}/objects/{key}", tag = "Objects",
    operation_id = "delete_extension_object",
    params(("extension_id" = String, Path, description = "The plugin's name"), ("key" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_extension_object(
    state: AppState,
    ApiPath((plugin_id, key)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    remove(&state, plugin(plugin_id), key).await
}
