//! The committed OpenAPI document matches the code, and the server serves it.

use reqwest::StatusCode;

use crate::support::{TestServer, gofer_command};

const COMMITTED: &str = include_str!("../../../docs/openapi.json");

#[test]
fn the_committed_openapi_document_is_fresh() {
    let output = gofer_command()
        .args(["service", "openapi"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    assert!(
        generated == COMMITTED,
        "docs/openapi.json is stale: run `make openapi` and commit the result"
    );
}

#[tokio::test]
async fn the_server_serves_its_openapi_document_with_the_v0_operations() {
    let server = TestServer::start().await;
    let response = crate::support::http_client()
        .get(format!("{}/api/openapi.json", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: serde_json::Value = response.json().await.unwrap();
    let committed: serde_json::Value = serde_json::from_str(COMMITTED).unwrap();
    assert!(
        document == committed,
        "the served document differs from docs/openapi.json"
    );
    let v0: serde_json::Value =
        serde_json::from_str(include_str!("../data/gofer-v0.9.1-openapi.json")).unwrap();
    // Every operation implemented so far has the v0 path, method and operationId.
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap();
            if path == "/api/events" && id == "stream_events" {
                continue;
            }
            let upstream = &v0["paths"][path][method]["operationId"];
            if upstream.is_null() {
                // Beyond v0 (plugins, outside events).
                continue;
            }
            assert_eq!(
                upstream.as_str(),
                Some(id),
                "{method} {path} differs from v0"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations checked");
}
