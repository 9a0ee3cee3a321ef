//! Trust boundaries between teams, on a real server with development mode off: two namespaces,
//! one role per token, and each finding of the authorization probe as a request that must fail
//! (no file outside the data directory, no value echoed, no 2xx across the boundary).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Api, TestServer, bootstrap, deploy, new_token, register, sdk_config, sdk_task, secured,
    shell_task, start_run, wait_until_running,
};

/// Team B's secret: it must never reach team A.
const TEAM_B_SECRET: &str = "team-b-SuperSecret-9f8e7d";

/// A secured server with namespaces `team-a` and `team-b`, pipelines `pipe-pa` and `pipe-pb`,
/// team B's secret `db_password` and object `cfg.txt`, and the bootstrap token.
struct Teams {
    server: TestServer,
    root: Api,
}

impl Teams {
    async fn new() -> Self {
        let server = secured().await;
        let root = bootstrap(&server).await;
        for namespace in ["team-a", "team-b"] {
            let (status, body) = root
                .post(
                    "/api/namespaces",
                    json!({"id": namespace, "name": namespace, "description": ""}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        for (namespace, pipeline) in [("team-a", "pipe-pa"), ("team-b", "pipe-pb")] {
            register(
                &root,
                namespace,
                sdk_config(pipeline, json!([sdk_task("build", json!({}))])),
            )
            .await;
        }
        let (status, body) = root
            .post(
                "/api/namespaces/team-b/pipelines/pipe-pb/secrets",
                json!({"key": "db_password", "content": TEAM_B_SECRET}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = root
            .upload(
                "/api/namespaces/team-b/pipelines/pipe-pb/objects/cfg.txt",
                b"original",
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Self { server, root }
    }

    /// A client whose token has one role with these permissions.
    async fn token_with(&self, role: &str, permissions: Value) -> Api {
        let (status, body) = self
            .root
            .post(
                "/api/roles",
                json!({"id": role, "description": "", "permissions": permissions}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.token_of(&[role]).await
    }

    /// A client whose token has these (existing) roles.
    async fn token_of(&self, roles: &[&str]) -> Api {
        let (secret, _) = new_token(&self.root, "probe", roles, 0).await;
        self.server.client().with_token(&secret)
    }

    /// Team B's object, as an administrator reads it.
    async fn team_b_object(&self) -> Vec<u8> {
        let (status, bytes) = self
            .root
            .download("/api/namespaces/team-b/pipelines/pipe-pb/objects/cfg.txt")
            .await;
        assert_eq!(status, StatusCode::OK);
        bytes
    }
}

/// Read, write and delete on team A only.
fn team_a_writer() -> Value {
    json!([{"resources": ["namespaces:team-a", "pipelines:.*", "configs", "runs", "secrets", "objects", "subscriptions", "task_executions"],
            "actions": ["read", "write", "delete"]}])
}

#[track_caller]
fn refused(response: &(StatusCode, impl std::fmt::Debug), what: &str) {
    assert!(
        response.0.is_client_error(),
        "{what}: expected a 4xx, got {response:?}"
    );
}

#[tokio::test]
async fn object_paths_cannot_leave_the_data_directory() {
    let teams = Teams::new().await;
    let outside = teams.server.data_dir.parent().unwrap().join("escape-check");
    let absolute = std::env::temp_dir().join(format!("gofer-escape-check-{}", std::process::id()));
    let user = teams.token_of(&["user"]).await;
    for api in [&teams.root, &user] {
        for plugin in [
            "..%2F..%2F..%2F..%2Fescape-check".to_string(),
            "..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2Fescape-check".to_string(),
            absolute.display().to_string().replace('/', "%2F"),
            "..".to_string(),
            "%2E%2E".to_string(),
        ] {
            let path = format!("/api/extensions/{plugin}/objects/hello");
            refused(&api.upload(&path, b"pwned").await, &path);
            refused(&api.download(&path).await, &path);
            refused(&api.delete(&path).await, &path);
            refused(
                &api.get(&format!("/api/extensions/{plugin}/objects")).await,
                &path,
            );
        }
        // Another namespace's pipeline and run objects through a plugin's scope.
        for scope in [
            "..%2Fpipeline%2Fteam-b%2Fpipe-pb",
            "..%2Frun%2Fteam-b%2Fpipe-pb%2F1",
        ] {
            let path = format!("/api/extensions/{scope}/objects/cfg.txt");
            refused(&api.upload(&path, b"overwritten").await, &path);
            refused(&api.download(&path).await, &path);
            refused(&api.delete(&path).await, &path);
        }
        // Namespace and pipeline ids are names, not paths.
        for path in [
            "/api/namespaces/..%2F..%2F..%2Fescape-check/pipelines/pipe-pb/objects/k",
            "/api/namespaces/team-b/pipelines/..%2F..%2Fescape-check/objects/k",
        ] {
            refused(&api.upload(path, b"pwned").await, path);
        }
    }
    assert!(!outside.exists(), "{} was written", outside.display());
    assert!(!absolute.exists(), "{} was written", absolute.display());
    assert_eq!(teams.team_b_object().await, b"original");
    // A plugin's objects are those of a loaded plugin: an unknown name is a 404.
    let (status, _) = teams
        .root
        .upload("/api/extensions/no-such-plugin/objects/k", b"x")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_user_role_cannot_touch_plugins_objects() {
    let teams = Teams::new().await;
    let (status, body) = teams
        .root
        .upload("/api/extensions/interval/objects/schedule", b"admin's")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let user = teams.token_of(&["user"]).await;
    for response in [
        user.get("/api/extensions/interval/objects").await,
        user.delete("/api/extensions/interval/objects/schedule")
            .await,
    ] {
        assert_eq!(response.0, StatusCode::FORBIDDEN, "{response:?}");
    }
    assert_eq!(
        user.download("/api/extensions/interval/objects/schedule")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        user.upload("/api/extensions/interval/objects/schedule", b"mine")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // It still sees which plugins there are, and works in its namespace.
    assert_eq!(user.get("/api/plugins").await.0, StatusCode::OK);
    assert_eq!(
        user.get("/api/namespaces/default/pipelines").await.0,
        StatusCode::OK
    );
    assert_eq!(
        teams
            .root
            .download("/api/extensions/interval/objects/schedule")
            .await
            .1,
        b"admin's"
    );
}

#[tokio::test]
async fn permissions_of_one_role_are_not_combined() {
    let teams = Teams::new().await;
    let api = teams
        .token_with(
            "a-and-read-b",
            json!([
                {"resources": ["namespaces:team-a", "pipelines:.*", "secrets", "configs", "runs"],
                 "actions": ["read", "write", "delete"]},
                {"resources": ["namespaces:team-b", "pipelines:.*", "runs"], "actions": ["read"]},
            ]),
        )
        .await;
    let secret = "/api/namespaces/team-b/pipelines/pipe-pb/secrets/db_password?include_secret=true";
    let (status, body) = api.get(secret).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.to_string().contains(TEAM_B_SECRET));
    for path in [
        "/api/namespaces/team-b/pipelines/pipe-pb/configs",
        "/api/namespaces/team-b/pipelines/pipe-pb/secrets",
    ] {
        assert_eq!(api.get(path).await.0, StatusCode::FORBIDDEN, "{path}");
    }
    // What each permission allows on its own still works.
    assert_eq!(
        api.get("/api/namespaces/team-b/pipelines/pipe-pb/runs")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        api.get("/api/namespaces/team-a/pipelines/pipe-pa/secrets")
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn subscription_settings_never_echo_what_they_reference() {
    let teams = Teams::new().await;
    let (status, body) = teams
        .root
        .post(
            "/api/secrets/global",
            json!({"key": "shared", "content": "global-Value-77aa", "namespaces": ["team-b"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // May manage team B's subscriptions, may not read its secrets or objects.
    let manager = teams
        .token_with(
            "subscriber",
            json!([{"resources": ["namespaces:team-b", "pipelines:.*", "subscriptions"],
                    "actions": ["read", "write", "delete"]}]),
        )
        .await;
    let attempts = [
        ("interval", "every", "pipeline_secret{{db_password}}"),
        ("cron", "expression", "pipeline_secret{{db_password}}"),
        ("interval", "every", "global_secret{{shared}}"),
        ("interval", "every", "pipeline_object{{cfg.txt}}"),
    ];
    for (index, (plugin, setting, reference)) in attempts.iter().enumerate() {
        let request = json!({"extension_id": plugin, "subscription_id": format!("leak-{index}"),
                             "settings": {*setting: reference}});
        let path = "/api/namespaces/team-b/pipelines/pipe-pb/subscriptions";
        for (who, api) in [("manager", &manager), ("admin", &teams.root)] {
            let (status, body) = api.post(path, request.clone()).await;
            assert!(
                status.is_client_error(),
                "{who} {reference}: {status} {body}"
            );
            let text = body.to_string();
            for value in [TEAM_B_SECRET, "global-Value-77aa", "original"] {
                assert!(!text.contains(value), "{who} {reference} echoed: {text}");
            }
            if who == "manager" {
                assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            } else {
                // The plugin's refusal comes back, with the value masked.
                assert!(text.contains("********"), "{text}");
            }
        }
    }
}

#[tokio::test]
async fn authorization_reads_ids_as_the_handlers_do() {
    let teams = Teams::new().await;
    let not_b = teams
        .token_with(
            "not-b",
            json!([{"resources": ["namespaces:team-[^b].*", "pipelines:.*", "secrets"],
                    "actions": ["read"]}]),
        )
        .await;
    for encoded in ["team-%62", "team%2Db", "%74eam-b"] {
        let path = format!(
            "/api/namespaces/{encoded}/pipelines/pipe-pb/secrets/db_password?include_secret=true"
        );
        let (status, body) = not_b.get(&path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(!body.to_string().contains(TEAM_B_SECRET));
    }
    assert_eq!(
        not_b
            .get("/api/namespaces/team-a/pipelines/pipe-pa/secrets")
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn creating_a_namespace_needs_that_namespace() {
    let teams = Teams::new().await;
    let writer = teams.token_with("a-writer", team_a_writer()).await;
    for (id, expected) in [
        ("team-c", StatusCode::FORBIDDEN),
        // Exists, but that is none of this token's business: no 409.
        ("team-b", StatusCode::FORBIDDEN),
        ("team-a2", StatusCode::FORBIDDEN),
        ("team-a", StatusCode::CONFLICT),
    ] {
        let (status, body) = writer
            .post(
                "/api/namespaces",
                json!({"id": id, "name": id, "description": ""}),
            )
            .await;
        assert_eq!(status, expected, "{id}: {body}");
    }
    let (status, _) = teams.root.get("/api/namespaces/team-c").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_values_and_patterns_are_refused() {
    let teams = Teams::new().await;
    // A NUL byte could never reach a task's environment (and Docker would quote it unmasked).
    let (status, body) = teams
        .root
        .post(
            "/api/namespaces/team-b/pipelines/pipe-pb/secrets",
            json!({"key": "nul", "content": "before\u{0}after"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("NUL"), "{body}");
    // A pattern that would close the anchoring group.
    for (path, request) in [
        (
            "/api/roles",
            json!({"id": "sneaky", "description": "", "permissions":
                   [{"resources": ["namespaces:team-a)|(-b"], "actions": ["read"]}]}),
        ),
        (
            "/api/secrets/global",
            json!({"key": "sneaky", "content": "x", "namespaces": ["team-a)|(-b"]}),
        ),
    ] {
        let (status, body) = teams.root.post(path, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("not a regex"),
            "{body}"
        );
    }
    // Object keys of every documented length (1 to 256 bytes) work; longer ones are refused.
    for length in [1, 105, 106, 200, 256] {
        let key = "k".repeat(length);
        let path = format!("/api/namespaces/team-b/pipelines/pipe-pb/objects/{key}");
        let (status, body) = teams
            .root
            .upload(&path, length.to_string().as_bytes())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{length}: {body}");
        let (status, bytes) = teams.root.download(&path).await;
        assert_eq!(
            (status, bytes),
            (StatusCode::OK, length.to_string().into_bytes())
        );
        teams.root.delete(&path).await;
    }
    let path = format!(
        "/api/namespaces/team-b/pipelines/pipe-pb/objects/{}",
        "k".repeat(257)
    );
    let (status, body) = teams.root.upload(&path, b"x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let data_dir = teams.server.data_dir.display().to_string();
    assert!(!body.contains(&data_dir), "{body}");
}

#[tokio::test]
async fn run_variables_follow_the_variable_rules() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "vars", "name": "vars", "tasks": [shell_task("only", "true", json!({}))]}),
    )
    .await;
    for (name, value) in [
        ("", "x"),
        ("A=B", "x"),
        ("NUL\u{0}", "x"),
        ("OK", "a\u{0}b"),
    ] {
        let (status, body) = api
            .post(
                "/api/namespaces/default/pipelines/vars/runs",
                json!({"variables": {name: value}}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("run variable"),
            "{body}"
        );
    }
    let (_, runs) = api.get("/api/namespaces/default/pipelines/vars/runs").await;
    assert_eq!(runs["runs"], json!([]), "no run was started");
}

#[tokio::test]
async fn messages_do_not_tell_other_teams_names() {
    let teams = Teams::new().await;
    let reader_a = teams
        .token_with(
            "a-reader",
            json!([{"resources": ["namespaces:team-a", "pipelines:.*", "events"], "actions": ["read"]}]),
        )
        .await;
    // An event about team B: its id says nothing, the refusal must not either.
    let (_, events) = teams.root.get("/api/events?limit=1000").await;
    let about_b = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event.to_string().contains("pipe-pb"))
        .expect("an event about pipe-pb")["id"]
        .clone();
    let id = about_b.as_str().unwrap();
    let (status, body) = reader_a.get(&format!("/api/events/{id}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("team-b") && !text.contains("pipe-pb"),
        "{text}"
    );
}

#[tokio::test]
async fn control_characters_in_ids_are_refused_and_never_logged() {
    let teams = Teams::new().await;
    let forged = "FORGED-LOG-LINE";
    for path in [
        format!("/api/namespaces/x%0A{forged}"),
        format!("/api/namespaces/x%0D%0A{forged}/pipelines"),
        format!("/api/namespaces/x%00{forged}"),
    ] {
        let (status, body) = teams.root.get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    let log = teams.server.log();
    assert!(
        !log.lines().any(|line| line.starts_with(forged)),
        "a line was forged:\n{log}"
    );
}

#[tokio::test]
async fn registry_passwords_are_not_stored_in_clear() {
    let teams = Teams::new().await;
    let mut task = sdk_task("private", json!({}));
    task["registry_auth"] = json!({"user": "deployer", "pass": "Registry-Pass-314159"});
    register(&teams.root, "team-a", sdk_config("private", json!([task]))).await;
    let (_, config) = teams
        .root
        .get("/api/namespaces/team-a/pipelines/private/configs/1")
        .await;
    assert!(
        !config.to_string().contains("Registry-Pass-314159"),
        "{config}"
    );
    for file in std::fs::read_dir(&teams.server.data_dir).unwrap() {
        let path = file.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows("Registry-Pass-314159".len())
                    .any(|window| window == b"Registry-Pass-314159"),
                "{} holds the password",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn attaching_needs_the_task_and_its_secrets_and_shows_them_masked() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let teams = Teams::new().await;
    let root = &teams.root;
    let (status, _) = root
        .post(
            "/api/namespaces/default/pipelines/sleepy/secrets",
            json!({"key": "token", "content": "attach-Secret-2718"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the pipeline is not there yet"
    );
    let mut sleeper = shell_task("sleeper", "sleep 60", json!({}));
    sleeper["variables"] = json!({"TOKEN": "pipeline_secret{{token}}"});
    // A sibling with the run's own token tries to attach to the sleeper.
    let spy_script = r#"
        sleep 1
        wget -q -O- --header "gofer-api-version: v0" --header "Authorization: Bearer $GOFER_TOKEN" \
          "$GOFER_API_BASE_URL/api/namespaces/default/pipelines/sleepy/runs/$GOFER_RUN_ID/tasks/sleeper/attach?command=env" \
          2>&1 | head -3
        echo spy-done
    "#;
    let mut spy = shell_task("spy", spy_script, json!({}));
    spy["inject_api_token"] = json!(true);
    register(
        root,
        "default",
        json!({"id": "sleepy", "name": "sleepy", "tasks": [sleeper, spy]}),
    )
    .await;
    let (status, body) = root
        .post(
            "/api/namespaces/default/pipelines/sleepy/secrets",
            json!({"key": "token", "content": "attach-Secret-2718"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    crate::support::ensure_test_image();
    let (status, body) = root
        .post_empty("/api/namespaces/default/pipelines/sleepy/configs/1")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let run_id = start_run(root, "sleepy", json!({})).await;
    wait_until_running(root, "sleepy", run_id, "sleeper").await;
    let attach =
        format!("/api/namespaces/default/pipelines/sleepy/runs/{run_id}/tasks/sleeper/attach");

    // Reading the task, or writing it without its secrets, is not enough.
    let tasks = [
        "namespaces:default",
        "pipelines:.*",
        "runs",
        "task_executions",
    ];
    let reader = teams
        .token_with("reader", json!([{"resources": tasks, "actions": ["read"]}]))
        .await;
    let writer = teams
        .token_with(
            "writer",
            json!([{"resources": tasks, "actions": ["read", "write"]}]),
        )
        .await;
    let (status, body) = reader.get(&attach).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = writer.get(&attach).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // The run's own token cannot attach to its sibling.
    let spy_log = crate::support::wait_for_log(root, "sleepy", run_id, "spy", "spy-done").await;
    assert!(spy_log.contains("403"), "{spy_log}");
    assert!(!spy_log.contains("TOKEN="), "{spy_log}");

    // An administrator may, and sees the secret masked.
    let mut request = format!("ws://{}{attach}?command=sh", teams.server.address)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("gofer-api-version", "v0".parse().unwrap());
    let bearer = format!("Bearer {}", root_secret(&teams).await);
    headers.insert("authorization", bearer.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::Text(
            "echo token=$TOKEN; echo end-$((40+2))-marker".into(),
        ))
        .await
        .unwrap();
    let mut output = String::new();
    while !output.contains("end-42-marker") {
        match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .unwrap_or_else(|_| panic!("no more output within 10 s: {output:?}"))
            .unwrap()
            .unwrap()
        {
            Message::Binary(bytes) => output.push_str(&String::from_utf8_lossy(&bytes)),
            Message::Close(frame) => panic!("closed: {frame:?}; {output:?}"),
            _ => {}
        }
    }
    assert!(output.contains("token=********"), "{output:?}");
    assert!(!output.contains("attach-Secret-2718"), "{output:?}");
    let _ = socket.send(Message::Text("exit".into())).await;
    crate::support::cancel_run(root, "sleepy", run_id).await;
}

/// The bootstrap token's secret (the websocket client needs it as a header).
async fn root_secret(teams: &Teams) -> String {
    let (secret, _) = new_token(&teams.root, "attacher", &["admin"], 0).await;
    secret
}

/// Operations whose answer is not about one team: they may succeed for anyone allowed, as long
/// as they show nothing of the other team (lists are filtered).
const NOT_TEAM_SCOPED: &[&str] = &[
    "list_namespaces",
    "stream_events",
    "list_plugins",
    "get_plugin",
    "list_extension_subscriptions",
    "list_extensions",
    "get_extension",
    "whoami",
    "get_system_metadata",
    "health",
    "ready",
];

/// Public operations (no token needed; nothing of a team in them).
const PUBLIC: &[&str] = &["external_event", "create_bootstrap_token"];

/// Every operation of the OpenAPI document, aimed at team B (and through encodings and path
/// traversal of its ids) with tokens scoped to team A and to the default namespace: none may
/// succeed, none may show team B's names or secret, and team B's data is unchanged afterwards.
/// (`make fuzz` runs this too, as its boundary pass.)
#[tokio::test]
async fn no_operation_crosses_the_team_boundary() {
    let teams = Teams::new().await;
    let root = &teams.root;
    // Team B has a run, a task, a subscription, a role and a token to aim at.
    let (status, body) = root
        .post_empty("/api/namespaces/team-b/pipelines/pipe-pb/configs/1")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = root
        .post(
            "/api/namespaces/team-b/pipelines/pipe-pb/runs",
            json!({"variables": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = root
        .post(
            "/api/namespaces/team-b/pipelines/pipe-pb/subscriptions",
            json!({"extension_id": "interval", "subscription_id": "sub-b", "settings": {"every": "1h"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = root
        .post(
            "/api/roles",
            json!({"id": "team-b-admin", "description": "", "permissions":
                   [{"resources": ["namespaces:team-b", "pipelines:.*", "secrets"], "actions": ["read"]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, team_b_token) = new_token(root, "team-b-user", &["team-b-admin"], 0).await;
    let (_, events) = root.get("/api/events?limit=1000").await;
    let team_b_event = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event.to_string().contains("team-b"))
        .expect("an event about team B")["id"]
        .as_str()
        .unwrap()
        .to_string();

    let team_a = teams
        .token_with(
            "team-a-all",
            json!([
                {"resources": ["namespaces:team-a", "pipelines:.*", "configs", "deployments", "runs",
                               "task_executions", "objects", "secrets", "subscriptions", "events"],
                 "actions": ["read", "write", "delete"]},
                {"resources": ["plugins"], "actions": ["read"]},
            ]),
        )
        .await;
    let default_user = teams.token_of(&["user"]).await;

    let document: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    let variants = |name: &str| -> Vec<String> {
        let plain = |value: &str| vec![value.to_string()];
        match name {
            "namespace_id" => vec![
                "team-b".into(),
                "team-%62".into(),
                "%74eam-b".into(),
                "team-a%2F..%2Fteam-b".into(),
                "..%2Fteam-b".into(),
            ],
            "pipeline_id" => vec![
                "pipe-pb".into(),
                "pipe-pa%2F..%2F..%2Fteam-b%2Fpipe-pb".into(),
            ],
            "extension_id" | "name" | "plugin" => vec![
                "interval".into(),
                "..%2Fpipeline%2Fteam-b%2Fpipe-pb".into(),
                "%2E%2E%2F%2E%2E%2F%2E%2E".into(),
            ],
            "run_id" | "version" | "deployment_id" => plain("1"),
            "task_id" => plain("build"),
            "subscription_id" => plain("sub-b"),
            "event_id" => plain(&team_b_event),
            "role_id" => plain("team-b-admin"),
            "id" => plain(&team_b_token),
            "key" => vec!["db_password".into(), "cfg.txt".into()],
            other => panic!("no values for the path parameter {{{other}}}: add them here"),
        }
    };
    let mut tried = 0;
    for (template, operations) in document["paths"].as_object().unwrap() {
        // Every combination of the values of the template's parameters.
        let mut paths = vec![String::new()];
        for segment in template.split('/').filter(|segment| !segment.is_empty()) {
            let choices = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => variants(name),
                None => vec![segment.to_string()],
            };
            paths = paths
                .iter()
                .flat_map(|path| choices.iter().map(move |choice| format!("{path}/{choice}")))
                .collect();
        }
        for (method, operation) in operations.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap();
            if PUBLIC.contains(&id) {
                continue;
            }
            for path in &paths {
                for (who, api) in [("team-a", &team_a), ("default user", &default_user)] {
                    let (status, text) = match method.as_str() {
                        "get" => api.download(path).await,
                        "delete" => {
                            let (status, body) = api.delete(path).await;
                            (status, body.to_string().into_bytes())
                        }
                        _ if path.contains("/objects/") => {
                            let (status, body) = api.upload(path, b"crossed").await;
                            (status, body.into_bytes())
                        }
                        "post" if id == "create_namespace" => {
                            let request = json!({"id": "team-b", "name": "x", "description": ""});
                            let (status, body) = api.post(path, request).await;
                            (status, body.to_string().into_bytes())
                        }
                        other => {
                            let method =
                                reqwest::Method::from_bytes(other.to_uppercase().as_bytes())
                                    .unwrap();
                            let (status, body) =
                                api.send(method, path, Some(json!({})), Some("v0")).await;
                            (status, body.to_string().into_bytes())
                        }
                    };
                    tried += 1;
                    let text = String::from_utf8_lossy(&text);
                    let what = format!(
                        "{who}: {} {path} ({id}) -> {status}: {text}",
                        method.to_uppercase()
                    );
                    assert!(!text.contains(TEAM_B_SECRET), "{what}");
                    if NOT_TEAM_SCOPED.contains(&id) {
                        if status.is_success() {
                            assert!(
                                !text.contains("team-b") && !text.contains("pipe-pb"),
                                "{what}"
                            );
                        }
                    } else {
                        assert!(!status.is_success(), "{what}");
                    }
                }
            }
        }
    }
    assert!(tried > 300, "{tried} requests");

    // Team B is as it was.
    let (status, body) = root
        .get("/api/namespaces/team-b/pipelines/pipe-pb/secrets/db_password?include_secret=true")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.to_string().contains(TEAM_B_SECRET), "{body}");
    assert_eq!(teams.team_b_object().await, b"original");
    for path in [
        "/api/namespaces/team-b",
        "/api/namespaces/team-b/pipelines/pipe-pb/configs/1",
        "/api/namespaces/team-b/pipelines/pipe-pb/subscriptions/interval/sub-b",
        "/api/roles/team-b-admin",
    ] {
        assert_eq!(root.get(path).await.0, StatusCode::OK, "{path}");
    }
    let (_, pipeline) = root.get("/api/namespaces/team-b/pipelines/pipe-pb").await;
    assert_eq!(pipeline["pipeline"]["state"], "active", "{pipeline}");
    let (_, objects) = root
        .get("/api/namespaces/team-b/pipelines/pipe-pb/objects")
        .await;
    assert_eq!(objects["objects"].as_array().unwrap().len(), 1, "{objects}");
}
