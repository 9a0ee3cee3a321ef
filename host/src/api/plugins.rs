//! Plugin endpoints: `/api/plugins`, trigger subscriptions (`…/pipelines/{p}/subscriptions`, v0's
//! shape, where `extension_id` names a trigger plugin) and outside events
//! (`POST /api/external/{plugin}`). Must not touch wasmtime: it calls the trigger manager.

use std::collections::BTreeMap;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::ConnectInfo;
use axum::extract::ws::WebSocket;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Identity;
use crate::auth::Needed;

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState, PageQuery};
use crate::app::NewSubscription;
use crate::models::{Plugin, Subscription, SubscriptionStatus};
use crate::plugins::{OutsideEvent, PluginError};

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
        .routes(routes!(list_extensions, install_extension))
        .routes(routes!(
            get_extension,
            uninstall_extension,
            update_extension
        ))
        .routes(routes!(get_extension_logs))
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

impl SubscriptionPath {
    fn key(&self) -> (&str, &str, &str, &str) {
        (
            &self.namespace_id,
            &self.pipeline_id,
            &self.extension_id,
            &self.subscription_id,
        )
    }
}

/// List the plugins: built-in and from the plugins folder, loaded or failed.
#[utoipa::path(get, path = "/api/plugins", tag = "Plugins", operation_id = "list_plugins",
    responses((status = 200, body = ListPluginsResponse)))]
async fn list_plugins(
    state: AppState,
    Extension(identity): Extension<Identity>,
) -> ApiJson<ListPluginsResponse> {
    let mut plugins = state.triggers.plugins().await.list();
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
        .plugins()
        .await
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
    let request = NewSubscription {
        plugin: request.extension_id,
        subscription_id: request.subscription_id,
        settings: request.settings,
    };
    let subscription = state
        .app
        .subscribe(&identity, &path.namespace_id, &path.pipeline_id, request)
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(SubscriptionResponse { subscription }),
    ))
}

pub(super) fn plugin_error(error: PluginError) -> ApiError {
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
    state
        .app
        .set_subscription_status(path.key(), request.status)
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
    state.app.unsubscribe(path.key()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An outside event (e.g. a webhook delivery) for a trigger plugin; no version header or token is
/// needed, the plugin checks authenticity (e.g. a signature). Answers with the plugin's status.
/// `/api/external/{plugin}/{path...}` (any method) reaches the same plugin with the path suffix,
/// for plugins that route by path (`gofer:plugin@0.2.0`).
#[utoipa::path(post, path = "/api/external/{plugin}", tag = "Plugins", operation_id = "external_event",
    params(("plugin" = String, Path)),
    request_body(content = String, content_type = "application/octet-stream"),
    responses((status = 202, body = ExternalEventResponse), (status = "4XX", body = super::ErrorBody)))]
async fn external_event(
    state: AppState,
    Extension(limits): Extension<Arc<OutsideEventLimits>>,
    ApiPath(plugin): ApiPath<String>,
    sender: ConnectInfo<super::Peer>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    outside_event(&state, &limits, plugin, String::new(), sender, request).await
}

/// `/api/external/{plugin}/{path...}`, any method (not in the OpenAPI document: the path is the
/// plugin's).
pub(super) async fn external_event_with_path(
    state: AppState,
    Extension(limits): Extension<Arc<OutsideEventLimits>>,
    ApiPath((plugin, path)): ApiPath<(String, String)>,
    sender: ConnectInfo<super::Peer>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    outside_event(&state, &limits, plugin, format!("/{path}"), sender, request).await
}

async fn outside_event(
    state: &ApiState,
    limits: &OutsideEventLimits,
    plugin: String,
    path: String,
    ConnectInfo(super::Peer(sender)): ConnectInfo<super::Peer>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    if let Err(wait) = limits.admit(&plugin) {
        let seconds = wait.as_secs().max(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many outside events for '{plugin}' (plugins.external_events_per_minute); try again in {seconds} s"
            ),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, limits.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "an outside event's body may be at most {} KiB (plugins.external_event_max_kib)",
                    limits.max_body_bytes >> 10
                ),
            )
        })?;
    let event = OutsideEvent {
        method: parts.method.to_string(),
        path,
        query: parts.uri.query().unwrap_or_default().to_string(),
        remote_address: sender.to_string(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect(),
        body: body.to_vec(),
    };
    let outcome = state
        .triggers
        .external_event(&plugin, event)
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
    )
        .into_response())
}

