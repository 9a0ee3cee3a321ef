//! The REST API: routes, the v0 wire conventions and the mapping of errors to HTTP.
//!
//! Owns the axum router, the `gofer-api-version: v0` header rule, JSON error bodies
//! (`{"request_id", "error_code", "message"}`), pagination parameters and the OpenAPI document
//! generated from the handlers. Handlers validate input and call storage (and, later, the
//! orchestrator); they must never talk to Docker, wasmtime or tonic directly.

mod auth;
mod deployments;
mod events;
mod namespaces;
mod objects;
mod pipelines;
mod plugins;
mod runs;
mod secrets;
mod system;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use self::auth::Identity;
use crate::config::ServerConfig;
use crate::events::EventBus;
use crate::pipeline_config::ConfigError;
use crate::storage::{Db, Page, Storage, StorageError};
use crate::telemetry::{self, TraceParent};

/// The header every API request must carry, and its only accepted value.
pub const API_VERSION_HEADER: &str = "gofer-api-version";

/// The websocket subprotocol a browser names instead of the `gofer-api-version: v0` header
/// (the web UI); the server answers with it.
pub const WEBSOCKET_PROTOCOL: &str = "gofer.v0";

/// The prefix of the websocket subprotocol that carries a browser's token instead of an
/// `Authorization` header: `gofer.bearer.<token>` (never put in the URL).
pub const WEBSOCKET_TOKEN_PREFIX: &str = "gofer.bearer.";

/// The subprotocols a websocket request names.
pub(crate) fn websocket_protocols(headers: &axum::http::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}
pub const API_VERSION: &str = "v0";

/// Largest JSON body accepted (a pipeline config with many tasks stays far below it).
const MAX_JSON_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The use cases; handlers translate HTTP to them.
    pub app: crate::app::App,
    pub storage: Storage,
    pub events: EventBus,
    pub orchestrator: crate::orchestrator::Orchestrator,
    pub triggers: crate::orchestrator::triggers::TriggerManager,
    pub config: Arc<ServerConfig>,
    /// Where secret values live.
    pub secrets: Arc<dyn crate::secrets::SecretStore>,
    /// Where object contents live.
    pub objects: Arc<dyn crate::objects::ObjectStore>,
    /// Flips to `true` when the server starts shutting down; long-lived streams end on it.
    pub shutdown: watch::Receiver<bool>,
}

impl ApiState {
    /// Runs a write transaction, then announces the events it stored.
    pub async fn write<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StorageError> + Send + 'static,
    {
        let (value, events) = self.storage.write(work).await?;
        self.events.publish(events);
        Ok(value)
    }

    /// Runs a read.
    pub async fn read<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StorageError> + Send + 'static,
    {
        Ok(self.storage.read(work).await?)
    }

    /// One page of the items of a list the caller may read. Callers who see everything get the
    /// page straight from storage; the others page through what `needs` says they may read,
    /// reading storage in batches.
    pub async fn visible_page<T, L, N>(
        &self,
        identity: &Identity,
        page: Page,
        list: L,
        needs: N,
    ) -> Result<Vec<T>, ApiError>
    where
        T: Send + 'static,
        L: Fn(&Db, Page) -> Result<Vec<T>, StorageError> + Clone + Send + 'static,
        N: Fn(&T) -> Vec<crate::auth::Needed>,
    {
        if !identity.is_restricted() {
            return self.read(move |db| list(db, page)).await;
        }
        const BATCH: u64 = 500;
        let (mut skipped, mut visible, mut offset) = (0, Vec::new(), 0);
        loop {
            let list = list.clone();
            let batch = self
                .read(move |db| {
                    list(
                        db,
                        Page {
                            limit: BATCH,
                            offset,
                        },
                    )
                })
                .await?;
            let complete = (batch.len() as u64) < BATCH;
            for item in batch {
                if !identity.may_read(needs(&item)) {
                    continue;
                }
                if skipped < page.offset {
                    skipped += 1;
                    continue;
                }
                visible.push(item);
                if visible.len() as u64 == page.limit {
                    return Ok(visible);
                }
            }
            if complete {
                return Ok(visible);
            }
            offset += BATCH;
        }
    }

    /// Resolves a request's `limit`/`offset` against the configured default and maximum.
    pub fn page(&self, query: &PageQuery) -> Result<Page, ApiError> {
        let api = &self.config.api;
        let limit = query.limit.unwrap_or(api.default_page_limit);
        if limit == 0 || limit > api.max_page_limit {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {}, got {limit}",
                api.max_page_limit
            )));
        }
        Ok(Page {
            limit,
            // SQLite counts in i64; an offset past that is past every table anyway.
            offset: query.offset.unwrap_or(0).min(i64::MAX as u64),
        })
    }
}

