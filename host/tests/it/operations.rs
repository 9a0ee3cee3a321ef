//! Operating a server: health and readiness (with the real Docker engine going away and coming
//! back behind a socket the test controls), and metrics scraped by a real Prometheus server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Api, EngineProxy, SECRETS_KEY, TestServer, bootstrap, cancel_run, deploy, gofer_command,
    secured, shell_task, start_run, wait_for_run,
};

async fn ready(server: &TestServer) -> (StatusCode, Value) {
    // Probes send neither a token nor the version header.
    let response = reqwest::get(format!("{}/api/ready", server.base_url()))
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {body}"))
}

async fn wait_for_ready(server: &TestServer, want: StatusCode) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = ready(server).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "ready stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// Multi-threaded: the proxy must keep forwarding while the test waits for the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_follow_the_container_engine() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let mut proxy = Some(EngineProxy::start(&socket));
    let server =
        TestServer::start_with_env(&[("DOCKER_HOST", &format!("unix://{}", socket.display()))])
            .await;

    let health = reqwest::get(format!("{}/api/health", server.base_url()))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    let body = wait_for_ready(&server, StatusCode::OK).await;
    assert_eq!(body["ready"], true);
    assert_eq!(check(&body, "database")["ok"], true);
    assert_eq!(check(&body, "container_engine")["detail"], "reachable");
    assert!(
        check(&body, "plugins")["detail"]
            .as_str()
            .unwrap()
            .contains("loaded")
    );
    let status = server.cli(&["service", "status"]);
    assert!(status.status.success(), "{status:?}");
    assert!(String::from_utf8_lossy(&status.stdout).contains("✓ container_engine: reachable"));

    // The engine goes away: not ready, saying why; the process still answers.
    proxy.take();
    let body = wait_for_ready(&server, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["ready"], false);
    assert_eq!(check(&body, "container_engine")["ok"], false, "{body}");
    assert_eq!(check(&body, "database")["ok"], true);
    let status = server.cli(&["service", "status"]);
    assert_eq!(status.status.code(), Some(1));
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("✗ container_engine"), "{said}");
    assert!(String::from_utf8_lossy(&status.stderr).contains("is not ready"));
    let health = reqwest::get(format!("{}/api/health", server.base_url()))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // And comes back.
    let _proxy = EngineProxy::start(&socket);
    wait_for_ready(&server, StatusCode::OK).await;
}

