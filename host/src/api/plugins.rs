//! Plugin endpoints: `/api/plugins`, trigger subscriptions (`…/pipelines/{p}/subscriptions`, v0's
//! shape, where `extension_id` names a trigger plugin) and outside events
//! (`POST /api/external/{plugin}`). Must not touch wasmtime: it calls the trigger manager.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Identity;
use crate::auth::Needed;

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState, PageQuery};
use crate::models::{Action, Plugin, PluginKind, Subscription, SubscriptionStatus};
use crate::pipeline_config::validate_identifier;
use crate::plugins::PluginError;
use crate::storage::StorageError;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_plugins))
        .routes(routes!(get_plugin))
        .routes(routes!(list_extension_subscriptions))
        .routes(routes!(list_subscriptions, create_subscription))
        .routes(routes!(
            get_subscription,
            update_subscription,
            delete_subscription
        ))
        .routes(routes!(external_event))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListPluginsResponse {
    pub plugins: Vec<Plugin>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetPluginResponse {
    pub plugin: Plugin,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListSubscriptionsResponse {
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetSubscriptionResponse)]
pub struct SubscriptionResponse {
    pub subscription: Subscription,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionRequest {
    /// The trigger plugin's name.
    pub extension_id: String,
    /// Your label for this subscription (3-32 characters of `[a-zA-Z0-9-]`).
    #[schema(pattern = "^[a-zA-Z0-9-]{3,32}$")]
    pub subscription_id: String,
    /// The plugin's settings, e.g. `{"every": "30s"}` for `interval`.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscriptionRequest {
    /// `active` or `disabled`.
    pub status: SubscriptionStatus,
}

/// Answer to an outside event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExternalEventResponse {
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct PipelinePath {
    namespace_id: String,
    pipeline_id: String,
}

#[derive(Debug, Deserialize)]
struct SubscriptionPath {
    namespace_id: String,
    pipeline_id: String,
    extension_id: String,
    subscription_id: String,
}

/// List the plugins: built-in and from the plugins folder, loaded or failed.
#[utoipa::path(get, path = "/api/plugins", tag = "Plugins", operation_id = "list_plugins",
    responses((status = 200, body = ListPluginsResponse)))]
async fn list_plugins(
    state: AppState,
    Extension(identity): Extension<Identity>,
) -> ApiJson<ListPluginsResponse> {
    let mut plugins = state.triggers.registry().list();
    plugins.retain(|plugin| identity.may_read(vec![Needed::on("plugins", &plugin.name)]));
    ApiJson(ListPluginsResponse { plugins })
}