/// `limit` and `offset` of every list endpoint.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items to return: 1 to `api.max_page_limit` (1000 by default); default
    /// `api.default_page_limit` (100).
    pub limit: Option<u64>,
    /// How many items to skip; default 0.
    pub offset: Option<u64>,
}

/// An error response. Its JSON body matches Gofer v0's: `{"request_id", "error_code", "message"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub request_id: String,
    pub error_code: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error_code = self
            .status
            .canonical_reason()
            .map(|reason| reason.replace(' ', ""));
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            request_id: REQUEST_ID
                .try_with(Clone::clone)
                .unwrap_or_else(|_| uuid::Uuid::now_v7().to_string()),
            error_code,
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match &error {
            StorageError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StorageError::AlreadyExists(what) => Self::conflict(format!("{what} already exists")),
            StorageError::Conflict(message) => Self::conflict(message),
            StorageError::NumberTooLarge => Self::bad_request(error.to_string()),
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {other}"),
            ),
        }
    }
}

impl From<crate::app::AppError> for ApiError {
    fn from(error: crate::app::AppError) -> Self {
        use crate::app::AppError;
        match error {
            AppError::Invalid(message) => Self::bad_request(message),
            AppError::Forbidden(message) => Self::new(StatusCode::FORBIDDEN, message),
            AppError::NotFound(what) => Self::not_found(format!("{what} not found")),
            AppError::Conflict(message) => Self::conflict(message),
            AppError::Config(error) => error.into(),
            AppError::Storage(error) => error.into(),
            AppError::Orchestrator(error) => error.into(),
            AppError::Plugin(error) => plugins::plugin_error(error),
            AppError::Objects(error) => error.into(),
            AppError::Secrets(error) => error.into(),
            AppError::Cleanup(message) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not finish deleting: {message}; try again"),
            ),
        }
    }
}

