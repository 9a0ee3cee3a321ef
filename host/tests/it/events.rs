//! The event log: get, delete and the live websocket stream.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{TestServer, assert_error};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &TestServer, query: &str) -> Socket {
    let mut request = format!("ws://{}/api/events{query}", server.address)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("gofer-api-version", "v0".parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next event on the socket (panics after 10 s or on a close).
async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("stream closed: {frame:?}"),
            _ => {}
        }
    }
}

fn created_namespace(event: &Value) -> &str {
    event["kind"]["created_namespace"]["namespace_id"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn events_can_be_read_and_deleted() {
    let server = TestServer::start().await;
    let api = server.client();
    let (_, list) = api.get("/api/events").await;
    let first = list["events"][0].clone();
    assert_eq!(created_namespace(&first), "default");
    let id = first["id"].as_str().unwrap();
    let (status, body) = api.get(&format!("/api/events/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "event": first }));
    assert_eq!(
        api.delete(&format!("/api/events/{id}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &api.get(&format!("/api/events/{id}")).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    assert_error(
        &api.delete(&format!("/api/events/{id}")).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
}

#[tokio::test]
async fn the_stream_sends_history_then_live_events_in_order_without_loss() {
    let server = TestServer::start().await;
    let api = server.client();
    api.post(
        "/api/namespaces",
        json!({"id": "before", "name": "b", "description": ""}),
    )
    .await;

    let mut with_history = connect(&server, "?history=true").await;
    let mut live_only = connect(&server, "").await;
    assert_eq!(
        created_namespace(&next_event(&mut with_history).await),
        "default"
    );
    assert_eq!(
        created_namespace(&next_event(&mut with_history).await),
        "before"
    );

    // A burst of concurrent writes: every listener sees each event exactly once, in stored order.
    let mut writes = Vec::new();
    for index in 0..40 {
        let api = api.clone();
        writes.push(tokio::spawn(async move {
            let id = format!("burst-{index}");
            api.post(
                "/api/namespaces",
                json!({"id": id, "name": id, "description": ""}),
            )
            .await
            .0
        }));
    }
    for write in writes {
        assert_eq!(write.await.unwrap(), StatusCode::CREATED);
    }
    let (_, stored) = api.get("/api/events?offset=2&limit=100").await;
    let stored_ids: Vec<Value> = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(stored_ids.len(), 40);
    for socket in [&mut with_history, &mut live_only] {
        let mut received = Vec::new();
        for _ in 0..40 {
            received.push(next_event(socket).await["id"].clone());
        }
        assert_eq!(received, stored_ids);
    }
}

#[tokio::test]
async fn a_reverse_history_stream_ends_after_the_oldest_event() {
    let server = TestServer::start().await;
    let api = server.client();
    for id in ["one-ns", "two-ns"] {
        api.post(
            "/api/namespaces",
            json!({"id": id, "name": id, "description": ""}),
        )
        .await;
    }
    let mut socket = connect(&server, "?history=true&reverse=true").await;
    let mut seen = Vec::new();
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Text(text) => {
                seen.push(created_namespace(&serde_json::from_str(&text).unwrap()).to_string())
            }
            Message::Close(frame) => {
                let frame = frame.unwrap();
                assert_eq!(u16::from(frame.code), 1000);
                assert_eq!(frame.reason.as_str(), "out of events");
                break;
            }
            _ => {}
        }
    }
    assert_eq!(seen, ["two-ns", "one-ns", "default"]);
    let refused = api
        .send(
            reqwest::Method::GET,
            "/api/events?reverse=true",
            None,
            Some("v0"),
        )
        .await;
    assert_eq!(refused.0, StatusCode::OK, "a plain GET may list in reverse");
}

#[tokio::test]
async fn open_streams_do_not_hold_up_shutdown() {
    let mut server = TestServer::start().await;
    let mut socket = connect(&server, "").await;
    assert!(server.stop(), "the server exits cleanly with a stream open");
    let closing = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap();
    if let Some(Ok(Message::Close(Some(frame)))) = closing {
        assert_eq!(u16::from(frame.code), 1001);
    }
}