/// Get one plugin.
#[utoipa::path(get, path = "/api/plugins/{name}", tag = "Plugins", operation_id = "get_plugin",
    params(("name" = String, Path)),
    responses((status = 200, body = GetPluginResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_plugin(
    state: AppState,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<GetPluginResponse>, ApiError> {
    let plugin = state
        .triggers
        .registry()
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("plugin '{name}' not found")))?;
    Ok(ApiJson(GetPluginResponse { plugin }))
}

/// List every subscription to a trigger plugin, across pipelines (v0's path: plugins were
/// extensions). A plugin's own token may read its own, e.g. to check its state.
#[utoipa::path(get, path = "/api/extensions/{extension_id}/subscriptions", tag = "Subscriptions",
    operation_id = "list_extension_subscriptions",
    params(("extension_id" = String, Path, description = "The trigger plugin's name"), PageQuery),
    responses((status = 200, body = ListSubscriptionsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_extension_subscriptions(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(plugin): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListSubscriptionsResponse>, ApiError> {
    let page = state.page(&query)?;
    let subscriptions = state
        .visible_page(
            &identity,
            page,
            move |db, page| db.list_subscriptions_of(&plugin, page),
            // The route checked the plugin; each item, its pipeline.
            |subscription| {
                vec![
                    Needed::on("namespaces", &subscription.namespace_id),
                    Needed::on("pipelines", &subscription.pipeline_id),
                    Needed {
                        name: "subscriptions",
                        target: None,
                    },
                ]
            },
        )
        .await?;
    Ok(ApiJson(ListSubscriptionsResponse { subscriptions }))
}

/// List a pipeline's trigger subscriptions.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/subscriptions", tag = "Subscriptions", operation_id = "list_subscriptions",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), PageQuery),
    responses((status = 200, body = ListSubscriptionsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_subscriptions(
    state: AppState,
    ApiPath(path): ApiPath<PipelinePath>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListSubscriptionsResponse>, ApiError> {
    let page = state.page(&query)?;
    let subscriptions = state
        .read(move |db| {
            db.get_namespace(&path.namespace_id)?;
            db.get_pipeline(&path.namespace_id, &path.pipeline_id)?;
            db.list_subscriptions(&path.namespace_id, &path.pipeline_id, page)
        })
        .await?;
    Ok(ApiJson(ListSubscriptionsResponse { subscriptions }))
}

/// Subscribe a pipeline to a trigger plugin: each time the trigger fires, a run of the pipeline's
/// live config starts. The plugin checks the settings; its message comes back as a 400.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/subscriptions", tag = "Subscriptions", operation_id = "create_subscription",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path)),
    request_body = CreateSubscriptionRequest,
    responses((status = 201, body = SubscriptionResponse), (status = "4XX", body = super::ErrorBody)))]
async fn create_subscription(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(path): ApiPath<PipelinePath>,
    ApiJson(request): ApiJson<CreateSubscriptionRequest>,
) -> Result<(StatusCode, ApiJson<SubscriptionResponse>), ApiError> {
    validate_identifier("subscription id", &request.subscription_id)?;
    // Settings that reference the pipeline's secrets or objects hand their values to the plugin:
    // only for a caller who may read them.
    for value in request.settings.values() {
        if let Some(resource) = crate::orchestrator::referenced_resource(value) {
            identity.require(
                vec![
                    Needed::on("namespaces", &path.namespace_id),
                    Needed::on("pipelines", &path.pipeline_id),
                    Needed {
                        name: resource,
                        target: None,
                    },
                ],
                Action::Read,
            )?;
        }
    }
    match state.triggers.registry().get(&request.extension_id) {
        Some(plugin) if plugin.kind == Some(PluginKind::Trigger) => {}
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "plugin '{}' is not a trigger (or failed to load); see GET /api/plugins",
                request.extension_id
            )));
        }
        None => {
            return Err(ApiError::not_found(format!(
                "trigger plugin '{}' not found",
                request.extension_id
            )));
        }
    }
    let subscription = Subscription {
        namespace_id: path.namespace_id.clone(),
        pipeline_id: path.pipeline_id.clone(),
        extension_id: request.extension_id,
        subscription_id: request.subscription_id,
        settings: request.settings,
        status: SubscriptionStatus::Active,
        status_reason: None,
    };
    let lookup = subscription.clone();
    let exists = state
        .read(move |db| {
            db.get_namespace(&lookup.namespace_id)?;
            db.get_pipeline(&lookup.namespace_id, &lookup.pipeline_id)?;
            match db.get_subscription(
                &lookup.namespace_id,
                &lookup.pipeline_id,
                &lookup.extension_id,
                &lookup.subscription_id,
            ) {
                Ok(_) => Ok(true),
                Err(StorageError::NotFound(_)) => Ok(false),
                Err(other) => Err(other),
            }
        })
        .await?;
    if exists {
        return Err(ApiError::conflict(format!(
            "subscription '{}' of pipeline '{}' to '{}' already exists",
            subscription.subscription_id, subscription.pipeline_id, subscription.extension_id
        )));
    }
    state
        .triggers
        .subscribe(&subscription)
        .await
        .map_err(plugin_error)?;
    let stored = subscription.clone();
    if let Err(error) = state
        .write(move |db| db.insert_subscription(&stored, false))
        .await
    {
        state.triggers.unsubscribe(&subscription).await;
        return Err(error);
    }
    Ok((
        StatusCode::CREATED,
        ApiJson(SubscriptionResponse { subscription }),
    ))
}

fn plugin_error(error: PluginError) -> ApiError {
    match error {
        PluginError::Refused(message) => ApiError::bad_request(message),
        other => ApiError::new(StatusCode::BAD_GATEWAY, other.to_string()),
    }
}

/// Get one subscription.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/subscriptions/{extension_id}/{subscription_id}", tag = "Subscriptions", operation_id = "get_subscription",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("extension_id" = String, Path), ("subscription_id" = String, Path)),
    responses((status = 200, body = SubscriptionResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_subscription(
    state: AppState,
    ApiPath(path): ApiPath<SubscriptionPath>,
) -> Result<ApiJson<SubscriptionResponse>, ApiError> {
    let subscription = state
        .read(move |db| {
            db.get_subscription(
                &path.namespace_id,
                &path.pipeline_id,
                &path.extension_id,
                &path.subscription_id,
            )
        })
        .await?;
    Ok(ApiJson(SubscriptionResponse { subscription }))
}

/// Enable (`active`) or disable (`disabled`) a subscription.
#[utoipa::path(patch, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/subscriptions/{extension_id}/{subscription_id}", tag = "Subscriptions", operation_id = "update_subscription",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("extension_id" = String, Path), ("subscription_id" = String, Path)),
    request_body = UpdateSubscriptionRequest,
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn update_subscription(
    state: AppState,
    ApiPath(path): ApiPath<SubscriptionPath>,
    ApiJson(request): ApiJson<UpdateSubscriptionRequest>,
) -> Result<StatusCode, ApiError> {
    let mut subscription = state
        .read(move |db| {
            db.get_subscription(
                &path.namespace_id,
                &path.pipeline_id,
                &path.extension_id,
                &path.subscription_id,
            )
        })
        .await?;
    match request.status {
        SubscriptionStatus::Active => {
            state
                .triggers
                .subscribe(&subscription)
                .await
                .map_err(plugin_error)?;
            subscription.status_reason = None;
        }
        SubscriptionStatus::Disabled => state.triggers.unsubscribe(&subscription).await,
        _ => {
            return Err(ApiError::bad_request(
                "status must be \"active\" or \"disabled\"",
            ));
        }
    }
    subscription.status = request.status;
    state
        .write(move |db| db.update_subscription(&subscription))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a subscription; the trigger stops starting runs for it.
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/subscriptions/{extension_id}/{subscription_id}", tag = "Subscriptions", operation_id = "delete_subscription",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("extension_id" = String, Path), ("subscription_id" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_subscription(
    state: AppState,
    ApiPath(path): ApiPath<SubscriptionPath>,
) -> Result<StatusCode, ApiError> {
    let subscription = state
        .write(move |db| {
            let subscription = db.get_subscription(
                &path.namespace_id,
                &path.pipeline_id,
                &path.extension_id,
                &path.subscription_id,
            )?;
            db.delete_subscription(
                &path.namespace_id,
                &path.pipeline_id,
                &path.extension_id,
                &path.subscription_id,
            )?;
            Ok(subscription)
        })
        .await?;
    state.triggers.unsubscribe(&subscription).await;
    Ok(StatusCode::NO_CONTENT)
}

/// An outside event (e.g. a webhook delivery) for a trigger plugin; no version header or token is
/// needed, the plugin checks authenticity (e.g. a signature). Answers with the plugin's status.
#[utoipa::path(post, path = "/api/external/{plugin}", tag = "Plugins", operation_id = "external_event",
    params(("plugin" = String, Path)),
    request_body(content = String, content_type = "application/octet-stream"),
    responses((status = 202, body = ExternalEventResponse), (status = "4XX", body = super::ErrorBody)))]
async fn external_event(
    state: AppState,
    ApiPath(plugin): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, ApiJson<ExternalEventResponse>), ApiError> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    let outcome = state
        .triggers
        .external_event(&plugin, headers, body.to_vec())
        .await
        .map_err(|error| match error {
            PluginError::Load(message) => ApiError::not_found(message),
            other => plugin_error(other),
        })?;
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK);
    Ok((
        status,
        ApiJson(ExternalEventResponse {
            message: outcome.message,
        }),
    ))
}
