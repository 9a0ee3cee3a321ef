//! gRPC plugins: the example Go plugins (sdk-go/plugin/examples, built by
//! `scripts/go-plugins.sh` with the Debian Go toolchain) launched, supervised and called by a real
//! server, and plugins that misbehave at start.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    Api, TestServer, assert_error, deploy, signal, tasks_of, wait_for_run, write_file,
};

/// The example Go plugins, built once per test process into `target/plugins-go`.
fn go_plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = root.join("target/plugins-go");
        let output = std::process::Command::new("bash")
            .arg(root.join("scripts/go-plugins.sh"))
            .arg("build")
            .arg(&out)
            .output()
            .expect("could not run scripts/go-plugins.sh");
        assert!(
            output.status.success(),
            "building the Go example plugins failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    })
}

/// A plugins folder holding manifests for the named example plugins.
pub fn folder_with(server_dir: &Path, plugins: &[&str]) -> PathBuf {
    let folder = server_dir.join("grpc-plugins");
    std::fs::create_dir_all(&folder).unwrap();
    for plugin in plugins {
        let command = go_plugins().join(plugin);
        write_file(
            &folder,
            &format!("{plugin}.toml"),
            &format!("command = {:?}\n", command.display().to_string()),
        );
    }
    folder
}

/// Starts a server whose plugins folder has the named example plugins.
async fn server_with(plugins: &[&str], env: &[(&str, &str)]) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let folder = folder_with(dir.path(), plugins);
    let folder = folder.display().to_string();
    let mut env = env.to_vec();
    env.push(("GOFER_PLUGINS__DIR", &folder));
    (TestServer::start_with_env(&env).await, dir)
}

async fn plugin(api: &Api, name: &str) -> Value {
    api.get(&format!("/api/plugins/{name}")).await.1["plugin"].clone()
}

/// Waits (up to `seconds`) until `check` holds for a plugin.
async fn wait_for_plugin(
    api: &Api,
    name: &str,
    seconds: u64,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let plugin = plugin(api, name).await;
        if check(&plugin) {
            return plugin;
        }
        assert!(
            Instant::now() < deadline,
            "plugin {name} never got there: {plugin}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn runs(api: &Api, pipeline: &str) -> Vec<Value> {
    let (_, body) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/runs?limit=1000"
        ))
        .await;
    body["runs"].as_array().cloned().unwrap_or_default()
}

