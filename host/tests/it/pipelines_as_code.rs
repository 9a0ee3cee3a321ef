//! Pipelines as code: `gofer pipeline create|update PATH` builds and runs real Go and Rust
//! pipeline programs (examples/pipeline-go, examples/pipeline-rust) with the machine's toolchains
//! and registers what they print.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::support::{
    TestServer, ensure_test_image, gofer_command, start_run, tasks_of, wait_for_run, write_file,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the CLI against the server; Rust programs build in their own target dir (not the one
/// this test binary's build holds).
fn gofer(server: &TestServer, args: &[&str]) -> Output {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("pipeline-programs");
    gofer_command()
        .env("GOFER_API_BASE_URL", server.base_url())
        .env("CARGO_TARGET_DIR", target)
        .args(args)
        .output()
        .unwrap()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn failed(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "command should fail; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// A registered config without what registration adds (version, times, state).
async fn config_version(server: &TestServer, version: u64) -> Value {
    let (_, body) = server
        .client()
        .get(&format!(
            "/api/namespaces/default/pipelines/sdk-example/configs/{version}"
        ))
        .await;
    let mut config = body["config"].clone();
    let object = config.as_object_mut().expect("a config");
    for added in ["version", "registered", "deprecated", "state"] {
        object.remove(added);
    }
    config
}

#[tokio::test]
async fn go_and_rust_programs_register_the_same_pipeline_as_the_json() {
    ensure_test_image();
    let server = TestServer::start().await;
    let example = |name: &str| repo().join("examples").join(name).display().to_string();

    let created = gofer(
        &server,
        &["pipeline", "create", &example("pipeline-go"), "--deploy"],
    );
    let stdout = succeeded(&created);
    assert!(
        stdout.contains("Registered and deployed pipeline 'sdk-example' config v1"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(
        stderr.contains("Building and running the Go pipeline program"),
        "{stderr}"
    );

    let again = failed(&gofer(
        &server,
        &["pipeline", "create", &example("pipeline-rust")],
    ));
    assert!(
        again.contains("pipeline 'sdk-example' already exists in namespace 'default'; use `gofer pipeline update`"),
        "{again}"
    );
    let updated = gofer(&server, &["pipeline", "update", &example("pipeline-rust")]);
    assert!(
        succeeded(&updated).contains("Registered pipeline 'sdk-example' config v2"),
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    let from_json = gofer(
        &server,
        &["pipeline", "update", &example("sdk-example.json")],
    );
    assert!(succeeded(&from_json).contains("config v3"));

    let (go, rust, json) = (
        config_version(&server, 1).await,
        config_version(&server, 2).await,
        config_version(&server, 3).await,
    );
    assert_eq!(go, json, "the Go program and the JSON file differ");
    assert_eq!(rust, json, "the Rust program and the JSON file differ");
    assert_eq!(json["tasks"]["report"]["plugin"], "debug", "{json}");
    assert_eq!(json["tasks"]["greet"]["retries"], 1, "{json}");

    // The deployed (Go) version runs.
    let api = server.client();
    let run_id = start_run(&api, "sdk-example", json!({})).await;
    let run = wait_for_run(&api, "sdk-example", run_id, 60).await;
    assert_eq!(run["status"], "successful", "{run}");
    let tasks = tasks_of(&api, "sdk-example", run_id).await;
    assert_eq!(tasks["report"]["exit_code"], 0, "{tasks:?}");
    let (_, log) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/sdk-example/runs/{run_id}/tasks/greet/logs"
        ))
        .await;
    assert!(
        log.as_str()
            .unwrap_or_default()
            .contains("hello from gofer"),
        "{log}"
    );

    let missing = failed(&gofer(
        &server,
        &[
            "pipeline",
            "update",
            &repo().join("examples/hello.json").display().to_string(),
        ],
    ));
    assert!(
        missing.contains("does not exist in namespace 'default'; use `gofer pipeline create`"),
        "{missing}"
    );
}

#[tokio::test]
async fn build_and_validation_errors_are_shown() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sdk = repo().join("sdk-go/config").display().to_string();

    // A Go compile error: the compiler's message reaches the user.
    let go = dir.path().join("broken-go");
    std::fs::create_dir_all(&go).unwrap();
    write_file(&go, "go.mod", "module example.com/broken\n\ngo 1.19\n");
    write_file(
        &go,
        "main.go",
        "package main\n\nfunc main() { notDefined() }\n",
    );
    let error = failed(&gofer(
        &server,
        &["pipeline", "create", &go.display().to_string()],
    ));
    assert!(error.contains("undefined: notDefined"), "{error}");
    assert!(
        error.contains("the Go pipeline program in") && error.contains("failed (exit status: 2)"),
        "{error}"
    );

    // A pipeline the SDK refuses: its message reaches the user, nothing is registered.
    let invalid = dir.path().join("invalid-go");
    std::fs::create_dir_all(&invalid).unwrap();
    write_file(
        &invalid,
        "go.mod",
        &format!(
            "module example.com/invalid\n\ngo 1.19\n\nrequire gofer.dev/sdk/config v0.0.0\n\nreplace gofer.dev/sdk/config => {sdk}\n"
        ),
    );
    write_file(
        &invalid,
        "main.go",
        r#"package main

import (
	"log"

	"gofer.dev/sdk/config"
)

func main() {
	err := config.NewPipeline("invalid", "x").Tasks(
		config.NewTask("aaa", "busybox"),
		config.NewTask("aaa", "busybox"),
	).Finish()
	if err != nil {
		log.Fatal(err)
	}
}
"#,
    );
    let error = failed(&gofer(
        &server,
        &["pipeline", "create", &invalid.display().to_string()],
    ));
    assert!(
        error.contains("task 'aaa' is defined more than once"),
        "{error}"
    );

    // A Rust compile error.
    let rust = dir.path().join("broken-rust");
    std::fs::create_dir_all(rust.join("src")).unwrap();
    write_file(
        &rust,
        "Cargo.toml",
        "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    );
    write_file(
        &rust.join("src"),
        "main.rs",
        "fn main() { let x: u32 = \"no\"; }\n",
    );
    let error = failed(&gofer(
        &server,
        &["pipeline", "create", &rust.display().to_string()],
    ));
    assert!(error.contains("mismatched types"), "{error}");
    assert!(error.contains("the Rust pipeline program in"), "{error}");

    // Nothing to build.
    let error = failed(&gofer(
        &server,
        &["pipeline", "create", &dir.path().display().to_string()],
    ));
    assert!(error.contains("holds no pipeline program"), "{error}");

    let (_, body) = server
        .client()
        .get("/api/namespaces/default/pipelines")
        .await;
    assert_eq!(body["pipelines"], json!([]), "nothing was registered");
}