/// A Prometheus server scraping `target` every second with `token`.
struct Prometheus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gofer\n    \
                 authorization:\n      credentials: {token}\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let binary = PathBuf::from("/usr/bin/prometheus");
        assert!(
            binary.exists(),
            "prometheus is not installed: run scripts/setup.sh"
        );
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            address,
            _dir: dir,
        }
    }

    /// The value of an instant PromQL query, once it has one.
    async fn query(&self, promql: &str) -> Option<f64> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}/api/v1/query", self.address),
            &[("query", promql)],
        )
        .ok()?;
        let response = reqwest::get(url).await.ok()?;
        let body: Value = response.json().await.ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_runs_the_test_started() {
    let token = "scrape-me-0123456789";
    let server = TestServer::start_with(
        &[
            ("GOFER_SECRETS__ENCRYPTION_KEY", SECRETS_KEY),
            ("GOFER_METRICS__SCRAPE_TOKEN", token),
        ],
        &["--auth"],
    )
    .await;
    let metrics = format!("{}/metrics", server.base_url());
    let http = reqwest::Client::new();
    // Without the scrape token (or with an API token's place taken by a wrong one): refused.
    assert_eq!(
        http.get(&metrics).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(&metrics)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let admin = bootstrap(&server).await;
    deploy(
        &admin,
        json!({"id": "counted", "name": "counted", "tasks": [
            shell_task("one", "true", json!({})),
            {"id": "shared", "plugin": "debug", "settings": {"exit_code": "0"},
             "depends_on": {"one": "Success"}, "variables": {}},
        ]}),
    )
    .await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(start_run(&admin, "counted", json!({})).await);
    }
    for run in runs {
        wait_for_run(&admin, "counted", run, 60).await;
    }
    let text = http
        .get(&metrics)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "gofer_runs_started_total{namespace=\"default\",pipeline=\"counted\"} 3",
        "gofer_runs_finished_total{namespace=\"default\",pipeline=\"counted\",status=\"successful\"} 3",
        "gofer_container_start_seconds_count",
        "gofer_task_duration_seconds_bucket",
        "gofer_run_queue_depth 0",
        "gofer_sqlite_write_seconds_count",
        "gofer_plugin_calls_total{plugin=\"debug\",kind=\"task\",call=\"run\",result=\"ok\"} 3",
        "gofer_http_requests_total{route=\"/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs\",method=\"POST\",status=\"201\"} 3",
    ] {
        assert!(text.contains(family), "no {family} in:\n{text}");
    }
    assert!(
        !text.contains("run_id=") && !text.contains("task_id="),
        "run and task ids are never labels"
    );

    let prometheus = Prometheus::start(&server.address.to_string(), token);
    let deadline = Instant::now() + Duration::from_secs(60);
    let query = "sum(gofer_runs_finished_total{pipeline=\"counted\"})";
    loop {
        if prometheus.query(query).await == Some(3.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered 3 for {query}: {:?}",
            prometheus.query(query).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let up = prometheus.query("up{job=\"gofer\"}").await;
    assert_eq!(up, Some(1.0), "the scrape target is not up");
}

/// What a user sees of a server, to compare two of them.
async fn state_of(api: &Api) -> Value {
    let pipeline = "/api/namespaces/default/pipelines/kept";
    let runs = api.get(&format!("{pipeline}/runs?limit=100")).await.1["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            json!([
                run["run_id"],
                run["status"],
                run["pipeline_config_version"],
                run["ended"]
            ])
        })
        .collect::<Vec<_>>();
    let secret = api
        .get(&format!("{pipeline}/secrets/token?include_secret=true"))
        .await
        .1;
    let object =
        String::from_utf8(api.download(&format!("{pipeline}/objects/report")).await.1).unwrap();
    json!({
        "namespaces": api.get("/api/namespaces").await.1["namespaces"].as_array().unwrap().len(),
        "pipelines": api.get("/api/namespaces/default/pipelines").await.1["pipelines"]
            .as_array().unwrap().iter().map(|p| p["pipeline_id"].clone()).collect::<Vec<_>>(),
        "configs": api.get(&format!("{pipeline}/configs")).await.1["configs"].as_array().unwrap().len(),
        "runs": runs,
        "secret": [secret["metadata"]["key"].clone(), secret["secret"].clone()],
        "object": object,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_runs_run_restores_everything() {
    let server = secured().await;
    let admin = bootstrap(&server).await;
    deploy(
        &admin,
        json!({"id": "kept", "name": "kept", "tasks": [shell_task("one", "echo kept", json!({}))]}),
    )
    .await;
    deploy(
        &admin,
        json!({"id": "busy", "name": "busy", "tasks": [shell_task("long", "sleep 60", json!({}))]}),
    )
    .await;
    for _ in 0..2 {
        let run = start_run(&admin, "kept", json!({})).await;
        wait_for_run(&admin, "kept", run, 60).await;
    }
    let pipeline = "/api/namespaces/default/pipelines/kept";
    let (status, body) = admin
        .post(
            &format!("{pipeline}/secrets"),
            json!({"key": "token", "content": "s3cret-value"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = admin
        .upload(&format!("{pipeline}/objects/report"), b"report-bytes")
        .await;
    assert!(status.is_success(), "{body}");
    // A run is running while the backup is taken.
    let busy = start_run(&admin, "busy", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin
        .get(&format!(
            "/api/namespaces/default/pipelines/busy/runs/{busy}"
        ))
        .await
        .1["run"]["state"]
        != "running"
    {
        assert!(Instant::now() < deadline, "the busy run never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = state_of(&admin).await;

    let place = tempfile::tempdir().unwrap();
    let backup = place.path().join("backup");
    let taken = gofer_command()
        .env("GOFER_SECRETS__ENCRYPTION_KEY", SECRETS_KEY)
        .args(["service", "backup"])
        .arg(&backup)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(taken.status.success(), "{taken:?}");
    let said = String::from_utf8_lossy(&taken.stdout);
    assert!(
        said.contains("secrets.key is the key that decrypts every secret"),
        "{said}"
    );
    let key = backup.join("secrets.key");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), SECRETS_KEY);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !backup.join("gofer.db-wal").exists(),
        "the copy is one self-contained file"
    );
    cancel_run(&admin, "busy", busy).await;

    // Restored into a new data directory, a server shows the same state.
    let restored_dir = place.path().join("restored");
    let restore = |dir: &Path, into: &Path| {
        gofer_command()
            .args(["service", "restore"])
            .arg(dir)
            .arg("--data-dir")
            .arg(into)
            .output()
            .unwrap()
    };
    let restored = restore(&backup, &restored_dir);
    assert!(restored.status.success(), "{restored:?}");
    assert!(
        !restored_dir.join("secrets.key").exists(),
        "the key stays out of the data"
    );
    // Bad input: restoring over data, or from a folder that is not a backup.
    let again = restore(&backup, &restored_dir);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "{again:?}"
    );
    let not_backup = restore(place.path(), &place.path().join("other"));
    assert!(
        String::from_utf8_lossy(&not_backup.stderr).contains("is not a Gofer backup"),
        "{not_backup:?}"
    );
    let no_data = gofer_command()
        .args(["service", "backup"])
        .arg(place.path().join("elsewhere"))
        .arg("--data-dir")
        .arg(place.path().join("nothing-here"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&no_data.stderr).contains("has no database"),
        "{no_data:?}"
    );

    let second = TestServer::start_on(
        restored_dir,
        &[("GOFER_SECRETS__ENCRYPTION_KEY", SECRETS_KEY)],
        &["--auth"],
    )
    .await;
    let admin_there = admin.at(&second.base_url());
    let after = state_of(&admin_there).await;
    assert_eq!(after, before);
    assert_eq!(after["secret"][1], "s3cret-value");
    assert_eq!(after["object"], "report-bytes");
}

/// Every file under `dir` whose contents are `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|bytes| bytes == needle) {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn retention_keeps_the_newest_runs_and_drops_old_events() {
    let server = TestServer::start_with_env(&[
        ("GOFER_RETENTION__RUNS_PER_PIPELINE", "3"),
        ("GOFER_RETENTION__EVENTS_MAX_AGE_SECS", "4"),
        ("GOFER_RETENTION__INTERVAL_SECS", "1"),
        ("GOFER_RETENTION__BATCH", "2"),
    ])
    .await;
    let api = server.client();
    let started = crate::support::now_ms();
    deploy(&api, json!({"id": "kept", "name": "kept", "tasks": [shell_task("one", "echo run output", json!({}))]})).await;
    let mut runs = Vec::new();
    for index in 0..8 {
        let run = start_run(&api, "kept", json!({})).await;
        wait_for_run(&api, "kept", run, 60).await;
        runs.push(run);
        if index == 0 {
            let (status, body) = api
                .upload(
                    &format!("/api/namespaces/default/pipelines/kept/runs/{run}/objects/report"),
                    b"first-run-object",
                )
                .await;
            assert!(status.is_success(), "{body}");
            assert_eq!(
                files_holding(&server.data_dir, b"first-run-object").len(),
                1
            );
        }
    }
    let logs = server.data_dir.join("logs/default/kept");

    let deadline = Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let listed: Vec<u64> = api
            .get("/api/namespaces/default/pipelines/kept/runs?limit=100")
            .await
            .1["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["run_id"].as_u64().unwrap())
            .collect();
        if listed.len() == 3 {
            break listed;
        }
        assert!(Instant::now() < deadline, "runs left: {listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(kept, runs[5..].to_vec(), "the newest three stay");
    // Their logs stay; the others' went with them, and so did the first run's object.
    let mut log_dirs: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    log_dirs.sort();
    let mut expected: Vec<String> = runs[5..].iter().map(u64::to_string).collect();
    expected.sort();
    assert_eq!(log_dirs, expected);
    let (status, _) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/kept/runs/{}",
            runs[0]
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files_holding(&server.data_dir, b"first-run-object").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the pruned run's object is still on disk"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Events older than four seconds go too.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = api.get("/api/events?limit=1").await.1["events"].clone();
        let oldest = events[0]["emitted"].as_u64().unwrap_or(u64::MAX);
        if oldest > started + 2000 {
            assert!(oldest >= crate::support::now_ms() - 4000 - 2000, "{events}");
            break;
        }
        assert!(Instant::now() < deadline, "old events stay: {events}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_run_timeline_says_what_happened_when() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "timed", "name": "timed", "tasks": [
            shell_task("first", "echo one", json!({})),
            shell_task("second", "echo two; exit 3", json!({"first": "Success"})),
        ]}),
    )
    .await;
    let run = start_run(&api, "timed", json!({})).await;
    wait_for_run(&api, "timed", run, 60).await;
    let (status, body) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/timed/runs/{run}/timeline"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let timeline = body["timeline"].as_array().unwrap();
    let position = |what: &str, task: Option<&str>| {
        timeline
            .iter()
            .position(|entry| {
                entry["what"] == what && task.is_none_or(|task| entry["task_id"] == task)
            })
            .unwrap_or_else(|| panic!("no {what} {task:?} in {body}"))
    };
    let order = [
        position("queued", None),
        position("dispatched", None),
        position("task_started", Some("first")),
        position("log_closed", Some("first")),
        position("task_ended", Some("first")),
        position("task_started", Some("second")),
        position("log_closed", Some("second")),
        position("task_ended", Some("second")),
        position("ended", None),
    ];
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "{order:?}: {body}"
    );
    position("task_created", Some("second"));
    let times: Vec<u64> = timeline
        .iter()
        .map(|entry| entry["at"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
    assert_eq!(
        timeline[position("task_ended", Some("second"))]["detail"],
        "failed, exit code 3"
    );
    assert_eq!(timeline[position("ended", None)]["detail"], "failed");

    // The image each container task ran, by its content-addressed id.
    let image_id = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            crate::support::TEST_IMAGE,
        ])
        .output()
        .unwrap();
    let image_id = String::from_utf8_lossy(&image_id.stdout).trim().to_string();
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let (_, task) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/timed/runs/{run}/tasks/second"
        ))
        .await;
    assert_eq!(
        task["task_execution"]["image_digest"],
        image_id.as_str(),
        "{task}"
    );
    let shown = server.cli(&["task", "get", "timed", &run.to_string(), "second"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains(&image_id));

    let cli = server.cli(&["run", "timeline", "timed", &run.to_string()]);
    assert!(cli.status.success(), "{cli:?}");
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(
        table.contains("dispatched") && table.contains("exit code 3"),
        "{table}"
    );
    let missing = server.cli(&["run", "timeline", "timed", "99"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}
