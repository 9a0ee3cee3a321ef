//! The web UI: its files and headers over HTTP, and its pages in a real headless Chromium
//! (`tests/browser/ui.mjs`, one browser session for every check) against real servers with real
//! Docker tasks, a broken plugin and a token limited to one namespace.

use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::plugins::plugins_dir;
use crate::support::{TestServer, bootstrap, deploy, new_token, register, secured, shell_task};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn the_ui_is_served_from_the_binary_with_strict_headers() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    // No version header needed outside /api; the page refers to its own files only.
    let page = http.get(server.base_url()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("/ui/app.js") && !html.contains("http://") && !html.contains("https://"));
    let script = http
        .get(format!("{}/ui/app.js", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = script.headers()["etag"].clone();
    let again = http
        .get(format!("{}/ui/app.js", server.base_url()))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let missing = http
        .get(format!("{}/ui/../Cargo.toml", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // The API keeps its rule.
    let api = http
        .get(format!("{}/api/namespaces", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::BAD_REQUEST);
}

/// A binary built without the docs-site feature (the tests' debug build) says at /docs how to
/// get its manual; `make check-static` checks the release binary serves it.
#[tokio::test]
async fn docs_say_how_to_get_the_manual_when_it_is_not_built_in() {
    let server = TestServer::start().await;
    let http = crate::support::http_client();
    let response = http
        .get(format!("{}/docs/", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
    assert!(response.text().await.unwrap().contains("make release"));
}

#[tokio::test]
async fn the_ui_works_in_a_real_browser() {
    let modules = repo().join("tests/browser/node_modules/playwright-core");
    assert!(
        modules.exists(),
        "playwright-core is not installed: run scripts/setup.sh (npm ci in tests/browser)"
    );

    // A development server: pipelines to look at, run and cancel, and a plugin that fails.
    let server = TestServer::start().await;
    let api = server.client();
    std::fs::write(
        plugins_dir(&server).join("broken.wasm"),
        b"this is not a component",
    )
    .unwrap();
    deploy(
        &api,
        json!({"id": "dag3", "name": "Three tasks", "description": "build, a slow step that logs, a report",
               "tasks": [
                   // Each task runs long enough for its running state to be drawn.
                   shell_task("build", "echo building; sleep 0.5", json!({})),
                   shell_task("slow", "echo \"$GREETING\"; printf '\\033[32mgreen\\033[0m\\n'; \
                               for i in 1 2 3 4 5; do echo line $i; sleep 0.6; done",
                              json!({"build": "Success"})),
                   shell_task("report", "sleep 0.5; echo done", json!({"slow": "Success"})),
               ]}),
    )
    .await;
    deploy(
        &api,
        json!({"id": "long", "name": "Long", "tasks": [shell_task("sleepy", "sleep 300", json!({}))]}),
    )
    .await;
    deploy(
        &api,
        json!({"id": "ticking", "name": "Ticking", "tasks": [shell_task("tick", "true", json!({}))],
               "triggers": [{"plugin": "interval", "id": "tick", "settings": {"every": "1h"}}]}),
    )
    .await;

    // A second version of `ticking`, tried as a canary.
    let v2 = register(
        &api,
        "default",
        json!({"id": "ticking", "name": "Ticking", "tasks": [shell_task("tick", "echo v2", json!({}))],
               "triggers": [{"plugin": "interval", "id": "tick", "settings": {"every": "2h"}}]}),
    )
    .await;
    let (status, body) = api
        .post(
            "/api/namespaces/default/pipelines/ticking/deployments",
            json!({"kind": "canary", "version": v2, "weight": 20, "promote_after": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A server with authentication on, and a token that may read team-a only.
    let guarded = secured().await;
    let root = bootstrap(&guarded).await;
    for namespace in ["team-a", "team-b"] {
        let (status, body) = root
            .post(
                "/api/namespaces",
                json!({"id": namespace, "name": namespace, "description": ""}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    register(
        &root,
        "team-a",
        json!({"id": "team-pipeline", "name": "Team pipeline", "tasks": [shell_task("t", "true", json!({}))]}),
    )
    .await;
    let (status, body) = root
        .post(
            "/api/roles",
            json!({"id": "team-a-reader", "description": "", "permissions": [{
                "resources": ["namespaces:team-a", "pipelines:.*", "configs", "runs", "subscriptions",
                              "deployments", "events", "task_executions"],
                "actions": ["read"]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (token, _) = new_token(&root, "ui-user", &["team-a-reader"], 0).await;

    let shots = std::env::var("GOFER_UI_SHOTS").map_or_else(
        |_| std::env::temp_dir().join("gofer-ui-shots"),
        PathBuf::from,
    );
    let output = tokio::task::spawn_blocking({
        let (url, secured_url) = (server.base_url(), guarded.base_url());
        move || {
            Command::new("node")
                .arg(repo().join("tests/browser/ui.mjs"))
                .env("GOFER_UI_URL", url)
                .env("GOFER_UI_SECURED_URL", secured_url)
                .env("GOFER_UI_TOKEN", token)
                .env("GOFER_UI_ALLOWED", "team-a")
                .env("GOFER_UI_FORBIDDEN", "team-b")
                .env("GOFER_UI_SHOTS", shots)
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(output.status.success(), "browser checks failed:\n{report}");
}
