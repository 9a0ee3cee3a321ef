//! The v0 wire conventions every endpoint shares.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{TestServer, assert_error};

#[tokio::test]
async fn the_version_header_is_required_and_must_be_v0() {
    let server = TestServer::start().await;
    let api = server.client();
    for path in [
        "/api/namespaces",
        "/api/system/metadata",
        "/api/events",
        "/api/system",
    ] {
        let missing = api.send(Method::GET, path, None, None).await;
        assert_error(
            &missing,
            StatusCode::BAD_REQUEST,
            "Gofer version header missing; 'gofer-api-version'",
        );
        let wrong = api.send(Method::GET, path, None, Some("v1")).await;
        assert_error(
            &wrong,
            StatusCode::BAD_REQUEST,
            "Incorrect Gofer version header; should be one of [\"v0\"]",
        );
    }
    let created = api
        .send(
            Method::POST,
            "/api/namespaces",
            Some(json!({"id": "nohdr", "name": "n", "description": ""})),
            None,
        )
        .await;
    assert_eq!(created.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        api.get("/api/namespaces/nohdr").await.0,
        StatusCode::NOT_FOUND,
        "a refused request must not act"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let server = TestServer::start().await;
    let api = server.client();
    assert_error(
        &api.get("/api/nothing-here").await,
        StatusCode::NOT_FOUND,
        "no API route for GET /api/nothing-here",
    );
    let wrong_method = api
        .send(Method::PUT, "/api/namespaces", None, Some("v0"))
        .await;
    assert_error(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "PUT is not allowed on /api/namespaces",
    );
}

#[tokio::test]
async fn bad_bodies_and_parameters_are_400_with_a_message() {
    let server = TestServer::start().await;
    let api = server.client();
    let not_json = api.post_raw("/api/namespaces", "{not json").await;
    assert_error(&not_json, StatusCode::BAD_REQUEST, "invalid request body");
    let missing_field = api
        .post("/api/namespaces", json!({"id": "abc", "name": "n"}))
        .await;
    assert_error(
        &missing_field,
        StatusCode::BAD_REQUEST,
        "missing field `description`",
    );
    let wrong_type = api
        .post(
            "/api/namespaces",
            json!({"id": 5, "name": "n", "description": ""}),
        )
        .await;
    assert_error(&wrong_type, StatusCode::BAD_REQUEST, "id");
    let unknown_field = api
        .post(
            "/api/namespaces",
            json!({"id": "abc", "name": "n", "description": "", "colour": 1}),
        )
        .await;
    assert_error(
        &unknown_field,
        StatusCode::BAD_REQUEST,
        "unknown field `colour`",
    );
    let bad_version = api
        .get("/api/namespaces/default/pipelines/p-1/configs/latest")
        .await;
    assert_error(&bad_version, StatusCode::BAD_REQUEST, "invalid path");
    let bad_limit = api.get("/api/namespaces?limit=lots").await;
    assert_error(&bad_limit, StatusCode::BAD_REQUEST, "invalid query");
    let zero_limit = api.get("/api/namespaces?limit=0").await;
    assert_error(
        &zero_limit,
        StatusCode::BAD_REQUEST,
        "limit must be between 1 and 1000",
    );
    let huge_limit = api.get("/api/namespaces?limit=1001").await;
    assert_error(
        &huge_limit,
        StatusCode::BAD_REQUEST,
        "limit must be between 1 and 1000",
    );
}

#[tokio::test]
async fn every_list_endpoint_pages_with_limit_and_offset() {
    let server = TestServer::start().await;
    let api = server.client();
    for index in 0..5 {
        let id = format!("page-{index}");
        assert_eq!(
            api.post(
                "/api/namespaces",
                json!({"id": id, "name": id, "description": ""})
            )
            .await
            .0,
            StatusCode::CREATED
        );
    }
    let (_, first) = api.get("/api/namespaces?limit=2").await;
    let (_, second) = api.get("/api/namespaces?limit=2&offset=2").await;
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first), ["default", "page-0"]);
    assert_eq!(ids(&second), ["page-1", "page-2"]);
    let (_, events) = api.get("/api/events?limit=3&offset=1").await;
    assert_eq!(events["events"].as_array().unwrap().len(), 3);
    let (_, newest) = api.get("/api/events?limit=1&reverse=true").await;
    assert_eq!(
        newest["events"][0]["kind"]["created_namespace"]["namespace_id"],
        "page-4"
    );
}

