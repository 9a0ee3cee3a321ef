//! Namespace and pipeline endpoints, with the exact v0 JSON shapes.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestServer, assert_error, register, sdk_config, sdk_task};

#[tokio::test]
async fn namespace_crud_has_the_v0_shapes() {
    let server = TestServer::start().await;
    let api = server.client();

    let (status, body) = api.get("/api/namespaces/default").await;
    assert_eq!(status, StatusCode::OK);
    let default = &body["namespace"];
    assert_eq!(default["id"], "default");
    assert_eq!(default["name"], "Default");
    assert_eq!(
        default["description"],
        "The original namespace created automatically by the Gofer system."
    );
    assert_eq!(default["modified"], 0);

    let (status, created) = api
        .post(
            "/api/namespaces",
            json!({"id": "devops-a", "name": "DevOps A", "description": "ops team"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let namespace = &created["namespace"];
    let keys: Vec<&str> = namespace
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 5, "exactly the v0 fields: {namespace}");
    for key in ["id", "name", "description", "created", "modified"] {
        assert!(keys.contains(&key), "missing {key} in {namespace}");
    }
    let created_ms = namespace["created"].as_u64().unwrap();
    assert!(
        created_ms > 1_700_000_000_000,
        "epoch milliseconds, got {created_ms}"
    );
    assert_eq!(namespace["modified"], 0);

    let duplicate = api
        .post(
            "/api/namespaces",
            json!({"id": "devops-a", "name": "x", "description": ""}),
        )
        .await;
    assert_error(
        &duplicate,
        StatusCode::CONFLICT,
        "namespace 'devops-a' already exists",
    );
    for (bad_id, problem) in [
        ("ab", "less than 3"),
        ("under_score", "alphanumeric and hyphen"),
        (&"x".repeat(33)[..], "greater than 32"),
    ] {
        let invalid = api
            .post(
                "/api/namespaces",
                json!({"id": bad_id, "name": "x", "description": ""}),
            )
            .await;
        assert_error(&invalid, StatusCode::BAD_REQUEST, problem);
    }

    let (status, updated) = api
        .patch("/api/namespaces/devops-a", json!({"name": "DevOps"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["namespace"]["name"], "DevOps");
    assert_eq!(updated["namespace"]["description"], "ops team");
    assert!(updated["namespace"]["modified"].as_u64().unwrap() >= created_ms);

    let (_, list) = api.get("/api/namespaces").await;
    let ids: Vec<&str> = list["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", "devops-a"]);

    assert_eq!(
        api.delete("/api/namespaces/devops-a").await.0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &api.get("/api/namespaces/devops-a").await,
        StatusCode::NOT_FOUND,
        "namespace 'devops-a' not found",
    );
    assert_error(
        &api.delete("/api/namespaces/devops-a").await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    assert_error(
        &api.patch("/api/namespaces/nope", json!({"name": "x"}))
            .await,
        StatusCode::NOT_FOUND,
        "namespace 'nope' not found",
    );
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_pipelines() {
    let server = TestServer::start().await;
    let api = server.client();
    api.post(
        "/api/namespaces",
        json!({"id": "doomed", "name": "d", "description": ""}),
    )
    .await;
    register(
        &api,
        "doomed",
        sdk_config("inside", json!([sdk_task("only", json!({}))])),
    )
    .await;
    assert_eq!(
        api.delete("/api/namespaces/doomed").await.0,
        StatusCode::NO_CONTENT
    );
    api.post(
        "/api/namespaces",
        json!({"id": "doomed", "name": "d", "description": ""}),
    )
    .await;
    let (_, list) = api.get("/api/namespaces/doomed/pipelines").await;
    assert_eq!(list, json!({"pipelines": []}));
}

#[tokio::test]
async fn pipelines_can_be_disabled_enabled_and_deleted() {
    let server = TestServer::start().await;
    let api = server.client();
    register(
        &api,
        "default",
        sdk_config("toggled", json!([sdk_task("only", json!({}))])),
    )
    .await;
    let path = "/api/namespaces/default/pipelines/toggled";

    let (status, body) = api.get(path).await;
    assert_eq!(status, StatusCode::OK);
    let pipeline = &body["pipeline"];
    assert_eq!(pipeline["namespace_id"], "default");
    assert_eq!(pipeline["pipeline_id"], "toggled");
    assert_eq!(pipeline["state"], "active");
    assert_eq!(pipeline["modified"], 0);
    assert_eq!(pipeline.as_object().unwrap().len(), 5);

    assert_eq!(
        api.patch(path, json!({"state": "disabled"})).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, body) = api.get(path).await;
    assert_eq!(body["pipeline"]["state"], "disabled");
    assert!(body["pipeline"]["modified"].as_u64().unwrap() > 0);
    assert_eq!(
        api.patch(path, json!({"state": "active"})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get(path).await.1["pipeline"]["state"], "active");

    assert_error(
        &api.patch(path, json!({})).await,
        StatusCode::BAD_REQUEST,
        "nothing to update",
    );
    assert_error(
        &api.patch(path, json!({"state": "paused"})).await,
        StatusCode::BAD_REQUEST,
        "unknown variant `paused`",
    );

    let (_, events) = api.get("/api/events?reverse=true&limit=2").await;
    assert!(
        events["events"][0]["kind"]["enabled_pipeline"].is_object(),
        "{events}"
    );
    assert!(
        events["events"][1]["kind"]["disabled_pipeline"].is_object(),
        "{events}"
    );

    let (_, list) = api.get("/api/namespaces/default/pipelines").await;
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 1);
    assert_eq!(api.delete(path).await.0, StatusCode::NO_CONTENT);
    assert_error(
        &api.get(path).await,
        StatusCode::NOT_FOUND,
        "pipeline 'toggled' in namespace 'default' not found",
    );
    assert_error(&api.delete(path).await, StatusCode::NOT_FOUND, "not found");
    assert_error(
        &api.get("/api/namespaces/nope/pipelines").await,
        StatusCode::NOT_FOUND,
        "namespace 'nope' not found",
    );
    assert_error(
        &api.get("/api/namespaces/default/pipelines/toggled/configs")
            .await,
        StatusCode::NOT_FOUND,
        "pipeline 'toggled'",
    );
}

#[tokio::test]
async fn data_survives_a_restart() {
    let mut server = TestServer::start().await;
    let api = server.client();
    api.post(
        "/api/namespaces",
        json!({"id": "kept", "name": "Kept", "description": "survives"}),
    )
    .await;
    let version = register(
        &api,
        "kept",
        sdk_config("durable", json!([sdk_task("only", json!({}))])),
    )
    .await;
    api.post_empty(&format!(
        "/api/namespaces/kept/pipelines/durable/configs/{version}"
    ))
    .await;
    let (_, before) = api
        .get("/api/namespaces/kept/pipelines/durable/configs/1")
        .await;
    let (_, events_before) = api.get("/api/events").await;

    server.restart().await;

    let (status, namespace) = api.get("/api/namespaces/kept").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(namespace["namespace"]["description"], "survives");
    let (_, after) = api
        .get("/api/namespaces/kept/pipelines/durable/configs/1")
        .await;
    assert_eq!(before, after);
    assert_eq!(after["config"]["state"], "live");
    let (_, deployments) = api
        .get("/api/namespaces/kept/pipelines/durable/deployments")
        .await;
    assert_eq!(deployments["deployments"].as_array().unwrap().len(), 1);
    let (_, events_after) = api.get("/api/events").await;
    assert_eq!(
        events_before, events_after,
        "the default namespace is not created (or announced) twice"
    );
}
