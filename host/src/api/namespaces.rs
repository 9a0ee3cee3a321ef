//! Namespace endpoints (`/api/namespaces`). Must not hold SQL: it calls [`crate::storage::Db`].

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Identity;
use crate::auth::Needed;
use crate::models::Action;

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState, PageQuery};
use crate::models::{EventKind, Namespace, now_millis};
use crate::pipeline_config::validate_identifier;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_namespaces, create_namespace))
        .routes(routes!(get_namespace, update_namespace, delete_namespace))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListNamespacesResponse {
    pub namespaces: Vec<Namespace>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetNamespaceResponse)]
pub struct NamespaceResponse {
    pub namespace: Namespace,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespaceRequest {
    /// 3-32 characters of `[a-zA-Z0-9-]`.
    #[schema(pattern = "^[a-zA-Z0-9-]{3,32}$")]
    pub id: String,
    pub name: String,
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNamespaceRequest {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// List namespaces, ordered by id.
#[utoipa::path(get, path = "/api/namespaces", tag = "Namespaces", operation_id = "list_namespaces",
    params(PageQuery),
    responses((status = 200, body = ListNamespacesResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_namespaces(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListNamespacesResponse>, ApiError> {
    let page = state.page(&query)?;
    let namespaces = state
        .visible_page(
            &identity,
            page,
            |db, page| db.list_namespaces(page),
            |namespace| vec![Needed::on("namespaces", &namespace.id)],
        )
        .await?;
    Ok(ApiJson(ListNamespacesResponse { namespaces }))
}

/// Create a namespace.
#[utoipa::path(post, path = "/api/namespaces", tag = "Namespaces", operation_id = "create_namespace",
    request_body = CreateNamespaceRequest,
    responses((status = 201, body = NamespaceResponse), (status = "4XX", body = super::ErrorBody)))]
async fn create_namespace(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiJson(request): ApiJson<CreateNamespaceRequest>,
) -> Result<(StatusCode, ApiJson<NamespaceResponse>), ApiError> {
    validate_identifier("namespace id", &request.id)?;
    // The route carries no id; the body's must be one the caller may write (checked before
    // looking, so that a 409 cannot tell others' namespaces apart).
    identity.require(vec![Needed::on("namespaces", &request.id)], Action::Write)?;
    let namespace = Namespace {
        id: request.id,
        name: request.name,
        description: request.description,
        created: now_millis(),
        modified: 0,
    };
    let created = namespace.clone();
    state
        .write(move |db| {
            db.insert_namespace(&created)?;
            db.insert_event(EventKind::CreatedNamespace {
                namespace_id: created.id.clone(),
            })
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(NamespaceResponse { namespace }),
    ))
}

/// Get one namespace.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}", tag = "Namespaces", operation_id = "get_namespace",
    params(("namespace_id" = String, Path, description = "Namespace id")),
    responses((status = 200, body = NamespaceResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_namespace(
    state: AppState,
    ApiPath(namespace_id): ApiPath<String>,
) -> Result<ApiJson<NamespaceResponse>, ApiError> {
    let namespace = state
        .read(move |db| db.get_namespace(&namespace_id))
        .await?;
    Ok(ApiJson(NamespaceResponse { namespace }))
}

/// Change a namespace's name or description.
#[utoipa::path(patch, path = "/api/namespaces/{namespace_id}", tag = "Namespaces", operation_id = "update_namespace",
    params(("namespace_id" = String, Path, description = "Namespace id")),
    request_body = UpdateNamespaceRequest,
    responses((status = 200, body = NamespaceResponse), (status = "4XX", body = super::ErrorBody)))]
async fn update_namespace(
    state: AppState,
    ApiPath(namespace_id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateNamespaceRequest>,
) -> Result<ApiJson<NamespaceResponse>, ApiError> {
    let namespace = state
        .write(move |db| {
            let mut namespace = db.get_namespace(&namespace_id)?;
            if let Some(name) = request.name {
                namespace.name = name;
            }
            if let Some(description) = request.description {
                namespace.description = description;
            }
            namespace.modified = now_millis();
            db.update_namespace(&namespace)?;
            Ok(namespace)
        })
        .await?;
    Ok(ApiJson(NamespaceResponse { namespace }))
}

/// Delete a namespace with every pipeline, config, run and deployment in it.
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}", tag = "Namespaces", operation_id = "delete_namespace",
    params(("namespace_id" = String, Path, description = "Namespace id")),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_namespace(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(namespace_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.app.delete_namespace(&identity, &namespace_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
