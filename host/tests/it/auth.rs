//! Authentication and authorization on a real server with development mode off: the bootstrap
//! token, tokens with roles, 401 and 403, expiry and disabling, system roles.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    SECRETS_KEY as KEY, TestServer, assert_error, new_token, sdk_config, sdk_task, secured,
};

#[tokio::test]
async fn tokens_and_roles_decide_who_may_do_what() {
    let server = secured().await;
    let anonymous = server.client();
    assert!(
        !server.log().contains("DEVELOPMENT MODE"),
        "{}",
        server.log()
    );

    // No token: 401; public routes still answer.
    assert_error(
        &anonymous.get("/api/namespaces").await,
        StatusCode::UNAUTHORIZED,
        "this server needs a token",
    );
    assert_eq!(
        anonymous.get("/api/system/metadata").await.0,
        StatusCode::OK
    );
    assert_error(
        &anonymous
            .with_token("not-a-token")
            .get("/api/namespaces")
            .await,
        StatusCode::UNAUTHORIZED,
        "unknown token",
    );

    // The bootstrap token, once.
    let (status, body) = anonymous.post_empty("/api/tokens/bootstrap").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let root = anonymous.with_token(body["secret"].as_str().unwrap());
    assert_eq!(body["token_details"]["roles"], json!(["bootstrap"]));
    assert_error(
        &anonymous.post_empty("/api/tokens/bootstrap").await,
        StatusCode::CONFLICT,
        "already created",
    );
    let (_, system) = root.get("/api/system").await;
    assert_eq!(system["bootstrap_token_created"], true);

    // Three namespaces with a pipeline each.
    for namespace in ["devops-a", "devops-b"] {
        let (status, body) = root
            .post(
                "/api/namespaces",
                json!({"id": namespace, "name": namespace, "description": ""}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for namespace in ["devops-a", "devops-b", "default"] {
        let config = sdk_config("app", json!([sdk_task("build", json!({}))]));
        let (status, body) = root
            .post(
                &format!("/api/namespaces/{namespace}/pipelines/app/configs"),
                json!({"config": config}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // A role for the devops namespaces, read-only.
    assert_error(
        &root
            .post(
                "/api/roles",
                json!({"id": "bad", "description": "", "permissions": [{"resources": ["namespace:x"], "actions": ["read"]}]}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "unknown resource 'namespace:x'",
    );
    let (status, body) = root
        .post(
            "/api/roles",
            json!({"id": "devops", "description": "devops teams",
                   "permissions": [{"resources": ["namespaces:^devops.*", "pipelines:.*", "runs"], "actions": ["read"]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["role"]["permissions"][0]["resources"][0], "namespaces:^devops.*",
        "targets are kept (v0 lost them)"
    );
    assert_error(
        &root
            .post("/api/tokens", json!({"user": "x", "roles": ["nope"]}))
            .await,
        StatusCode::NOT_FOUND,
        "role 'nope'",
    );
    let (secret, ops_id) = new_token(&root, "ops", &["devops"], 0).await;
    let ops = anonymous.with_token(&secret);

    for namespace in ["devops-a", "devops-b"] {
        let (status, body) = ops
            .get(&format!("/api/namespaces/{namespace}/pipelines"))
            .await;
        assert_eq!(status, StatusCode::OK, "{namespace}: {body}");
        assert_eq!(body["pipelines"][0]["pipeline_id"], "app", "{body}");
    }
    assert_error(
        &ops.get("/api/namespaces/default/pipelines").await,
        StatusCode::FORBIDDEN,
        "may not read namespaces:default",
    );
    // Read-only: no runs, no tokens, no roles.
    assert_eq!(
        ops.post("/api/namespaces/devops-a/pipelines/app/runs", json!({}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ops.post("/api/tokens", json!({"user": "me", "roles": ["admin"]}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (_, me) = ops.get("/api/tokens/whoami").await;
    assert_eq!(me["token"]["user"], "ops", "{me}");
    assert_eq!(me["token"]["id"], ops_id.as_str());

    // Disabled, then enabled again; a token cannot disable itself.
    let (status, _) = root
        .patch(&format!("/api/tokens/{ops_id}"), json!({"disabled": true}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &ops.get("/api/namespaces/devops-a/pipelines").await,
        StatusCode::UNAUTHORIZED,
        "disabled",
    );
    root.patch(&format!("/api/tokens/{ops_id}"), json!({"disabled": false}))
        .await;
    assert_eq!(
        ops.get("/api/namespaces/devops-a/pipelines").await.0,
        StatusCode::OK
    );
    let (_, whoami) = root.get("/api/tokens/whoami").await;
    let root_id = whoami["token"]["id"].as_str().unwrap().to_string();
    assert_error(
        &root
            .patch(&format!("/api/tokens/{root_id}"), json!({"disabled": true}))
            .await,
        StatusCode::CONFLICT,
        "cannot disable or enable itself",
    );

    // Expired.
    let (short, _) = new_token(&root, "brief", &["admin"], 1).await;
    let brief = anonymous.with_token(&short);
    assert_eq!(brief.get("/api/namespaces").await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_error(
        &brief.get("/api/namespaces").await,
        StatusCode::UNAUTHORIZED,
        "expired",
    );

    // System roles stay as they are.
    assert_eq!(
        root.delete("/api/roles/admin").await.0,
        StatusCode::FORBIDDEN
    );
    let (_, roles) = root.get("/api/roles").await;
    let ids: Vec<&str> = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|role| role["id"].as_str().unwrap())
        .collect();
    for id in ["admin", "anonymous", "bootstrap", "devops", "user"] {
        assert!(ids.contains(&id), "{ids:?}");
    }

    // Tokens are stored as hashes: no secret on disk.
    for file in ["gofer.db", "gofer.db-wal"] {
        let bytes = std::fs::read(server.data_dir.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the token secret is in {file}"
        );
    }
    let (_, listed) = root.get("/api/tokens").await;
    assert!(!listed.to_string().contains(&secret));
    let _: Value = listed;
}

#[tokio::test]
async fn the_cli_works_with_a_token() {
    let server = secured().await;
    let bootstrap = server.cli(&["token", "bootstrap", "--output", "json"]);
    assert!(
        bootstrap.status.success(),
        "{}",
        String::from_utf8_lossy(&bootstrap.stderr)
    );
    let body: Value = serde_json::from_slice(&bootstrap.stdout).unwrap();
    let secret = body["secret"].as_str().unwrap();
    let denied = server.cli(&["namespace", "list"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("needs a token"));
    let listed = server.cli(&["--token", secret, "namespace", "list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let created = server.cli(&[
        "--token", secret, "token", "create", "--user", "ci", "--role", "user",
    ]);
    let created_text = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.status.success() && created_text.contains("secret"),
        "{created_text}"
    );
    let whoami = server.cli(&["--token", secret, "token", "whoami"]);
    assert!(String::from_utf8_lossy(&whoami.stdout).contains("bootstrap"));
}

#[tokio::test]
async fn a_run_token_works_during_its_run_and_is_rejected_after() {
    let server = TestServer::start_with_env(&[
        ("GOFER_DEVELOPMENT__BYPASS_AUTH", "false"),
        ("GOFER_SECRETS__ENCRYPTION_KEY", KEY),
    ])
    .await;
    let anonymous = server.client();
    let (_, body) = anonymous.post_empty("/api/tokens/bootstrap").await;
    let root = anonymous.with_token(body["secret"].as_str().unwrap());
    let script = r#"
        H1="gofer-api-version: v0"; H2="Authorization: Bearer $GOFER_TOKEN"
        OWN="$GOFER_API_BASE_URL/api/namespaces/$GOFER_NAMESPACE_ID/pipelines/$GOFER_PIPELINE_ID"
        wget -q -O- --header "$H1" --header "$H2" "$OWN/runs/$GOFER_RUN_ID" >/dev/null && echo own-run-ok
        wget -q -O- --header "$H1" --header "$H2" "$GOFER_API_BASE_URL/api/namespaces/default/pipelines/other/runs" >/dev/null 2>&1 || echo other-denied
        wget -q -O- --header "$H1" "$OWN/runs/$GOFER_RUN_ID" >/dev/null 2>&1 || echo no-token-denied
        printf %s "$GOFER_TOKEN" > /token
        wget -q -O- --header "$H1" --header "$H2" --post-file /token "$OWN/runs/$GOFER_RUN_ID/objects/token" >/dev/null && echo stored
        echo "token=$GOFER_TOKEN"
    "#;
    let mut task = crate::support::shell_task("call", script, json!({}));
    task["inject_api_token"] = json!(true);
    crate::support::deploy(
        &root,
        json!({"id": "injected", "name": "injected", "tasks": [task]}),
    )
    .await;
    let run_id = crate::support::start_run(&root, "injected", json!({})).await;
    let run = crate::support::wait_for_run(&root, "injected", run_id, 60).await;
    let (_, log) = root
        .get(&format!(
            "/api/namespaces/default/pipelines/injected/runs/{run_id}/tasks/call/logs"
        ))
        .await;
    let log = log.as_str().unwrap_or_default().to_string();
    assert_eq!(run["status"], "successful", "{run}\n{log}");
    for expected in [
        "own-run-ok",
        "other-denied",
        "no-token-denied",
        "stored",
        "token=********",
    ] {
        assert!(log.contains(expected), "{expected} missing:\n{log}");
    }
    // The token the task had no longer works once the run is over.
    let response = crate::support::http_client()
        .get(format!(
            "{}/api/namespaces/default/pipelines/injected/runs/{run_id}/objects/token",
            server.base_url()
        ))
        .header("gofer-api-version", "v0")
        .bearer_auth(body["secret"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let run_secret = response.text().await.unwrap();
    assert_eq!(run_secret.len(), 32, "{run_secret}");
    let former = anonymous.with_token(&run_secret);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = former
            .get(&format!(
                "/api/namespaces/default/pipelines/injected/runs/{run_id}"
            ))
            .await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run token still works: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every event a stream with `history=true&reverse=true` sends before it closes.
async fn streamed_events(server: &TestServer, secret: &str) -> Vec<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let mut request = format!(
        "ws://{}/api/events?history=true&reverse=true",
        server.address
    )
    .into_client_request()
    .unwrap();
    let headers = request.headers_mut();
    headers.insert("gofer-api-version", "v0".parse().unwrap());
    headers.insert("authorization", format!("Bearer {secret}").parse().unwrap());
    let mut socket = tokio_tungstenite::connect_async(request).await.unwrap().0;
    let mut events = Vec::new();
    while let Some(message) =
        tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("the stream ends within 10 s")
    {
        match message.unwrap() {
            Message::Text(text) => events.push(serde_json::from_str(&text).unwrap()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    events
}

/// The namespace and pipeline an event is about, if any.
fn event_scope(event: &Value) -> (String, String) {
    let fields = event["kind"].as_object().unwrap().values().next().unwrap();
    let field = |name: &str| fields[name].as_str().unwrap_or("").to_string();
    (field("namespace_id"), field("pipeline_id"))
}

#[tokio::test]
async fn lists_show_only_what_a_token_may_read() {
    let server = secured().await;
    let anonymous = server.client();
    let (_, body) = anonymous.post_empty("/api/tokens/bootstrap").await;
    let root_secret = body["secret"].as_str().unwrap().to_string();
    let root = anonymous.with_token(&root_secret);
    for namespace in ["devops-a", "devops-b", "other"] {
        root.post(
            "/api/namespaces",
            json!({"id": namespace, "name": namespace, "description": ""}),
        )
        .await;
    }
    for (namespace, pipeline) in [
        ("devops-a", "app"),
        ("devops-a", "payroll"),
        ("devops-b", "app"),
        ("default", "app"),
    ] {
        let config = sdk_config(pipeline, json!([sdk_task("build", json!({}))]));
        let (status, body) = root
            .post(
                &format!("/api/namespaces/{namespace}/pipelines/{pipeline}/configs"),
                json!({"config": config}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    root.post(
        "/api/roles",
        json!({"id": "app-team", "description": "",
               "permissions": [{"resources": ["namespaces:devops-.*", "pipelines:app", "events", "plugins:interval|cron"],
                                "actions": ["read"]}]}),
    )
    .await;
    let (secret, _) = new_token(&root, "app-team", &["app-team"], 0).await;
    let team = anonymous.with_token(&secret);

    let ids = |body: &Value, list: &str, field: &str| -> Vec<String> {
        body[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item[field].as_str().unwrap().to_string())
            .collect()
    };
    // Namespaces: only the readable ones, paged over what is visible.
    let (_, all) = root.get("/api/namespaces").await;
    assert_eq!(ids(&all, "namespaces", "id").len(), 4);
    let (_, visible) = team.get("/api/namespaces").await;
    assert_eq!(ids(&visible, "namespaces", "id"), ["devops-a", "devops-b"]);
    let (_, second) = team.get("/api/namespaces?limit=1&offset=1").await;
    assert_eq!(ids(&second, "namespaces", "id"), ["devops-b"]);
    // Pipelines: the target is anchored, so `payroll` is hidden.
    let (_, pipelines) = team.get("/api/namespaces/devops-a/pipelines").await;
    assert_eq!(ids(&pipelines, "pipelines", "pipeline_id"), ["app"]);
    // Plugins.
    let (_, plugins) = team.get("/api/plugins").await;
    assert_eq!(ids(&plugins, "plugins", "name"), ["cron", "interval"]);

    // Events: listed and streamed only about readable namespaces and pipelines.
    let (_, everything) = root.get("/api/events?limit=1000").await;
    let (_, listed) = team.get("/api/events?limit=1000").await;
    let streamed = streamed_events(&server, &secret).await;
    let listed = listed["events"].as_array().unwrap().clone();
    assert!(!listed.is_empty());
    assert_eq!(listed.len(), streamed.len());
    let mut hidden = 0;
    for event in everything["events"].as_array().unwrap() {
        let (namespace, pipeline) = event_scope(event);
        let readable = (namespace.is_empty() || namespace.starts_with("devops-"))
            && (pipeline.is_empty() || pipeline == "app");
        let id = event["id"].as_str().unwrap();
        let shown = listed.iter().any(|seen| seen["id"] == id);
        assert_eq!(shown, readable, "{event}");
        assert_eq!(streamed.iter().any(|seen| seen["id"] == id), readable);
        if !readable {
            hidden += 1;
            assert_error(
                &team.get(&format!("/api/events/{id}")).await,
                StatusCode::FORBIDDEN,
                "your token may not read this event",
            );
        }
    }
    assert!(hidden >= 3, "default, other and payroll events are hidden");
}