/// The outside-event endpoint's bounds: body size, and a token bucket per plugin
/// (`plugins.external_events_per_minute`, bursts up to that many).
#[derive(Debug)]
pub(super) struct OutsideEventLimits {
    max_body_bytes: usize,
    per_minute: u64,
    /// Per plugin: tokens left and when they were counted.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl OutsideEventLimits {
    /// Most plugins whose buckets are remembered; past it the fullest are forgotten (a full
    /// bucket is what a new one starts as).
    const MOST_BUCKETS: usize = 4096;

    pub(super) fn new(config: &crate::config::PluginsSection) -> Self {
        Self {
            max_body_bytes: usize::try_from(config.external_event_max_kib << 10)
                .unwrap_or(usize::MAX),
            per_minute: config.external_events_per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of the plugin's bucket, or says how long until one is there.
    fn admit(&self, plugin: &str) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = self.per_minute as f64;
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= Self::MOST_BUCKETS && !buckets.contains_key(plugin) {
            buckets.retain(|_, (tokens, at)| {
                *tokens + at.elapsed().as_secs_f64() * per_second < capacity
            });
        }
        let (tokens, at) = buckets.entry(plugin.to_string()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_second))
        }
    }
}

/// A plugin in v0's `Extension` shape (v0's extensions were its triggers).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = Extension)]
pub struct V0Extension {
    pub registration: ExtensionRegistration,
    pub documentation: ExtensionDocumentation,
    /// When the plugin was loaded (epoch milliseconds; 0 when unknown).
    pub started: u64,
    /// `running` when loaded, `exited` when it failed.
    pub state: String,
    /// How the server reaches it: `wasm://NAME` or `grpc://NAME`.
    pub url: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExtensionRegistration {
    pub extension_id: String,
    /// v0 ran extensions as images; a plugin's is where it comes from (`builtin`, `folder`).
    pub image: String,
    pub settings: Vec<crate::models::Variable>,
    pub created: u64,
    pub modified: u64,
    /// `enabled` when loaded, `disabled` when not.
    pub status: String,
    pub additional_roles: Vec<String>,
    pub registry_auth: Option<crate::models::RegistryAuth>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExtensionDocumentation {
    pub body: String,
    pub config_params: Vec<crate::models::PluginParameter>,
    pub pipeline_subscription_params: Vec<crate::models::PluginParameter>,
}

impl From<Plugin> for V0Extension {
    fn from(plugin: Plugin) -> Self {
        let loaded = plugin.status == "loaded";
        Self {
            url: format!("{}://{}", plugin.runtime, plugin.name),
            registration: ExtensionRegistration {
                extension_id: plugin.name,
                image: plugin.source,
                settings: Vec::new(),
                created: 0,
                modified: 0,
                status: if loaded { "enabled" } else { "disabled" }.into(),
                additional_roles: Vec::new(),
                registry_auth: None,
            },
            documentation: ExtensionDocumentation {
                body: plugin.description,
                config_params: Vec::new(),
                pipeline_subscription_params: plugin.settings,
            },
            started: 0,
            state: if loaded { "running" } else { "exited" }.into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListExtensionsResponse {
    pub extensions: Vec<V0Extension>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetExtensionResponse {
    pub extension: V0Extension,
}

/// v0's list of extensions: the trigger plugins, in v0's `Extension` shape (`GET /api/plugins`
/// has all plugins in Gofer's).
#[utoipa::path(get, path = "/api/extensions", tag = "Plugins", operation_id = "list_extensions",
    responses((status = 200, body = ListExtensionsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_extensions(
    state: AppState,
    Extension(identity): Extension<Identity>,
) -> Result<ApiJson<ListExtensionsResponse>, ApiError> {
    let extensions = state
        .triggers
        .plugins()
        .await
        .list()
        .into_iter()
        .filter(|plugin| plugin.kind != Some(crate::models::PluginKind::Task))
        .filter(|plugin| identity.may_read(vec![Needed::on("plugins", &plugin.name)]))
        .map(Into::into)
        .collect();
    Ok(ApiJson(ListExtensionsResponse { extensions }))
}

/// v0's extension: a trigger plugin in v0's `Extension` shape.
#[utoipa::path(get, path = "/api/extensions/{extension_id}", tag = "Plugins", operation_id = "get_extension",
    params(("extension_id" = String, Path, description = "The plugin's name")),
    responses((status = 200, body = GetExtensionResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_extension(
    state: AppState,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<GetExtensionResponse>, ApiError> {
    let plugin = state
        .triggers
        .plugins()
        .await
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("plugin '{name}' not found")))?;
    Ok(ApiJson(GetExtensionResponse {
        extension: plugin.into(),
    }))
}

/// The answer to v0's install, uninstall and enable/disable of extensions: plugins are files.
fn managed_by_files(state: &ApiState) -> ApiError {
    ApiError::bad_request(format!(
        "Gofer manages plugins through its plugins folder ({}), not through the API: drop a \
         .wasm component or a .toml manifest of a gRPC plugin there to install or replace one, \
         remove the file to uninstall it; subscriptions choose which pipelines use it (see \
         docs/plugins.md)",
        state.config.plugins_dir().display()
    ))
}

/// v0's install of an extension (a container image): refused with how plugins are managed.
#[utoipa::path(post, path = "/api/extensions", tag = "Plugins", operation_id = "install_extension",
    request_body = serde_json::Value,
    responses((status = "4XX", body = super::ErrorBody)))]
async fn install_extension(state: AppState) -> ApiError {
    managed_by_files(&state)
}

/// v0's uninstall of an extension: refused with how plugins are managed.
#[utoipa::path(delete, path = "/api/extensions/{extension_id}", tag = "Plugins", operation_id = "uninstall_extension",
    params(("extension_id" = String, Path, description = "The plugin's name")),
    responses((status = "4XX", body = super::ErrorBody)))]
async fn uninstall_extension(state: AppState) -> ApiError {
    managed_by_files(&state)
}

/// v0's enable/disable of an extension: refused with how plugins are managed (disable a
/// pipeline's subscription instead).
#[utoipa::path(patch, path = "/api/extensions/{extension_id}", tag = "Plugins", operation_id = "update_extension",
    params(("extension_id" = String, Path, description = "The plugin's name")),
    request_body = serde_json::Value,
    responses((status = "4XX", body = super::ErrorBody)))]
async fn update_extension(state: AppState) -> ApiError {
    managed_by_files(&state)
}

/// A plugin's own log: what it wrote (WIT `log`, a trigger's output, a gRPC process's stdout and
/// stderr), oldest first, as `text/plain`; as a websocket, each line as a text frame, the kept
/// ones first, then live ones until the client closes. Administrators only (a plugin serves
/// every namespace).
#[utoipa::path(get, path = "/api/extensions/{extension_id}/logs", tag = "Plugins", operation_id = "get_extension_logs",
    params(("extension_id" = String, Path, description = "The plugin's name")),
    responses((status = 200, content_type = "text/plain", body = String), (status = 101, description = "Websocket stream of log lines"),
              (status = "4XX", body = super::ErrorBody)))]
async fn get_extension_logs(
    state: AppState,
    super::events::MaybeUpgrade(upgrade): super::events::MaybeUpgrade,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let registry = state.triggers.plugins().await;
    if registry.get(&name).is_none() {
        return Err(ApiError::not_found(format!("plugin '{name}' not found")));
    }
    let logs = registry.logs().clone();
    let Some(upgrade) = upgrade else {
        let text = logs.read(&name).await;
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    };
    let mut shutdown = state.shutdown.clone();
    Ok(upgrade.on_upgrade(move |mut socket: WebSocket| async move {
        use axum::extract::ws::{Message, close_code};
        // Follow first, so that no line written while the kept ones are sent is missed.
        let mut live = logs.follow(&name);
        for line in logs.read(&name).await.split_inclusive('\n') {
            if socket.send(Message::Text(line.to_string().into())).await.is_err() {
                return;
            }
        }
        let end = loop {
            tokio::select! {
                line = live.recv() => match line {
                    Ok(line) => {
                        if socket.send(Message::Text(line.into())).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(skipped)) => {
                        let note = format!("[gofer: {skipped} lines skipped: the reader fell behind]\n");
                        if socket.send(Message::Text(note.into())).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        break (close_code::NORMAL, "log stream finished".to_string());
                    }
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    _ => {}
                },
                _ = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => {
                    break (close_code::AWAY, "server shutting down".to_string());
                }
            }
        };
        let _ = super::events::close(&mut socket, end.0, &end.1).await;
    }))
}
