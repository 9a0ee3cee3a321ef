//! Test support: a real `gofer` server process on loopback with its own data directory, and a
//! small HTTP client that speaks the v0 conventions.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const GOFER: &str = env!("CARGO_BIN_EXE_gofer");

/// A free loopback port (released before the server binds it).
pub fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Names the container engine the test servers use (`scheduler.engine`), e.g. `swarm`.
pub const TEST_ENGINE_VARIABLE: &str = "TEST_SCHEDULER_ENGINE";

/// Names the object store the test servers use (`objects.engine`): `s3` puts every server's
/// objects in a bucket of the shared [`moto`] server, each under its own prefix.
pub const TEST_OBJECTS_VARIABLE: &str = "TEST_OBJECTS_ENGINE";

/// moto's S3-compatible server (`scripts/moto.sh`), started once per test process on a free
/// loopback port, from a thread that lives as long as the process: it dies with it
/// (`setpriv --pdeathsig`, which names the thread that started it).
pub struct Moto {
    pub endpoint: String,
    address: SocketAddr,
}

pub fn moto() -> &'static Moto {
    static MOTO: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
    MOTO.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let found = Command::new("bash")
            .arg(root.join("scripts/moto.sh"))
            .arg("--path")
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "scripts/moto.sh --path: {}",
            String::from_utf8_lossy(&found.stderr)
        );
        let executable = String::from_utf8(found.stdout).unwrap().trim().to_string();
        let address = free_address();
        let (started, child) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut process = Command::new("setpriv")
                .args(["--pdeathsig", "KILL", "--"])
                .arg(executable)
                .args(["-H", "127.0.0.1", "-p", &address.port().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            started.send(process.id()).unwrap();
            // moto serves until the test process ends; this thread waits with it.
            let _ = process.wait();
        });
        child.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(address).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on {address}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint: format!("http://{address}"),
            address,
        }
    })
}

impl Moto {
    /// Creates a bucket (moto takes unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.address).unwrap();
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.address
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// The keys in a bucket under a prefix (moto answers unsigned listings).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.get(&format!("/{bucket}?list-type=2&prefix={prefix}"))
            .await
            .split("<Key>")
            .skip(1)
            .map(|rest| rest.split("</Key>").next().unwrap().to_string())
            .collect()
    }

    /// Multipart uploads started in a bucket and neither completed nor aborted.
    pub async fn unfinished_uploads(&self, bucket: &str) -> usize {
        self.get(&format!("/{bucket}?uploads"))
            .await
            .matches("<Upload>")
            .count()
    }

    /// An unsigned GET (moto answers them); the body.
    async fn get(&self, path: &str) -> String {
        http_client()
            .get(format!("{}{path}", self.endpoint))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The settings of a server keeping its objects in `bucket` under `prefix`.
    pub fn settings(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        [
            ("GOFER_OBJECTS__ENGINE", "s3"),
            ("GOFER_OBJECTS__S3__ENDPOINT", &self.endpoint),
            ("GOFER_OBJECTS__S3__BUCKET", bucket),
            ("GOFER_OBJECTS__S3__PREFIX", prefix),
            ("GOFER_OBJECTS__S3__PATH_STYLE", "true"),
            ("GOFER_OBJECTS__S3__ACCESS_KEY_ID", "gofer-tests"),
            ("GOFER_OBJECTS__S3__SECRET_ACCESS_KEY", "gofer-tests"),
        ]
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .to_vec()
    }
}

/// Settings for [`TEST_OBJECTS_VARIABLE`]: the shared bucket, under a prefix of the data
/// directory's own (so a restarted server finds its objects again).
fn test_objects_settings(data_dir: &Path) -> Vec<(String, String)> {
    if std::env::var(TEST_OBJECTS_VARIABLE).as_deref() != Ok("s3") {
        return Vec::new();
    }
    static BUCKET: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUCKET.get_or_init(|| moto().create_bucket("gofer-tests"));
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    moto().settings("gofer-tests", &format!("server-{:016x}", hasher.finish()))
}

/// A `gofer` command with no GOFER_* variables inherited from the test environment.
pub fn gofer_command() -> Command {
    let mut command = Command::new(GOFER);
    for (key, _) in std::env::vars() {
        if key.starts_with("GOFER_") {
            command.env_remove(key);
        }
    }
    command.env("NO_COLOR", "1");
    // The second pass of the run tests (`make test-engines`) runs them on another engine.
    if let Ok(engine) = std::env::var(TEST_ENGINE_VARIABLE) {
        command.env("GOFER_SCHEDULER__ENGINE", engine);
    }
    // Compiled plugins are shared by every test server (the cache is keyed by content).
    command.env("GOFER_PLUGINS__CACHE_DIR", shared_plugin_cache());
    command
}

