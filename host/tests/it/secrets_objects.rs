//! Secrets and objects through a real server: the v0 endpoints, interpolation into real task
//! containers, masking in logs, nothing in plain text on disk, object limits and expiry.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Api, TestServer, assert_error, deploy, shell_task, start_run, tasks_of, wait_for_run,
};

const TOKEN: &str = "s3cr3t-Value-8472";
const SHARED: &str = "gl0bal-Shared-1935";

fn secrets(pipeline: &str) -> String {
    format!("/api/namespaces/default/pipelines/{pipeline}/secrets")
}

fn objects(pipeline: &str) -> String {
    format!("/api/namespaces/default/pipelines/{pipeline}/objects")
}

async fn log_of(api: &Api, pipeline: &str, run_id: u64, task: &str) -> String {
    let (_, log) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/runs/{run_id}/tasks/{task}/logs"
        ))
        .await;
    log.as_str().unwrap_or_default().to_string()
}

/// Every file under `dir` (databases, their WAL files, logs), as bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            files.push((path.display().to_string(), bytes));
        }
    }
    files
}

fn sha256_hex(value: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(value.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn task_with_env(id: &str, script: &str, variables: Value) -> Value {
    let mut task = shell_task(id, script, json!({}));
    task["variables"] = variables;
    task
}

#[tokio::test]
async fn secrets_reach_tasks_masked_and_never_in_plain_text() {
    let server = TestServer::start().await;
    let api = server.client();
    // The task checks the values by their SHA-256, so the config itself holds no secret.
    let script = format!(
        "echo \"token is $TOKEN\"; echo \"shared is $SHARED\"; \
         [ \"$(printf %s \"$TOKEN\" | sha256sum | cut -c1-64)\" = {} ] && \
         [ \"$(printf %s \"$SHARED\" | sha256sum | cut -c1-64)\" = {} ] && echo both-matched",
        sha256_hex(TOKEN),
        sha256_hex(SHARED)
    );
    deploy(
        &api,
        json!({"id": "vault", "name": "vault", "tasks": [task_with_env(
            "use",
            &script,
            json!({"TOKEN": "pipeline_secret{{api_token}}", "SHARED": "global_secret{{shared}}"}),
        )]}),
    )
    .await;

    // Bad input is refused with the reason.
    assert_error(
        &api.post(
            &secrets("vault"),
            json!({"key": "bad key!", "content": "x"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid secret key 'bad key!'",
    );
    assert_error(
        &api.post(
            "/api/secrets/global",
            json!({"key": "k", "content": "x", "namespaces": ["("]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "namespaces: '(' is not a regex",
    );
    assert_error(
        &api.post(&secrets("ghost"), json!({"key": "k", "content": "x"}))
            .await,
        StatusCode::NOT_FOUND,
        "pipeline",
    );

    // v0's crash: overwriting with force works; without force it is a 409.
    let (status, body) = api
        .post(
            &secrets("vault"),
            json!({"key": "api_token", "content": "first", "force": false}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["secret"]["key"], "api_token");
    assert_eq!(body["secret"]["namespaces"], json!(["default"]));
    assert!(!body.to_string().contains("first"), "{body}");
    assert_error(
        &api.post(
            &secrets("vault"),
            json!({"key": "api_token", "content": TOKEN}),
        )
        .await,
        StatusCode::CONFLICT,
        "set \"force\": true",
    );
    let (status, _) = api
        .post(
            &secrets("vault"),
            json!({"key": "api_token", "content": TOKEN, "force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api
        .post(
            "/api/secrets/global",
            json!({"key": "shared", "content": SHARED, "namespaces": ["def.*"], "force": false}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Values come back only from the explicit get.
    let (_, listed) = api.get(&secrets("vault")).await;
    assert_eq!(listed["secrets"][0]["key"], "api_token");
    let (_, plain) = api.get(&format!("{}/api_token", secrets("vault"))).await;
    assert_eq!(plain["secret"], Value::Null);
    let (_, revealed) = api
        .get(&format!(
            "{}/api_token?include_secret=true",
            secrets("vault")
        ))
        .await;
    assert_eq!(revealed["secret"], TOKEN);
    let (_, global) = api
        .get("/api/secrets/global/shared?include_secret=true")
        .await;
    assert_eq!(global["secret"], SHARED);
    assert_eq!(global["metadata"]["namespaces"], json!(["def.*"]));

    let run_id = start_run(&api, "vault", json!({})).await;
    let run = wait_for_run(&api, "vault", run_id, 60).await;
    assert_eq!(run["status"], "successful", "{run}");
    let log = log_of(&api, "vault", run_id, "use").await;
    assert!(
        log.contains("both-matched"),
        "the task got the values: {log}"
    );
    assert!(log.contains("token is ********"), "{log}");
    assert!(log.contains("shared is ********"), "{log}");
    let tasks = tasks_of(&api, "vault", run_id).await;
    let shown = serde_json::to_string(&tasks).unwrap();
    assert!(shown.contains("pipeline_secret{{api_token}}"), "{shown}");
    for value in [TOKEN, SHARED] {
        assert!(!log.contains(value), "{value} in the log: {log}");
        assert!(!shown.contains(value), "{value} in the API: {shown}");
        for (file, bytes) in files_under(&server.data_dir) {
            assert!(
                !bytes
                    .windows(value.len())
                    .any(|window| window == value.as_bytes()),
                "{value} is in plain text in {file}"
            );
        }
    }

    // A missing secret, or a global one limited to other namespaces, fails the task by name.
    deploy(
        &api,
        json!({"id": "lacking", "name": "lacking", "tasks": [
            task_with_env("missing", "true", json!({"X": "pipeline_secret{{nope}}"})),
            task_with_env("elsewhere", "true", json!({"Y": "global_secret{{prod-only}}"})),
        ]}),
    )
    .await;
    let (status, _) = api
        .post(
            "/api/secrets/global",
            json!({"key": "prod-only", "content": "p", "namespaces": ["prod-.*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let run_id = start_run(&api, "lacking", json!({})).await;
    wait_for_run(&api, "lacking", run_id, 60).await;
    let tasks = tasks_of(&api, "lacking", run_id).await;
    for (task, reason) in [
        (
            "missing",
            "variable X: pipeline secret 'nope' does not exist in pipeline 'lacking'",
        ),
        (
            "elsewhere",
            "variable Y: global secret 'prod-only' does not exist or may not be used in namespace 'default'",
        ),
    ] {
        assert_eq!(tasks[task]["status"], "failed", "{tasks:?}");
        assert_eq!(
            tasks[task]["status_reason"]["reason"],
            "failed_precondition"
        );
        let description = tasks[task]["status_reason"]["description"]
            .as_str()
            .unwrap();
        assert!(description.contains(reason), "{description}");
        // Nothing about whom a global secret is for.
        assert!(!description.contains("prod-.*"), "{description}");
    }

    // Deleting removes the value too.
    let (status, _) = api.delete(&format!("{}/api_token", secrets("vault"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get(&format!("{}/api_token", secrets("vault"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tasks_pass_a_file_through_run_objects() {
    let server = TestServer::start().await;
    let api = server.client();
    let upload = "printf 'line one\\nline two\\n' > /report.txt && \
        wget -q -O- --header 'gofer-api-version: v0' --post-file /report.txt \
        \"$GOFER_API_BASE_URL/api/namespaces/$GOFER_NAMESPACE_ID/pipelines/$GOFER_PIPELINE_ID/runs/$GOFER_RUN_ID/objects/report\"";
    let mut read = task_with_env(
        "read",
        "echo \"got: $REPORT\"",
        json!({"REPORT": "run_object{{report}}"}),
    );
    read["depends_on"] = json!({"write": "Success"});
    deploy(
        &api,
        json!({"id": "relay", "name": "relay", "tasks": [
            shell_task("write", upload, json!({})),
            read,
        ]}),
    )
    .await;
    let run_id = start_run(&api, "relay", json!({})).await;
    let run = wait_for_run(&api, "relay", run_id, 60).await;
    assert_eq!(
        run["status"],
        "successful",
        "{run}\n{}",
        log_of(&api, "relay", run_id, "write").await
    );
    let log = log_of(&api, "relay", run_id, "read").await;
    assert!(log.contains("got: line one\nline two"), "{log}");
    let (_, listed) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/relay/runs/{run_id}/objects"
        ))
        .await;
    assert_eq!(listed["objects"][0]["key"], "report", "{listed}");
}

#[tokio::test]
async fn pipeline_objects_persist_within_their_limit_and_run_objects_expire() {
    let server = TestServer::start_with_env(&[
        ("GOFER_OBJECTS__PIPELINE_OBJECT_LIMIT", "2"),
        ("GOFER_OBJECTS__RUN_OBJECT_EXPIRY", "1"),
        ("GOFER_OBJECTS__MAX_OBJECT_SIZE_MB", "4"),
    ])
    .await;
    let api = server.client();
    let http = crate::support::http_client();
    let put = |path: String, body: Vec<u8>| {
        let request = http
            .post(format!("{}{path}", server.base_url()))
            .header("gofer-api-version", "v0")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.text().await.unwrap())
        }
    };
    let download = |path: String| {
        let request = http
            .get(format!("{}{path}", server.base_url()))
            .header("gofer-api-version", "v0");
        async move { request.send().await.unwrap() }
    };
    deploy(
        &api,
        json!({"id": "keeper", "name": "keeper", "tasks": [task_with_env(
        "show", "echo \"config: $CONFIG\"", json!({"CONFIG": "pipeline_object{{settings}}"}))]}),
    )
    .await;

    // A 3 MiB object streams in and out unchanged.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (status, body) = put(format!("{}/settings", objects("keeper")), big.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let downloaded = download(format!("{}/settings", objects("keeper"))).await;
    assert_eq!(
        downloaded.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(downloaded.bytes().await.unwrap().to_vec(), big);
    // Too large: 413 (or, when the server answers before the client finished sending, a closed
    // connection), and the stored object is untouched.
    // Its own connection: the server closes it after refusing, and it must not go back to the
    // pool the other requests use.
    let oversized = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .post(format!(
            "{}{}/settings?force=true",
            server.base_url(),
            objects("keeper")
        ))
        .header("gofer-api-version", "v0")
        .body(vec![0u8; 5 * 1024 * 1024])
        .send()
        .await;
    if let Ok(response) = oversized {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("max_object_size_mb")
        );
    }
    let unchanged = download(format!("{}/settings", objects("keeper"))).await;
    assert_eq!(unchanged.bytes().await.unwrap().len(), big.len());
    let (status, body) = put(format!("{}/settings", objects("keeper")), b"x".to_vec()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("?force=true"), "{body}");
    let (status, _) = put(
        format!("{}/settings?force=true", objects("keeper")),
        b"mode=fast".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // The pipeline object is there for every run.
    for _ in 0..2 {
        let run_id = start_run(&api, "keeper", json!({})).await;
        let run = wait_for_run(&api, "keeper", run_id, 60).await;
        assert_eq!(run["status"], "successful", "{run}");
        assert!(
            log_of(&api, "keeper", run_id, "show")
                .await
                .contains("config: mode=fast")
        );
    }

    // At most 2 pipeline objects: the oldest goes.
    for key in ["second", "third"] {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let (status, _) = put(
            format!("{}/{key}", objects("keeper")),
            key.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, listed) = api.get(&objects("keeper")).await;
    let keys: Vec<&str> = listed["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|object| object["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["second", "third"]);
    let (status, _) = api.get(&format!("{}/settings", objects("keeper"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Run objects expire once a newer run has finished (run_object_expiry = 1).
    let run_objects =
        |run: u64| format!("/api/namespaces/default/pipelines/keeper/runs/{run}/objects");
    let (status, _) = put(format!("{}/note", run_objects(2)), b"from run 2".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = put(format!("{}/note", run_objects(99)), b"x".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no such run");
    let (_, listed) = api.get(&run_objects(2)).await;
    assert_eq!(listed["objects"].as_array().unwrap().len(), 1);
    let run_id = start_run(&api, "keeper", json!({})).await;
    wait_for_run(&api, "keeper", run_id, 60).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, listed) = api.get(&run_objects(2)).await;
        if listed["objects"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run 2's object did not expire: {listed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _) = api.get(&format!("{}/note", run_objects(2))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Plugin objects: a key-value store per plugin.
    let (status, _) = put(
        "/api/extensions/interval/objects/state".into(),
        b"42".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, listed) = api.get("/api/extensions/interval/objects").await;
    assert_eq!(listed["objects"][0]["key"], "state");
}

#[tokio::test]
async fn the_cli_manages_secrets_and_objects() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "clied", "name": "clied", "tasks": [shell_task("only", "true", json!({}))]}),
    )
    .await;
    let gofer = |args: &[&str], stdin: Option<&[u8]>| {
        let mut command = crate::support::gofer_command();
        command
            .env("GOFER_API_BASE_URL", server.base_url())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            if let Some(bytes) = stdin {
                input.write_all(bytes).unwrap();
            }
        }
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    // The value comes from stdin, so it is not in the command line.
    let (ok, stdout, stderr) = gofer(
        &["secret", "pipeline", "put", "clied", "db_password"],
        Some(b"from-stdin-771\n"),
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Stored secret 'db_password'"), "{stdout}");
    let (ok, stdout, _) = gofer(&["secret", "pipeline", "list", "clied"], None);
    assert!(
        ok && stdout.contains("db_password") && !stdout.contains("from-stdin"),
        "{stdout}"
    );
    let (_, hidden, _) = gofer(&["secret", "pipeline", "get", "clied", "db_password"], None);
    assert!(!hidden.contains("from-stdin-771"), "{hidden}");
    let (_, shown, _) = gofer(
        &[
            "secret",
            "pipeline",
            "get",
            "clied",
            "db_password",
            "--show",
        ],
        None,
    );
    assert!(shown.contains("from-stdin-771"), "{shown}");
    let (ok, _, stderr) = gofer(
        &[
            "secret",
            "pipeline",
            "put",
            "clied",
            "db_password",
            "--value",
            "x",
        ],
        None,
    );
    assert!(
        !ok && stderr.contains("--force") || stderr.contains("force"),
        "{stderr}"
    );
    let (ok, _, stderr) = gofer(
        &[
            "secret", "global", "put", "registry", "--value", "r", "--allow", "default",
        ],
        None,
    );
    assert!(ok, "{stderr}");
    let (_, stdout, _) = gofer(&["secret", "global", "list"], None);
    assert!(
        stdout.contains("registry") && stdout.contains("default"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("in.bin");
    std::fs::write(&source, b"object bytes \x00\x01\x02").unwrap();
    let (ok, _, stderr) = gofer(
        &[
            "object",
            "pipeline",
            "put",
            "clied",
            "blob",
            source.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = gofer(
        &["object", "run", "put", "clied", "1", "blob", "-"],
        Some(b"x"),
    );
    assert!(!ok && stderr.contains("run 1"), "no run 1 yet: {stderr}");
    let target = dir.path().join("out.bin");
    let (ok, _, stderr) = gofer(
        &[
            "object",
            "pipeline",
            "get",
            "clied",
            "blob",
            "--output-file",
            target.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"object bytes \x00\x01\x02"
    );
    let (_, stdout, _) = gofer(&["object", "pipeline", "list", "clied"], None);
    assert!(stdout.contains("blob"), "{stdout}");
    let (ok, _, _) = gofer(&["object", "pipeline", "delete", "clied", "blob"], None);
    assert!(ok);
    let (ok, _, stderr) = gofer(&["object", "pipeline", "get", "clied", "blob"], None);
    assert!(!ok && stderr.contains("object 'blob'"), "{stderr}");

    // A plugin's own objects, keys with spaces and slashes included.
    let (ok, _, stderr) = gofer(
        &["object", "plugin", "put", "interval", "a b/c", "-"],
        Some(b"kept"),
    );
    assert!(ok, "{stderr}");
    let (_, stdout, _) = gofer(&["object", "plugin", "list", "interval"], None);
    assert!(stdout.contains("a b/c"), "{stdout}");
    let (ok, stdout, stderr) = gofer(&["object", "plugin", "get", "interval", "a b/c"], None);
    assert!(ok && stdout == "kept", "{stdout} {stderr}");
    let (ok, stdout, _) = gofer(&["object", "plugin", "delete", "interval", "a b/c"], None);
    assert!(ok && stdout.contains("of plugin 'interval'"), "{stdout}");
    let (_, stdout, _) = gofer(&["object", "plugin", "list", "interval"], None);
    assert!(!stdout.contains("a b/c"), "{stdout}");
}