/// Waits (up to `seconds`) until the pipeline has at least `count` runs.
async fn wait_for_runs(api: &Api, pipeline: &str, count: usize, seconds: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let runs = runs(api, pipeline).await;
        if runs.len() >= count {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "{pipeline} has {} runs after {seconds} s, expected {count}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn process_alive(pid: u64) -> bool {
    // A zombie is dead for our purposes (its parent has not reaped it yet).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

fn ticking_pipeline(id: &str) -> Value {
    json!({"id": id, "name": id,
    "triggers": [{"plugin": "go-ticker", "id": "every-second", "settings": {"every": "1s"}}],
    "tasks": [
        {"id": "echo", "plugin": "go-echo", "settings": {"greeting": "hello from go"},
         "depends_on": {}, "variables": {"MY_VAR": "from-config"}},
        {"id": "after", "plugin": "debug", "depends_on": {"echo": "Success"}, "variables": {}}
    ]})
}

#[tokio::test]
async fn go_trigger_starts_runs_and_go_task_runs_in_the_dag() {
    let (server, _dir) = server_with(&["go-ticker", "go-echo"], &[]).await;
    let api = server.client();
    for name in ["go-ticker", "go-echo"] {
        let plugin = plugin(&api, name).await;
        assert_eq!(plugin["runtime"], "grpc", "{plugin}");
        assert_eq!(plugin["status"], "loaded", "{plugin}");
        assert_eq!(plugin["source"], "folder", "{plugin}");
        assert_eq!(plugin["restarts"], 0, "{plugin}");
        assert!(
            plugin["pid"].as_u64().is_some_and(process_alive),
            "{plugin}"
        );
    }
    assert_eq!(plugin(&api, "go-ticker").await["kind"], "trigger");
    assert_eq!(plugin(&api, "go-echo").await["kind"], "task");
    assert_eq!(
        plugin(&api, "go-ticker").await["settings"][0]["key"],
        "every"
    );

    deploy(&api, ticking_pipeline("ticking")).await;
    // A refused setting comes back as the plugin's own message.
    let refused = api
        .post(
            "/api/namespaces/default/pipelines/ticking/subscriptions",
            json!({"extension_id": "go-ticker", "subscription_id": "bad", "settings": {"every": "soon"}}),
        )
        .await;
    assert_error(
        &refused,
        reqwest::StatusCode::BAD_REQUEST,
        "the setting 'every' is not a duration: \"soon\"",
    );
    let runs = wait_for_runs(&api, "ticking", 2, 15).await;
    let first = runs
        .iter()
        .map(|run| run["run_id"].as_u64().unwrap())
        .min()
        .unwrap();
    let run = wait_for_run(&api, "ticking", first, 30).await;
    assert_eq!(run["status"], "successful", "{run}");
    assert!(
        run["initiator"]["user"]
            .as_str()
            .unwrap()
            .contains("go-ticker"),
        "{run}"
    );
    let tasks = tasks_of(&api, "ticking", first).await;
    assert_eq!(tasks["echo"]["exit_code"], 0, "{tasks:?}");
    assert_eq!(tasks["after"]["state"], "complete", "{tasks:?}");
    let (_, log) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/ticking/runs/{first}/tasks/echo/logs"
        ))
        .await;
    let log = log.as_str().unwrap_or_default();
    for expected in [
        "setting greeting=hello from go",
        "env MY_VAR=from-config",
        "env GOFER_TASK_ID=echo",
        "env GOFER_TRIGGER_TICK=",
        "go-echo done, exit code 0",
    ] {
        assert!(
            log.contains(expected),
            "{expected:?} is missing from the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn go_task_exit_codes_errors_and_deadlines() {
    let (server, _dir) = server_with(&["go-echo"], &[]).await;
    let api = server.client();
    deploy(&api, json!({"id": "outcomes", "name": "outcomes", "tasks": [
        {"id": "exit-3", "plugin": "go-echo", "settings": {"exit_code": "3"}, "depends_on": {}, "variables": {}},
        {"id": "refused", "plugin": "go-echo", "settings": {"exit_code": "many"}, "depends_on": {}, "variables": {}},
        {"id": "slow", "plugin": "go-echo", "settings": {"sleep": "60s"}, "timeout": "1s", "depends_on": {}, "variables": {}}
    ]}))
    .await;
    let run_id = crate::support::start_run(&api, "outcomes", json!({})).await;
    let run = wait_for_run(&api, "outcomes", run_id, 30).await;
    assert_eq!(run["status"], "failed", "{run}");
    let tasks = tasks_of(&api, "outcomes", run_id).await;
    assert_eq!(tasks["exit-3"]["exit_code"], 3, "{tasks:?}");
    assert_eq!(tasks["exit-3"]["status"], "failed", "{tasks:?}");
    let refused = tasks["refused"]["status_reason"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        refused.contains("'exit_code' must be a number"),
        "{tasks:?}"
    );
    assert_eq!(
        tasks["slow"]["status_reason"]["reason"], "timeout",
        "{tasks:?}"
    );
    // The plugin is still there for the next run.
    assert_eq!(plugin(&api, "go-echo").await["status"], "loaded");
}

#[tokio::test]
async fn a_killed_plugin_is_restarted_and_keeps_firing() {
    let (server, _dir) = server_with(&["go-ticker", "go-echo"], &[]).await;
    let api = server.client();
    deploy(&api, ticking_pipeline("restarts")).await;
    wait_for_runs(&api, "restarts", 1, 15).await;
    let before = plugin(&api, "go-ticker").await;
    let old_pid = before["pid"].as_u64().unwrap();
    signal(old_pid as u32, "KILL");

    let restarted = wait_for_plugin(&api, "go-ticker", 15, |plugin| {
        plugin["status"] == "loaded" && plugin["restarts"] == 1 && plugin["pid"] != old_pid
    })
    .await;
    assert!(
        restarted["error"]
            .as_str()
            .unwrap_or_default()
            .contains("SIGKILL"),
        "the last exit is shown: {restarted}"
    );
    assert!(!process_alive(old_pid));
    let shown = server.cli(&["plugin", "get", "go-ticker"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    let new_pid = restarted["pid"].as_u64().unwrap();
    assert!(
        shown.contains(&format!("loaded (pid {new_pid}, 1 restart)")),
        "{shown}"
    );
    // The subscription was renewed in the new process: runs keep coming.
    let count = runs(&api, "restarts").await.len();
    wait_for_runs(&api, "restarts", count + 2, 15).await;
    assert!(
        server.log().contains("plugin process down; restarting"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn no_plugin_process_outlives_the_server() {
    for kill in [true, false] {
        let (mut server, _dir) = server_with(&["go-ticker", "go-echo"], &[]).await;
        let api = server.client();
        let mut pids = Vec::new();
        for name in ["go-ticker", "go-echo"] {
            pids.push(plugin(&api, name).await["pid"].as_u64().unwrap());
        }
        assert!(pids.iter().all(|pid| process_alive(*pid)));
        if kill {
            server.kill();
        } else {
            assert!(server.stop(), "{}", server.log());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|pid| process_alive(*pid)) {
            assert!(
                Instant::now() < deadline,
                "plugin processes {pids:?} outlived the server (killed: {kill})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn plugins_that_fail_to_start_are_reported_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    write_file(
        &folder,
        "silent.toml",
        "command = \"/bin/sleep\"\nargs = [\"600\"]\n",
    );
    write_file(
        &folder,
        "chatty.toml",
        "command = \"/bin/echo\"\nargs = [\"hello there\"]\n",
    );
    write_file(
        &folder,
        "old.toml",
        "command = \"/bin/echo\"\nargs = [\"1|7|unix|/x.sock|grpc\"]\n",
    );
    write_file(&folder, "missing.toml", "command = \"no-such-plugin\"\n");
    write_file(&folder, "typo.toml", "comand = \"go-echo\"\n");
    let folder_text = folder.display().to_string();
    let server = TestServer::start_with_env(&[
        ("GOFER_PLUGINS__DIR", &folder_text),
        ("GOFER_PLUGINS__HANDSHAKE_TIMEOUT_MS", "1000"),
    ])
    .await;
    let api = server.client();
    for (name, reason) in [
        ("silent", "did not print a handshake line"),
        (
            "chatty",
            "printed \"hello there\" instead of a handshake line",
        ),
        ("old", "plugin protocol version \"7\""),
        ("missing", "could not start"),
        ("typo", "unknown field `comand`"),
    ] {
        let plugin = plugin(&api, name).await;
        assert_eq!(plugin["status"], "failed", "{plugin}");
        assert_eq!(plugin["runtime"], "grpc", "{plugin}");
        let error = plugin["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{name}: {error:?} should say {reason:?}"
        );
    }
    // The silent one was killed, not left behind.
    let sleepers = std::process::Command::new("pgrep")
        .args(["-f", "^/bin/sleep 600$"])
        .output()
        .unwrap();
    assert!(
        sleepers.stdout.is_empty(),
        "a plugin that never handshook is still running"
    );

    // Fixing the manifest loads the plugin within the folder poll.
    let command = go_plugins().join("go-echo");
    write_file(
        &folder,
        "typo.toml",
        &format!("command = {:?}\n", command.display().to_string()),
    );
    wait_for_plugin(&api, "go-echo", 10, |plugin| plugin["status"] == "loaded").await;
}

#[tokio::test]
async fn go_task_output_is_live_and_cancel_stops_it() {
    let (server, _dir) = server_with(&["go-echo"], &[]).await;
    let api = server.client();
    deploy(&api, json!({"id": "live", "name": "live", "tasks": [
        {"id": "slow", "plugin": "go-echo", "settings": {"sleep": "60s"}, "depends_on": {}, "variables": {}}
    ]}))
    .await;
    let run_id = crate::support::start_run(&api, "live", json!({})).await;
    // What the task printed before its sleep is in the log while it still runs.
    crate::support::wait_for_log(&api, "live", run_id, "slow", "setting sleep=60s").await;
    assert_eq!(
        tasks_of(&api, "live", run_id).await["slow"]["state"],
        "running"
    );

    let cancelled = Instant::now();
    let run = crate::support::cancel_run(&api, "live", run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(cancelled.elapsed() < Duration::from_secs(10));
    // The plugin saw the cancellation (its context ended) and said so on stderr.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("run cancelled by the server") {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_rebuilt_plugin_executable_is_restarted_with_its_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(go_plugins().join("go-ticker"), folder.join("go-ticker")).unwrap();
    write_file(&folder, "go-ticker.toml", "command = \"go-ticker\"\n");
    let folder_text = folder.display().to_string();
    let server = TestServer::start_with_env(&[("GOFER_PLUGINS__DIR", &folder_text)]).await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "rebuilt", "name": "rebuilt",
        "triggers": [{"plugin": "go-ticker", "id": "every-second", "settings": {"every": "1s"}}],
        "tasks": [{"id": "only", "plugin": "debug", "depends_on": {}, "variables": {}}]}),
    )
    .await;
    wait_for_runs(&api, "rebuilt", 1, 15).await;
    let old_pid = plugin(&api, "go-ticker").await["pid"].as_u64().unwrap();

    // A rebuild writes a new file and renames it over the old one, as `go build -o` does.
    std::fs::copy(go_plugins().join("go-ticker"), folder.join("go-ticker.new")).unwrap();
    std::fs::rename(folder.join("go-ticker.new"), folder.join("go-ticker")).unwrap();
    let reloaded = wait_for_plugin(&api, "go-ticker", 10, |plugin| {
        plugin["status"] == "loaded" && plugin["pid"].as_u64().is_some_and(|pid| pid != old_pid)
    })
    .await;
    assert_eq!(
        reloaded["restarts"], 0,
        "a reload is a new plugin, not a crash: {reloaded}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(old_pid) {
        assert!(
            Instant::now() < deadline,
            "the old process {old_pid} is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = runs(&api, "rebuilt").await.len();
    wait_for_runs(&api, "rebuilt", count + 2, 15).await;
}

/// The API tokens Gofer made for plugins, by user.
async fn plugin_tokens(admin: &Api) -> Vec<Value> {
    let (_, body) = admin.get("/api/tokens").await;
    body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|token| token["metadata"]["extension_id"].is_string())
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_plugin_calls_the_api_with_its_own_scoped_token() {
    let dir = tempfile::tempdir().unwrap();
    let folder = folder_with(dir.path(), &["go-ticker", "go-echo"]);
    let folder = folder.display().to_string();
    let server = TestServer::start_with(
        &[
            ("GOFER_PLUGINS__DIR", &folder),
            (
                "GOFER_SECRETS__ENCRYPTION_KEY",
                "0123456789abcdef0123456789abcdef",
            ),
        ],
        &["--auth"],
    )
    .await;
    let (_, bootstrap) = server.client().post_empty("/api/tokens/bootstrap").await;
    let admin = server
        .client()
        .with_token(bootstrap["secret"].as_str().unwrap());

    // Each plugin process has a token of its own, kind and name in its metadata.
    let tokens = plugin_tokens(&admin).await;
    let users: Vec<&str> = tokens
        .iter()
        .map(|token| token["user"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), 2, "{tokens:?}");
    assert!(users.contains(&"go-echo (plugin)") && users.contains(&"go-ticker (plugin)"));
    let echo_token = tokens
        .iter()
        .find(|token| token["user"] == "go-echo (plugin)")
        .unwrap();
    assert_eq!(echo_token["metadata"]["plugin_kind"], "task");

    // The task plugin stores its own object and is refused what is not its own.
    let config = json!({"id": "identity", "name": "identity", "tasks": [
        {"id": "save", "plugin": "go-echo", "depends_on": {}, "variables": {},
         "settings": {"save_object": "greeting", "api_get": "/api/extensions/go-echo/objects"}},
        {"id": "other-plugin", "plugin": "go-echo", "depends_on": {}, "variables": {},
         "settings": {"api_get": "/api/extensions/go-ticker/objects"}},
        {"id": "secrets", "plugin": "go-echo", "depends_on": {}, "variables": {},
         "settings": {"api_get": "/api/namespaces/default/pipelines/identity/secrets"}},
        {"id": "tokens", "plugin": "go-echo", "depends_on": {}, "variables": {},
         "settings": {"api_get": "/api/tokens"}},
        {"id": "own-subscriptions", "plugin": "go-echo", "depends_on": {}, "variables": {},
         "settings": {"api_get": "/api/extensions/go-echo/subscriptions"}}
    ]});
    deploy(&admin, config).await;
    let run_id = crate::support::start_run(&admin, "identity", json!({})).await;
    let run = wait_for_run(&admin, "identity", run_id, 30).await;
    assert_eq!(run["status"], "successful", "{run}");
    let log = |task: &'static str| crate::support::task_log(&admin, "identity", run_id, task);
    let saved = log("save").await;
    assert!(saved.contains("saved object greeting"), "{saved}");
    assert!(
        saved.contains("api GET /api/extensions/go-echo/objects: 200")
            && saved.contains("\"greeting\""),
        "{saved}"
    );
    let (status, object) = admin.get("/api/extensions/go-echo/objects/greeting").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(
        object.to_string().contains("setting save_object=greeting"),
        "{object}"
    );
    for (task, refused) in [
        ("other-plugin", "/api/extensions/go-ticker/objects: 403"),
        (
            "secrets",
            "/api/namespaces/default/pipelines/identity/secrets: 403",
        ),
        ("tokens", "/api/tokens: 403"),
        (
            "own-subscriptions",
            "/api/extensions/go-echo/subscriptions: 200 {\"subscriptions\":[]}",
        ),
    ] {
        let log = log(task).await;
        assert!(log.contains(refused), "{task}: {log}");
    }

    // A restarted process gets a new token; the old one is gone.
    let old_id = echo_token["id"].as_str().unwrap().to_string();
    let pid = plugin(&admin, "go-echo").await["pid"].as_u64().unwrap();
    signal(pid as u32, "KILL");
    wait_for_plugin(&admin, "go-echo", 15, |plugin| {
        plugin["status"] == "loaded" && plugin["restarts"] == 1
    })
    .await;
    let tokens = plugin_tokens(&admin).await;
    let echo_tokens: Vec<&Value> = tokens
        .iter()
        .filter(|token| token["user"] == "go-echo (plugin)")
        .collect();
    assert_eq!(echo_tokens.len(), 1, "{tokens:?}");
    assert_ne!(echo_tokens[0]["id"], old_id.as_str());
    let run_id = crate::support::start_run(&admin, "identity", json!({})).await;
    let run = wait_for_run(&admin, "identity", run_id, 30).await;
    assert_eq!(run["status"], "successful", "{run}");

    // Nobody else can mint a plugin's token.
    assert_error(
        &admin
            .post(
                "/api/tokens",
                json!({"user": "sneaky", "roles": [], "metadata": {"extension_id": "go-echo"}}),
            )
            .await,
        reqwest::StatusCode::BAD_REQUEST,
        "metadata key 'extension_id' is reserved",
    );
}

/// A plugin whose stream of fires is cut after every fire keeps firing: the server opens the
/// stream again while the process lives.
#[tokio::test]
async fn a_cut_stream_of_fires_is_opened_again() {
    let (server, _dir) = server_with(&["go-cutter"], &[]).await;
    let api = server.client();
    wait_for_plugin(&api, "go-cutter", 15, |plugin| plugin["status"] == "loaded").await;
    deploy(
        &api,
        json!({"id": "cut", "name": "cut", "tasks": [
            {"id": "after", "plugin": "debug", "depends_on": {}, "variables": {}}],
            "triggers": [{"plugin": "go-cutter", "id": "cutter", "settings": {}}]}),
    )
    .await;
    let runs = wait_for_runs(&api, "cut", 3, 20).await;
    let streams: std::collections::BTreeSet<String> = runs
        .iter()
        .filter_map(|run| {
            run["variables"]
                .as_array()?
                .iter()
                .find(|variable| variable["key"] == "GOFER_STREAM")
                .and_then(|variable| variable["value"].as_str().map(str::to_string))
        })
        .collect();
    assert!(
        streams.len() >= 3,
        "one fire per stream, several streams: {streams:?}"
    );
    assert_eq!(
        plugin(&api, "go-cutter").await["restarts"],
        0,
        "the process was not restarted"
    );
}

/// A plugin that stops answering (here: frozen with SIGSTOP) fails its health checks and is
/// killed and started again, and keeps firing.
#[tokio::test]
async fn a_hung_plugin_is_restarted_by_its_health_check() {
    let (server, _dir) = server_with(
        &["go-ticker", "go-echo"],
        &[
            ("GOFER_PLUGINS__HEALTH_INTERVAL_MS", "300"),
            ("GOFER_PLUGINS__TRIGGER_CALL_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    let api = server.client();
    deploy(&api, ticking_pipeline("hung")).await;
    wait_for_runs(&api, "hung", 1, 15).await;
    let old_pid = plugin(&api, "go-ticker").await["pid"].as_u64().unwrap();
    signal(old_pid as u32, "STOP");
    let restarted = wait_for_plugin(&api, "go-ticker", 15, |plugin| {
        plugin["status"] == "loaded" && plugin["pid"] != old_pid && plugin["restarts"] == 1
    })
    .await;
    assert!(
        restarted["error"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped answering"),
        "{restarted}"
    );
    assert!(!process_alive(old_pid), "the hung process was killed");
    let before = runs(&api, "hung").await.len();
    wait_for_runs(&api, "hung", before + 1, 15).await;
}