/// A running server; killed when dropped.
pub struct TestServer {
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    child: Option<Child>,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl TestServer {
    /// Starts a server on a fresh data directory.
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// Starts a server on a fresh data directory with extra environment variables.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::start_with(env, &[]).await
    }

    /// Starts a server on a fresh data directory with extra environment variables and arguments
    /// (kept for restarts).
    pub async fn start_with(env: &[(&str, &str)], args: &[&str]) -> Self {
        // Port 0: the server picks a free port itself and logs it, so that two servers starting
        // at once can never be handed the same one.
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), env, args).await
    }

    /// Starts a server on an existing data directory (a restored backup, say).
    pub async fn start_on(data_dir: PathBuf, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut server = Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            _temp: None,
            child: None,
            log_path: PathBuf::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
        };
        server.spawn(&[]).await;
        server
    }

    async fn start_at(address: SocketAddr, env: &[(&str, &str)], args: &[&str]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let mut server = Self {
            address,
            data_dir,
            _temp: Some(temp),
            child: None,
            log_path: PathBuf::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
        };
        server.spawn(&[]).await;
        server
    }

    /// Starts the server process again (same address and data directory), with extra arguments.
    pub async fn spawn(&mut self, extra_args: &[&str]) {
        self.log_path = self
            .data_dir
            .with_extension(format!("log-{}", Instant::now().elapsed().as_nanos()));
        std::fs::create_dir_all(self.data_dir.parent().unwrap()).unwrap();
        let log = std::fs::File::create(&self.log_path).unwrap();
        let child = gofer_command()
            .args([
                "service",
                "start",
                "--bind",
                &self.address.to_string(),
                "--data-dir",
            ])
            .arg(&self.data_dir)
            .args(extra_args)
            .args(&self.args)
            // Tasks that ignore SIGTERM are killed quickly in tests.
            .env("GOFER_RUNS__STOP_TIMEOUT_SECS", "3")
            .envs(test_objects_settings(&self.data_dir))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        if self.address.port() == 0 {
            self.address = self.wait_for_address().await;
        }
        self.wait_until_healthy().await;
    }

    /// The address a server started on port 0 logs when it listens.
    async fn wait_for_address(&mut self) -> SocketAddr {
        const LISTENING: &str = "gofer server listening address=";
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the server exited with {status} at start:\n{}", self.log());
            }
            let log = self.log();
            if let Some(at) = log.find(LISTENING) {
                let address = log[at + LISTENING.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default();
                return address
                    .parse()
                    .unwrap_or_else(|_| panic!("an address in the log: {address:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server did not say where it listens:\n{}", self.log());
    }

    async fn wait_until_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = self.client();
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the server exited with {status} at start:\n{}", self.log());
            }
            if client.get("/api/system/metadata").await.0 == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server did not become healthy:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn client(&self) -> Api {
        Api::new(&self.base_url())
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let mut child = self.child.take().expect("server running");
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the server did not stop within 20 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to `seconds`) for the server process to end by itself (a crash, say); its exit
    /// status.
    pub async fn wait_for_exit(&mut self, seconds: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server is still running:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sets an environment variable for the next starts.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.remove_env(key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Leaves an environment variable out of the next starts.
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(name, _)| name != key);
    }

    /// Stops the server and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        assert!(
            self.stop(),
            "the server did not exit cleanly:\n{}",
            self.log()
        );
        self.spawn(&[]).await;
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        gofer_command()
            .env("GOFER_API_BASE_URL", self.base_url())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A v0 API client: every request carries `gofer-api-version: v0`.
/// An HTTP client for tests (the crate's reqwest uses rustls with the provider Gofer installs).
pub fn http_client() -> reqwest::Client {
    gofer::tls::install_crypto_provider();
    reqwest::Client::new()
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
}

impl Api {
    pub fn new(base_url: &str) -> Self {
        Self {
            http: http_client(),
            base_url: base_url.to_string(),
            token: None,
        }
    }

