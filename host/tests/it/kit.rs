//! The kit for plugin authors, end to end: `gofer plugin new` projects (Rust and Go, trigger and
//! task) whose own tests pass, which build, which `gofer plugin check` describes, and which a real
//! server loads from its plugins folder and runs; a plugin written in Python (componentize-py)
//! run as a shared task; `gofer plugin check` refusing what a server would refuse.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    Api, TestServer, deploy, gofer_command, start_run, task_log, wait_for_run, write_file,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a command to success, or fails the test with its output.
fn succeed(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("could not run {what}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn gofer(args: &[&str]) -> Output {
    gofer_command().args(args).output().unwrap()
}

fn plugin_new(dir: &Path, name: &str, kind: &str, language: &str, sdk: &str) {
    let output = gofer(&[
        "plugin",
        "new",
        name,
        "--kind",
        kind,
        "--lang",
        language,
        "--dir",
        dir.to_str().unwrap(),
        "--sdk",
        root().join(sdk).to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "gofer plugin new failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains(&format!("Wrote the {kind} plugin '{name}'")),
        "{said}"
    );
}

/// Where plugin projects build: beside the built-in plugins, so that their dependencies are
/// compiled once.
fn plugin_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("plugins")
}

/// `cargo test`, then the release build for wasm32-wasip2, of a Rust plugin project; its .wasm.
fn cargo_test_and_build(project: &Path, name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = plugin_target_dir();
    let tested = succeed(
        Command::new(&cargo)
            .args(["test", "--offline"])
            .current_dir(project)
            .env("CARGO_TARGET_DIR", &target),
        &format!("cargo test of the new plugin {name}"),
    );
    let summary = String::from_utf8_lossy(&tested.stdout);
    assert!(summary.contains("test result: ok."), "{summary}");
    assert!(
        !summary.contains(" 0 passed"),
        "the template has no tests: {summary}"
    );
    succeed(
        Command::new(&cargo)
            .args([
                "build",
                "--offline",
                "--release",
                "--target",
                "wasm32-wasip2",
            ])
            .current_dir(project)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
        &format!("the wasm32-wasip2 build of the new plugin {name}"),
    );
    target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// The version a Cargo.lock pins `name` at.
fn locked_version(lockfile: &str, name: &str) -> Option<String> {
    let entry = format!("[[package]]\nname = \"{name}\"\nversion = \"");
    let start = lockfile.find(&entry)? + entry.len();
    let length = lockfile[start..].find('"')?;
    Some(lockfile[start..start + length].to_string())
}

/// `scripts/go-plugins.sh project DIR test|build`.
fn go_project(project: &Path, step: &str) {
    succeed(
        Command::new("bash")
            .arg(root().join("scripts/go-plugins.sh"))
            .arg("project")
            .arg(project)
            .arg(step)
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local"),
        &format!("go {step} of {}", project.display()),
    );
}

/// `gofer plugin check FILE -o json`, which must succeed.
fn check(file: &Path) -> Value {
    let output = gofer(&["plugin", "check", file.to_str().unwrap(), "-o", "json"]);
    assert!(
        output.status.success(),
        "gofer plugin check {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `gofer plugin check FILE`, which must fail; its message.
fn check_refuses(file: &Path) -> String {
    let output = gofer(&["plugin", "check", file.to_str().unwrap()]);
    assert!(
        !output.status.success(),
        "{} was not refused",
        file.display()
    );
    String::from_utf8_lossy(&output.stderr).to_string()
}

async fn server_with_plugins(folder: &Path) -> TestServer {
    TestServer::start_with_env(&[("GOFER_PLUGINS__DIR", folder.to_str().unwrap())]).await
}

/// Waits until the named plugins are loaded; fails with the server's view of them otherwise.
async fn wait_for_loaded(api: &Api, names: &[&str], seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let (_, body) = api.get("/api/plugins").await;
        let loaded = |name: &&str| {
            body["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .any(|plugin| plugin["name"] == *name && plugin["status"] == "loaded")
        };
        if names.iter().all(loaded) {
            return;
        }
        assert!(Instant::now() < deadline, "{names:?} never loaded: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deploys a pipeline with one task of `task_plugin` and a subscription to `trigger_plugin`
/// every second; waits for the trigger's first run and returns its task's log.
async fn triggered_run_of(
    api: &Api,
    pipeline: &str,
    trigger_plugin: &str,
    task_plugin: &str,
) -> String {
    deploy(
        api,
        json!({"id": pipeline, "name": pipeline, "tasks": [
            {"id": "greet", "plugin": task_plugin, "settings": {"who": "kit"}, "depends_on": {}, "variables": {}}],
         "triggers": [{"plugin": trigger_plugin, "id": "often", "settings": {"every": "1s"}}]}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = api
            .get(&format!(
                "/api/namespaces/default/pipelines/{pipeline}/runs"
            ))
            .await;
        if let Some(run) = body["runs"].as_array().and_then(|runs| runs.last()) {
            let run_id = run["run_id"].as_u64().unwrap();
            let run = wait_for_run(api, pipeline, run_id, 30).await;
            assert_eq!(run["status"], "successful", "{run}");
            assert_eq!(
                run["initiator"]["id"],
                format!("plugin:{trigger_plugin}"),
                "{run}"
            );
            return task_log(api, pipeline, run_id, "greet").await;
        }
        assert!(
            Instant::now() < deadline,
            "{trigger_plugin} started no run of {pipeline}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn rust_plugins_from_plugin_new_pass_their_tests_and_run_in_a_server() {
    let scratch = tempfile::tempdir().unwrap();
    let (trigger_dir, task_dir) = (scratch.path().join("tick"), scratch.path().join("hello"));
    plugin_new(&trigger_dir, "kit-tick", "trigger", "rust", "sdk-rust");
    plugin_new(&task_dir, "kit-hello", "task", "rust", "sdk-rust");
    let trigger = cargo_test_and_build(&trigger_dir, "kit-tick");
    let task = cargo_test_and_build(&task_dir, "kit-hello");
    // The project kept the versions Gofer builds its own plugins with, and only what it uses.
    let ours = std::fs::read_to_string(root().join("plugins/Cargo.lock")).unwrap();
    let theirs = std::fs::read_to_string(trigger_dir.join("Cargo.lock")).unwrap();
    for dependency in ["wit-bindgen-core", "wit-bindgen-rust-macro", "wasip2"] {
        let version = locked_version(&ours, dependency);
        assert!(version.is_some(), "plugins/Cargo.lock has no {dependency}");
        assert_eq!(locked_version(&theirs, dependency), version, "{dependency}");
    }
    assert!(locked_version(&theirs, "kit-tick").is_some(), "{theirs}");
    assert!(
        locked_version(&theirs, "gofer-plugin-interval").is_none(),
        "{theirs}"
    );

    let described = check(&trigger);
    assert_eq!(described["interface"], "gofer:plugin@0.2.0");
    assert_eq!(described["name"], "kit-tick");
    assert_eq!(described["kind"], "trigger");
    assert_eq!(described["settings"][0]["key"], "every");
    assert_eq!(check(&task)["kind"], "task");

    // Dropped into a server's plugins folder as they are.
    let folder = scratch.path().join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&trigger, folder.join("kit-tick.wasm")).unwrap();
    std::fs::copy(&task, folder.join("kit-hello.wasm")).unwrap();
    let server = server_with_plugins(&folder).await;
    let api = server.client();
    wait_for_loaded(&api, &["kit-tick", "kit-hello"], 30).await;
    let log = triggered_run_of(&api, "kit-rust", "kit-tick", "kit-hello").await;
    assert!(log.contains("hello kit, from run 1 of kit-rust"), "{log}");
}

#[tokio::test]
async fn go_plugins_from_plugin_new_pass_their_tests_and_run_in_a_server() {
    let scratch = tempfile::tempdir().unwrap();
    let folder = scratch.path().join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    for (name, kind) in [("go-kit-tick", "trigger"), ("go-kit-hello", "task")] {
        let project = scratch.path().join(name);
        plugin_new(&project, name, kind, "go", "sdk-go/plugin");
        let go_mod = std::fs::read_to_string(project.join("go.mod")).unwrap();
        assert!(
            go_mod.contains("replace gofer.dev/sdk/plugin =>"),
            "{go_mod}"
        );
        go_project(&project, "test");
        go_project(&project, "build");
        // The manifest and the executable, side by side, as the project has them.
        let manifest = project.join(format!("{name}.toml"));
        let described = check(&manifest);
        assert_eq!(described["interface"], "gofer.plugin.v1");
        assert_eq!(
            (&described["name"], &described["kind"]),
            (&json!(name), &json!(kind))
        );
        std::fs::copy(project.join(name), folder.join(name)).unwrap();
        std::fs::copy(&manifest, folder.join(format!("{name}.toml"))).unwrap();
    }
    let server = server_with_plugins(&folder).await;
    let api = server.client();
    wait_for_loaded(&api, &["go-kit-tick", "go-kit-hello"], 30).await;
    let log = triggered_run_of(&api, "kit-go", "go-kit-tick", "go-kit-hello").await;
    assert!(log.contains("hello kit, from run 1 of kit-go"), "{log}");
}

#[tokio::test]
async fn a_plugin_written_in_python_runs_as_a_shared_task() {
    let scratch = tempfile::tempdir().unwrap();
    let built = scratch.path().join("built");
    succeed(
        Command::new("bash")
            .arg(root().join("scripts/python-plugin.sh"))
            .arg(&built),
        "scripts/python-plugin.sh",
    );
    let plugin = built.join("py-tally.wasm");
    let described = check(&plugin);
    assert_eq!(described["interface"], "gofer:plugin@0.2.0");
    assert_eq!(
        (&described["name"], &described["kind"]),
        (&json!("py-tally"), &json!("task"))
    );

    let folder = scratch.path().join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&plugin, folder.join("py-tally.wasm")).unwrap();
    let config = write_file(
        scratch.path(),
        "gofer.toml",
        "[plugins.config.py-tally]\ngreeting = \"hej\"\n",
    );
    let server = TestServer::start_with_env(&[
        ("GOFER_PLUGINS__DIR", folder.to_str().unwrap()),
        ("GOFER_CONFIG", config.to_str().unwrap()),
    ])
    .await;
    let api = server.client();
    wait_for_loaded(&api, &["py-tally"], 120).await;
    deploy(
        &api,
        json!({"id": "py-pipeline", "name": "py", "tasks": [
            {"id": "tally", "plugin": "py-tally", "settings": {"label": "builds"}, "depends_on": {}, "variables": {}},
            {"id": "refused", "plugin": "py-tally", "settings": {"exit_code": "300"}, "depends_on": {"tally": "Success"}, "variables": {}}]}),
    )
    .await;
    for expected in 1..=2 {
        let run_id = start_run(&api, "py-pipeline", json!({})).await;
        let run = wait_for_run(&api, "py-pipeline", run_id, 60).await;
        assert_eq!(run["status"], "failed", "{run}");
        let log = task_log(&api, "py-pipeline", run_id, "tally").await;
        // The count lives in the plugin's objects, so it survives between instances.
        assert!(
            log.contains(&format!(
                "hej from Python: {expected} builds of py-pipeline"
            )),
            "{log}"
        );
        let (_, task) = api
            .get(&format!(
                "/api/namespaces/default/pipelines/py-pipeline/runs/{run_id}/tasks/refused"
            ))
            .await;
        let message = task["task_execution"]["status_reason"]["description"].to_string();
        assert!(message.contains("'exit_code' must be 0 to 255"), "{task}");
    }
    let (_, logs) = api.get("/api/extensions/py-tally/logs").await;
    assert!(
        logs.as_str()
            .unwrap_or_default()
            .contains("py-pipeline has run py-tally 2 times"),
        "{logs}"
    );
}

#[test]
fn plugin_check_says_why_a_server_would_refuse_a_file() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();

    let garbage = write_file(dir, "garbage.wasm", "not a component");
    assert!(check_refuses(&garbage).contains("lacks the \\0asm header"));

    let text = write_file(dir, "notes.txt", "hello");
    assert!(check_refuses(&text).contains("neither a .wasm component nor a .toml manifest"));

    let future = dir.join("future.wasm");
    std::fs::copy(crate::plugins::fixture("future"), &future).unwrap();
    let refused = check_refuses(&future);
    assert!(refused.contains("gofer:plugin@0.9.0"), "{refused}");
    assert!(
        refused.contains("0.1.0 and gofer:plugin@0.2.0"),
        "{refused}"
    );

    let missing = write_file(dir, "ghost.toml", "command = \"no-such-program\"\n");
    assert!(check_refuses(&missing).contains("could not start"));

    let typo = write_file(dir, "typo.toml", "comand = \"x\"\n");
    assert!(check_refuses(&typo).contains("unknown field `comand`"));

    // A built-in plugin's own component, as an operator might copy it: loads, and the check
    // says that it would replace the built-in.
    let misbehave = check(&crate::plugins::fixture("misbehave"));
    assert_eq!(misbehave["interface"], "gofer:plugin@0.1.0");
}