/// Pages far into a list are found through indexes; each page must still be exactly the one
/// asked for, in both orders.
#[tokio::test]
async fn runs_and_events_page_by_offset_in_both_orders() {
    let server = TestServer::start().await;
    let api = server.client();
    crate::support::deploy(
        &api,
        json!({"id": "pages", "name": "Pages", "tasks": [{"id": "noop", "plugin": "debug"}]}),
    )
    .await;
    for _ in 0..7 {
        crate::support::start_run(&api, "pages", json!({})).await;
    }
    crate::support::wait_for_run(&api, "pages", 7, 60).await;
    let page = |query: &'static str| {
        let api = api.clone();
        async move {
            let (status, body) = api
                .get(&format!(
                    "/api/namespaces/default/pipelines/pages/runs?{query}"
                ))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|run| run["run_id"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page("limit=3").await, [1, 2, 3]);
    assert_eq!(page("limit=3&offset=3").await, [4, 5, 6]);
    assert_eq!(page("limit=3&offset=6").await, [7]);
    assert_eq!(page("limit=3&offset=7").await, Vec::<u64>::new());
    assert_eq!(page("limit=3&reverse=true").await, [7, 6, 5]);
    assert_eq!(page("limit=3&offset=5&reverse=true").await, [2, 1]);

    let (_, all) = api.get("/api/events?limit=1000").await;
    let all: Vec<String> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_string())
        .collect();
    assert!(all.len() > 10);
    let events = |query: String| {
        let api = api.clone();
        async move {
            let (_, body) = api.get(&format!("/api/events?{query}")).await;
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| event["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(events("limit=4&offset=5".into()).await, all[5..9]);
    let newest_first: Vec<String> = all.iter().rev().cloned().collect();
    assert_eq!(
        events("limit=4&offset=3&reverse=true".into()).await,
        newest_first[3..7]
    );
    assert!(events(format!("offset={}", all.len())).await.is_empty());
    // Every page, near either end, in both orders.
    for offset in 0..=all.len() {
        let end = (offset + 4).min(all.len());
        assert_eq!(
            events(format!("limit=4&offset={offset}")).await,
            all[offset..end],
            "offset {offset}"
        );
        assert_eq!(
            events(format!("limit=4&offset={offset}&reverse=true")).await,
            newest_first[offset..end],
            "offset {offset}, newest first"
        );
    }

    // A pipeline deleted and made again counts its runs from nothing.
    let (status, body) = api.delete("/api/namespaces/default/pipelines/pages").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    crate::support::deploy(
        &api,
        json!({"id": "pages", "name": "Pages", "tasks": [{"id": "noop", "plugin": "debug"}]}),
    )
    .await;
    assert_eq!(page("limit=3&offset=2").await, Vec::<u64>::new());
    crate::support::start_run(&api, "pages", json!({})).await;
    crate::support::wait_for_run(&api, "pages", 1, 60).await;
    assert_eq!(page("limit=3").await, [1]);
    assert_eq!(page("limit=3&reverse=true").await, [1]);
}

#[tokio::test]
async fn system_preferences_and_metadata() {
    let server = TestServer::start().await;
    let api = server.client();
    let (status, metadata) = api.get("/api/system/metadata").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metadata["semver"], env!("CARGO_PKG_VERSION"));
    assert!(metadata["commit"].is_string());
    let (_, preferences) = api.get("/api/system").await;
    assert_eq!(
        preferences,
        json!({"bootstrap_token_created": false, "ignore_pipeline_run_events": false})
    );
    let (status, body) = api
        .patch("/api/system", json!({"ignore_pipeline_run_events": true}))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert_eq!(
        api.get("/api/system").await.1["ignore_pipeline_run_events"],
        true
    );
    let bad = api
        .patch("/api/system", json!({"ignore_pipeline_run_events": "yes"}))
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "ignore_pipeline_run_events");
}

#[tokio::test]
async fn numbers_beyond_the_database_range_are_bad_requests_not_server_errors() {
    let server = TestServer::start().await;
    let api = server.client();
    let huge = "9223372036854775808";
    let (status, body) = api.get(&format!("/api/events?offset={huge}")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"events": []})));
    crate::support::register(
        &api,
        "default",
        crate::support::sdk_config("big", json!([crate::support::sdk_task("only", json!({}))])),
    )
    .await;
    for path in [
        format!("/api/namespaces/default/pipelines/big/configs/{huge}"),
        format!("/api/namespaces/default/pipelines/big/deployments/{huge}"),
        format!("/api/namespaces/default/pipelines/big/runs/{huge}"),
    ] {
        assert_error(&api.get(&path).await, StatusCode::BAD_REQUEST, "too large");
    }
}

/// v0's CLI, with its default base URL ending in `/`, asks for `//api/namespaces`.
#[tokio::test]
async fn repeated_slashes_in_a_path_are_one() {
    let server = TestServer::start().await;
    let api = server.client();
    let (status, plain) = api.get("/api/namespaces").await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "//api/namespaces",
        "/api//namespaces",
        "///api///namespaces",
        "//api/namespaces?limit=5",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!((status, &body), (StatusCode::OK, &plain), "{path}");
    }
    let (status, body) = api.get("//api/namespaces//default").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["namespace"]["id"], "default");
    // Encoded slashes are part of an id, not separators.
    let (status, _) = api.get("/api/namespaces/a%2F%2Fb").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_response_carries_its_request_id_and_the_log_has_it() {
    let server = TestServer::start().await;
    let http = crate::support::http_client();
    let get = |path: &str, id: Option<&str>| {
        let mut request = http
            .get(format!("{}{path}", server.base_url()))
            .header("gofer-api-version", "v0");
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let ok = get("/api/namespaces", None).await.unwrap();
    let first = ok.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(first.len(), 36, "a UUID: {first}");
    let missing = get("/api/namespaces/nope", None).await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let id = missing.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(id, first);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(
        body["request_id"],
        id.as_str(),
        "the body's id is the header's"
    );
    // A caller's own id is kept when it is a plain token, replaced otherwise.
    let own = get("/api/namespaces/nope", Some("trace-42.a_b"))
        .await
        .unwrap();
    assert_eq!(own.headers()["x-request-id"], "trace-42.a_b");
    let body: serde_json::Value = own.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-42.a_b");
    let odd = get("/api/namespaces", Some("has spaces and {braces}"))
        .await
        .unwrap();
    assert_ne!(odd.headers()["x-request-id"], "has spaces and {braces}");
    // The refusal is in the server's log, with the id the caller was given.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !server.log().contains(&id) {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} not in the log:\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = server
        .log()
        .lines()
        .find(|line| line.contains(&id))
        .unwrap()
        .to_string();
    assert!(line.contains("404") || line.contains("refused"), "{line}");
}