    /// The same client (and token) for another server.
    pub fn at(&self, base_url: &str) -> Self {
        Self {
            http: self.http.clone(),
            base_url: base_url.to_string(),
            token: self.token.clone(),
        }
    }

    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            token: Some(token.to_string()),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        version: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(version) = version {
            request = request.header("gofer-api-version", version);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let body = if text.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::String(text))
                };
                (status, body)
            }
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Value::Null),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None, Some("v0")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body), Some("v0")).await
    }

    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::POST, path, None, Some("v0")).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PATCH, path, Some(body), Some("v0")).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, None, Some("v0")).await
    }

    /// POSTs raw bytes (an object upload); the status and the body as text.
    pub async fn upload(&self, path: &str, bytes: &[u8]) -> (StatusCode, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("gofer-api-version", "v0")
            .body(bytes.to_vec());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// GETs raw bytes (an object download); the status and the body.
    pub async fn download(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base_url))
            .header("gofer-api-version", "v0");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.bytes().await.unwrap_or_default().to_vec())
    }

    /// POSTs raw bytes as JSON content.
    pub async fn post_raw(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("gofer-api-version", "v0")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Asserts an error response: the status, and a JSON message containing `needle`.
#[track_caller]
pub fn assert_error(response: &(StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(
        response.0, status,
        "unexpected status; body: {}",
        response.1
    );
    let message = response.1["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {}", response.1));
    assert!(
        message.contains(needle),
        "message {message:?} does not contain {needle:?}"
    );
    assert!(
        response.1["request_id"].is_string(),
        "no request_id in {}",
        response.1
    );
}

/// A pipeline config as an SDK prints it.
pub fn sdk_config(id: &str, tasks: Value) -> Value {
    serde_json::json!({
        "id": id,
        "name": format!("{id} pipeline"),
        "description": null,
        "parallelism": 0,
        "tasks": tasks,
    })
}

/// A task as the Go SDK prints it.
pub fn sdk_task(id: &str, depends_on: Value) -> Value {
    serde_json::json!({
        "id": id,
        "description": null,
        "image": "busybox:latest",
        "registry_auth": null,
        "depends_on": depends_on,
        "variables": {"GREETING": "hello"},
        "entrypoint": null,
        "command": ["echo", "hi"],
        "inject_api_token": false,
        "always_pull_newest_image": false,
    })
}

/// Registers a config and returns its version.
pub async fn register(api: &Api, namespace: &str, config: Value) -> u64 {
    let id = config["id"].as_str().unwrap().to_string();
    let (status, body) = api
        .post(
            &format!("/api/namespaces/{namespace}/pipelines/{id}/configs"),
            serde_json::json!({ "config": config }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "register failed: {body}");
    body["pipeline"]["config"]["version"].as_u64().unwrap()
}

pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The local image the run tests use (built once from Debian's static busybox; no registry).
pub const TEST_IMAGE: &str = "gofer-busybox:local";

pub fn ensure_test_image() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/build-busybox-image.sh"
        );
        let status = Command::new("bash").arg(script).status().unwrap();
        assert!(
            status.success(),
            "could not build {TEST_IMAGE}; is Docker running? (make setup)"
        );
    });
}

/// A busybox task running `script` with `sh -c`.
pub fn shell_task(id: &str, script: &str, depends_on: Value) -> Value {
    serde_json::json!({
        "id": id,
        "image": TEST_IMAGE,
        "depends_on": depends_on,
        "variables": {},
        "command": ["sh", "-c", script],
    })
}

