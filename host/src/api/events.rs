//! Event endpoints (`/api/events`): list, get, delete, and the live websocket stream.
//!
//! The stream reads events back from storage in stored order after each wake-up from the
//! [`crate::events::EventBus`], so a listener never misses or repeats one, even when it lags.
//! A caller sees only events about namespaces and pipelines its roles let it read.

use axum::extract::FromRequestParts;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Identity;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState};
use crate::auth::Needed;
use crate::models::Event;
use crate::storage::{Page, StorageError};

/// How many stored events a stream reads per query.
const STREAM_BATCH: u64 = 100;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_or_stream_events))
        .routes(routes!(get_event, delete_event))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListEventsResponse {
    pub events: Vec<Event>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetEventResponse)]
pub struct EventResponse {
    pub event: Event,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Websocket: send stored events before live ones. Default false (live only).
    pub history: Option<bool>,
    /// Newest first. With a websocket only together with `history`, and the stream then ends
    /// after the oldest event.
    pub reverse: Option<bool>,
    /// Plain GET: page size (default `api.default_page_limit`).
    pub limit: Option<u64>,
    /// Plain GET: events to skip.
    pub offset: Option<u64>,
}

/// What reading an event needs: `events`, and the namespace and pipeline it is about, if any.
fn needs(event: &Event) -> Vec<Needed> {
    let mut needs = vec![Needed {
        name: "events",
        target: None,
    }];
    // Every kind is `{"<kind>": {fields}}`; the scope is in the fields of the same name.
    if let Ok(serde_json::Value::Object(kind)) = serde_json::to_value(&event.kind) {
        let fields = kind.values().next();
        for (resource, field) in [("namespaces", "namespace_id"), ("pipelines", "pipeline_id")] {
            if let Some(target) = fields.and_then(|fields| fields[field].as_str()) {
                needs.push(Needed::on(resource, target));
            }
        }
    }
    needs
}

/// A websocket upgrade if the request asks for one.
pub(super) struct MaybeUpgrade(pub(super) Option<WebSocketUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            WebSocketUpgrade::from_request_parts(parts, state)
                .await
                .ok()
                .map(|upgrade| upgrade.protocols([super::WEBSOCKET_PROTOCOL])),
        ))
    }
}

/// List stored events, or, as a websocket, stream them: each text frame is one event's JSON.
///
/// Plain GET: a page of stored events, oldest first (`reverse=true`: newest first).
/// Websocket: `history=true` first sends stored events, then live ones as they happen;
/// `history=false` sends only live ones. `reverse=true` (with history) sends stored events newest
/// first and then closes with code 1000 "out of events".
#[utoipa::path(get, path = "/api/events", tag = "Events", operation_id = "stream_events",
    params(EventsQuery),
    responses((status = 200, body = ListEventsResponse), (status = 101, description = "Websocket stream of events"),
              (status = "4XX", body = super::ErrorBody)))]
async fn list_or_stream_events(
    state: AppState,
    axum::Extension(identity): axum::Extension<Identity>,
    MaybeUpgrade(upgrade): MaybeUpgrade,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let reverse = query.reverse.unwrap_or(false);
    let Some(upgrade) = upgrade else {
        let page = state.page(&super::PageQuery {
            limit: query.limit,
            offset: query.offset,
        })?;
        let events = state
            .visible_page(
                &identity,
                page,
                move |db, page| db.list_events(page, reverse),
                needs,
            )
            .await?;
        return Ok(ApiJson(ListEventsResponse { events }).into_response());
    };
    let history = query.history.unwrap_or(false);
    if reverse && !history {
        return Err(ApiError::bad_request(
            "reverse=true needs history=true: live events can only be streamed oldest first",
        ));
    }
    let state = state.0;
    Ok(upgrade.on_upgrade(move |socket| async move {
        let _counted = crate::metrics::Live::new(&crate::metrics::metrics().event_stream_clients);
        if let Err(error) = stream_events(state, identity, socket, history, reverse).await {
            tracing::debug!(%error, "event stream ended with an error");
        }
    }))
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("websocket: {0}")]
    Socket(#[from] axum::Error),
    #[error("could not encode an event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Sends an event the caller may read (and skips the others).
async fn send_event(
    socket: &mut WebSocket,
    identity: &Identity,
    event: &Event,
) -> Result<(), StreamError> {
    if !identity.may_read(needs(event)) {
        return Ok(());
    }
    socket
        .send(Message::Text(serde_json::to_string(event)?.into()))
        .await?;
    Ok(())
}

/// Ends a websocket session with a close frame (code and a short reason).
pub(super) async fn close(
    socket: &mut WebSocket,
    code: u16,
    reason: &str,
) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
}

async fn stream_events(
    state: ApiState,
    identity: Identity,
    mut socket: WebSocket,
    history: bool,
    reverse: bool,
) -> Result<(), StreamError> {
    // Subscribe before reading anything, so no event falls between history and live.
    let mut wake_ups = state.events.subscribe();
    let mut shutdown = state.shutdown.clone();
    if reverse {
        let mut offset = 0;
        loop {
            let page = Page {
                limit: STREAM_BATCH,
                offset,
            };
            let events = state
                .storage
                .read(move |db| db.list_events(page, true))
                .await?;
            for event in &events {
                send_event(&mut socket, &identity, event).await?;
            }
            if (events.len() as u64) < STREAM_BATCH {
                return Ok(close(&mut socket, close_code::NORMAL, "out of events").await?);
            }
            offset += STREAM_BATCH;
        }
    }
    let mut sent_up_to = if history {
        0
    } else {
        state.storage.read(|db| db.latest_event_seq()).await?
    };
    loop {
        // Send everything stored after what was sent, in stored order.
        loop {
            let events = state
                .storage
                .read(move |db| db.events_after(sent_up_to, STREAM_BATCH))
                .await?;
            for (seq, event) in &events {
                send_event(&mut socket, &identity, event).await?;
                sent_up_to = *seq;
            }
            if (events.len() as u64) < STREAM_BATCH {
                break;
            }
        }
        tokio::select! {
            wake_up = wake_ups.recv() => match wake_up {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Ok(close(&mut socket, close_code::AWAY, "server shutting down").await?),
            },
            _ = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => {
                return Ok(close(&mut socket, close_code::AWAY, "server shutting down").await?);
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Get one event.
#[utoipa::path(get, path = "/api/events/{event_id}", tag = "Events", operation_id = "get_event",
    params(("event_id" = String, Path)),
    responses((status = 200, body = EventResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_event(
    state: AppState,
    axum::Extension(identity): axum::Extension<Identity>,
    ApiPath(event_id): ApiPath<String>,
) -> Result<ApiJson<EventResponse>, ApiError> {
    let event = state.read(move |db| db.get_event(&event_id)).await?;
    if !identity.may_read(needs(&event)) {
        // Not what it is about: that would tell another team's names.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "your token may not read this event (it is about a namespace or pipeline outside its roles)",
        ));
    }
    Ok(ApiJson(EventResponse { event }))
}

/// Delete one event from the log.
#[utoipa::path(delete, path = "/api/events/{event_id}", tag = "Events", operation_id = "delete_event",
    params(("event_id" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_event(
    state: AppState,
    ApiPath(event_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state
        .write(move |db| match db.delete_event(&event_id)? {
            true => Ok(()),
            false => Err(StorageError::NotFound(format!("event '{event_id}'"))),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