impl From<ConfigError> for ApiError {
    fn from(error: ConfigError) -> Self {
        Self::bad_request(error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::bad_request(format!("invalid request body: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(format!("invalid path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(format!("invalid query: {}", rejection.body_text()))
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s (400 with a message naming the problem).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Refuses API requests without `gofer-api-version: v0`, with Gofer v0's messages.
async fn require_api_version(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let outside_api = path != "/api" && !path.starts_with("/api/");
    let probe = path == "/api/health" || path == "/api/ready";
    if outside_api || probe || path == "/api/openapi.json" || path.starts_with("/api/external/") {
        return next.run(request).await;
    }
    // A browser cannot set headers on a websocket: it names the version as a subprotocol.
    if websocket_protocols(request.headers()).any(|protocol| protocol == WEBSOCKET_PROTOCOL) {
        return next.run(request).await;
    }
    match request.headers().get(API_VERSION_HEADER) {
        None => ApiError::bad_request(format!(
            "Gofer version header missing; '{API_VERSION_HEADER}'"
        ))
        .into_response(),
        Some(value) if value != HeaderValue::from_static(API_VERSION) => ApiError::bad_request(
            format!("Incorrect Gofer version header; should be one of [\"{API_VERSION}\"]"),
        )
        .into_response(),
        Some(_) => next.run(request).await,
    }
}

async fn no_such_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no API route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gofer",
        description = "Gofer runs short-lived jobs as DAGs of containers and WebAssembly plugins. \
                       Every request needs the header `gofer-api-version: v0`.",
    ),
    tags(
        (name = "Namespaces", description = "Groups of pipelines"),
        (name = "Pipelines", description = "Pipelines and their state"),
        (name = "Configs", description = "Versioned pipeline configurations"),
        (name = "Deployments", description = "Changes of a pipeline's live config"),
        (name = "Runs", description = "Executions of a pipeline's live config"),
        (name = "Tasks", description = "The task executions of a run and their logs"),
        (name = "Plugins", description = "Triggers and shared tasks (WebAssembly components)"),
        (name = "Subscriptions", description = "Pipelines subscribed to trigger plugins"),
        (name = "Events", description = "The event log"),
        (name = "System", description = "Server-wide settings and build information"),
    )
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(namespaces::routes())
        .merge(pipelines::routes())
        .merge(deployments::routes())
        .merge(runs::routes())
        .merge(plugins::routes())
        .merge(events::routes())
        .merge(secrets::routes())
        .merge(objects::routes())
        .merge(auth::routes())
        .merge(system::routes())
}

/// The OpenAPI document of the API, generated from the handlers.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut document = api_router().split_for_parts().1;
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    document
}

/// The document as committed in `docs/openapi.json`.
pub fn openapi_json() -> String {
    let mut json = openapi_document()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    json.push('\n');
    json
}

/// The address a request came from (`ConnectInfo<Peer>`), over plain TCP or TLS.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The header carrying a request's id, in requests (a caller's own, if sane) and responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The W3C trace context header a caller may send.
pub const TRACEPARENT_HEADER: &str = "traceparent";

tokio::task_local! {
    /// The id of the request being handled, for its error body.
    static REQUEST_ID: String;
}

/// The whole HTTP service: [`router`] behind a rewrite that collapses repeated slashes in the
/// path before routing (v0's CLI, with its default base URL ending in `/`, asks for
/// `//api/namespaces`).
pub type ApiService = tower::util::MapRequest<axum::Router, fn(Request) -> Request>;

/// See [`ApiService`].
pub fn service(state: ApiState) -> ApiService {
    tower::ServiceExt::map_request(router(state), collapse_slashes as fn(Request) -> Request)
}

/// The request with every run of slashes in its path made one.
fn collapse_slashes(mut request: Request) -> Request {
    let uri = request.uri();
    if !uri.path().contains("//") {
        return request;
    }
    let mut path = String::with_capacity(uri.path().len());
    for character in uri.path().chars() {
        if !(character == '/' && path.ends_with('/')) {
            path.push(character);
        }
    }
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(rewritten) = path_and_query.parse() {
        parts.path_and_query = Some(rewritten);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Gives every request an id (the caller's `x-request-id` when it is 1 to 64 of
/// `[A-Za-z0-9._-]`, else a new UUIDv7), handles it in a span carrying that id (a child of the
/// caller's W3C `traceparent`, when valid, in exported traces), returns the id in
/// `x-request-id` and in error bodies, and logs the outcome: server errors at `error`, refusals at
/// `info`, the rest at `debug`.
async fn with_request_id(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let incoming = request
        .headers()
        .get(TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse);
    if let Some(parent) = &incoming {
        telemetry::adopt_parent(&span, parent);
    }
    let started = std::time::Instant::now();
    let handled =
        telemetry::with_incoming(incoming, REQUEST_ID.scope(id.clone(), next.run(request)));
    let mut response = handled.instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| match status {
        500.. => tracing::error!(status, elapsed_ms, "request failed"),
        400.. => tracing::info!(status, elapsed_ms, "request refused"),
        _ => tracing::debug!(status, elapsed_ms, "request done"),
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The complete HTTP application (routes, conventions, authentication).
pub fn router(state: ApiState) -> axum::Router {
    let (api, _) = api_router().split_for_parts();
    let openapi = openapi_json();
    api.route(
        "/api/external/{plugin}/{*path}",
        axum::routing::any(plugins::external_event_with_path),
    )
    .route(
        "/api/openapi.json",
        axum::routing::get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                openapi,
            )
        }),
    )
    .route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ))
    .layer(axum::Extension(Arc::new(plugins::OutsideEventLimits::new(
        &state.config.plugins,
    ))))
    .route_layer(axum::middleware::from_fn(record_request))
    .route("/metrics", axum::routing::get(serve_metrics))
    .merge(crate::ui::routes())
    .merge(crate::docs_site::routes())
    .fallback(no_such_route)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(axum::middleware::from_fn(require_api_version))
    .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
    .layer(axum::middleware::from_fn(with_request_id))
    .with_state(state)
}

/// Counts each API request by its route template, method and status, with its latency.
async fn record_request(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let route = matched.map_or_else(
        || "unmatched".to_string(),
        |matched| matched.as_str().to_string(),
    );
    let method = request.method().as_str().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    crate::metrics::metrics().http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `GET /metrics`: the Prometheus text exposition. Open in development mode or with
/// `metrics.public`; otherwise the scraper sends `Authorization: Bearer <metrics.scrape_token>`.
async fn serve_metrics(State(state): State<ApiState>, headers: axum::http::HeaderMap) -> Response {
    let settings = &state.config.metrics;
    if !state.config.development.bypass_auth && !settings.public {
        if settings.scrape_token.is_empty() {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "metrics are not enabled: set metrics.scrape_token (scrapers send it as `Authorization: Bearer <token>`) or metrics.public",
            )
            .into_response();
        }
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        // Compared as digests, so the comparison takes the same time whatever is sent.
        use sha2::{Digest, Sha256};
        if Sha256::digest(given.as_bytes()) != Sha256::digest(settings.scrape_token.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "send `Authorization: Bearer <metrics.scrape_token>` to read the metrics",
            )
            .into_response();
        }
    }
    match state.storage.read(|db| db.queue_depth()).await {
        Ok(depth) => {
            crate::metrics::metrics()
                .queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        Err(error) => tracing::warn!(%error, "could not count the run queue for the metrics"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::encode(),
    )
        .into_response()
}

/// Helper for handlers: `State` under a short name.
pub type AppState = State<ApiState>;