/// Registers and deploys a config; returns its version.
pub async fn deploy(api: &Api, config: Value) -> u64 {
    ensure_test_image();
    let id = config["id"].as_str().unwrap().to_string();
    let version = register(api, "default", config).await;
    let (status, body) = api
        .post_empty(&format!(
            "/api/namespaces/default/pipelines/{id}/configs/{version}"
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "deploy failed: {body}");
    version
}

/// Starts a run and returns its id.
pub async fn start_run(api: &Api, pipeline: &str, variables: Value) -> u64 {
    let (status, body) = api
        .post(
            &format!("/api/namespaces/default/pipelines/{pipeline}/runs"),
            serde_json::json!({ "variables": variables }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "start failed: {body}");
    assert_eq!(body["run"]["state"], "pending");
    body["run"]["run_id"].as_u64().unwrap()
}

/// Waits (up to `seconds`) until the run is complete; returns it.
pub async fn wait_for_run(api: &Api, pipeline: &str, run_id: u64, seconds: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let (_, body) = api
            .get(&format!(
                "/api/namespaces/default/pipelines/{pipeline}/runs/{run_id}"
            ))
            .await;
        if body["run"]["state"] == "complete" {
            return body["run"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} of {pipeline} did not complete in {seconds}s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run's task executions by task id.
pub async fn tasks_of(
    api: &Api,
    pipeline: &str,
    run_id: u64,
) -> std::collections::BTreeMap<String, Value> {
    let (_, body) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/runs/{run_id}/tasks"
        ))
        .await;
    body["task_executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| (task["task_id"].as_str().unwrap().to_string(), task.clone()))
        .collect()
}

/// Names of the containers Gofer made for a pipeline (running or not).
pub fn containers_of(pipeline: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=dev.gofer.pipeline={pipeline}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl TestServer {
    /// Kills the server with SIGKILL: no shutdown, nothing flushed.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("server running");
        signal(child.id(), "KILL");
        child.wait().unwrap();
    }
}

/// A plugin cache shared by the test servers of this build.
pub fn shared_plugin_cache() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gofer-test-plugin-cache-{}",
        env!("CARGO_PKG_VERSION")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits (up to 60 s) until a task of a run is running.
pub async fn wait_until_running(api: &Api, pipeline: &str, run_id: u64, task: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tasks_of(api, pipeline, run_id)
        .await
        .get(task)
        .map(|t| t["state"] != "running")
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "task {task} of run {run_id} of {pipeline} never started running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A task's log as stored so far (default namespace).
pub async fn task_log(api: &Api, pipeline: &str, run_id: u64, task: &str) -> String {
    let (_, log) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/runs/{run_id}/tasks/{task}/logs"
        ))
        .await;
    log.as_str().unwrap_or_default().to_string()
}

/// Waits (up to 15 s) until a task's log contains `needle`; returns the log.
pub async fn wait_for_log(
    api: &Api,
    pipeline: &str,
    run_id: u64,
    task: &str,
    needle: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = task_log(api, pipeline, run_id, task).await;
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never showed in the log of {task}: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `gofer service start` on `data_dir` with `args` and `env`, expecting it to fail; returns
/// its stderr.
pub fn start_fails_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = gofer_command()
        .args(["service", "start", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "start-up should have failed ({args:?}, {env:?})"
    );
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// [`start_fails_in`] on a fresh data directory.
pub fn start_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    start_fails_in(dir.path(), args, env)
}

/// Starts the server with a config file holding `config` and expects it to refuse; returns what
/// it printed on stderr.
pub fn refused_start(dir: &Path, config: &str) -> String {
    let file = write_file(dir, "refused.toml", config);
    start_fails_in(
        &dir.join("refused-data"),
        &["--config", file.to_str().unwrap()],
        &[],
    )
}

/// Cancels a run (default namespace) and waits (up to 20 s) until it has ended; returns it.
pub async fn cancel_run(api: &Api, pipeline: &str, run_id: u64) -> Value {
    let (status, body) = api
        .delete(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/runs/{run_id}"
        ))
        .await;
    assert!(status.is_success(), "cancelling run {run_id}: {body}");
    wait_for_run(api, pipeline, run_id, 20).await
}

/// The secrets key of servers with authentication on (development mode refuses no key; these
/// servers are not in development mode).
pub const SECRETS_KEY: &str = "0123456789abcdef0123456789abcdef";

/// A server with authentication on (through `--auth`).
pub async fn secured() -> TestServer {
    TestServer::start_with(
        &[("GOFER_SECRETS__ENCRYPTION_KEY", SECRETS_KEY)],
        &["--auth"],
    )
    .await
}

/// The bootstrap token of a secured server, as a client.
pub async fn bootstrap(server: &TestServer) -> Api {
    let anonymous = server.client();
    let (status, body) = anonymous.post_empty("/api/tokens/bootstrap").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    anonymous.with_token(body["secret"].as_str().unwrap())
}

/// A new token (secret, id) for `user` with `roles`; `expires` in seconds, 0 for never.
pub async fn new_token(admin: &Api, user: &str, roles: &[&str], expires: u64) -> (String, String) {
    let (status, body) = admin
        .post(
            "/api/tokens",
            serde_json::json!({"user": user, "roles": roles, "expires": expires}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!body.to_string().contains("hash"), "{body}");
    (
        body["secret"].as_str().unwrap().to_string(),
        body["token_details"]["id"].as_str().unwrap().to_string(),
    )
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A unix socket that forwards every connection to the real Docker engine's, until dropped
/// (which cuts the connections it carries too): the engine "stops" and "comes back" for one
/// server without disturbing the other tests.
pub struct EngineProxy {
    _connections: tokio::task::JoinSet<()>,
}

impl EngineProxy {
    pub fn start(path: &std::path::Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let mut connections = tokio::task::JoinSet::new();
        connections.spawn(async move {
            let mut carried = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                carried.spawn(async move {
                    if let Ok(mut engine) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        Self {
            _connections: connections,
        }
    }
}
