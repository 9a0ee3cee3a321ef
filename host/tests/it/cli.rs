//! The CLI as a client of a live server: tables for people, JSON for scripts, one-line errors.

use std::process::Output;

use serde_json::{Value, json};

use crate::support::{TestServer, gofer_command, sdk_config, sdk_task, write_file};

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn json_output(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap()
}

fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "command should fail; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "a one-line error: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[tokio::test]
async fn namespaces_through_the_cli() {
    let server = TestServer::start().await;
    let created = server.cli(&[
        "namespace",
        "create",
        "team-a",
        "--name",
        "Team A",
        "--description",
        "first team",
    ]);
    assert!(stdout(&created).contains("Created namespace 'team-a'"));
    let table = stdout(&server.cli(&["namespace", "list"]));
    assert!(
        table.contains("team-a") && table.contains("Team A") && table.contains("first team"),
        "{table}"
    );
    assert!(
        table.contains("ago") || table.contains("now"),
        "human times: {table}"
    );
    let listed = json_output(&server.cli(&["namespace", "list", "--output", "json"]));
    assert_eq!(listed["namespaces"][1]["id"], "team-a");
    let got = json_output(&server.cli(&["-o", "json", "namespace", "get", "team-a"]));
    assert_eq!(got["namespace"]["description"], "first team");
    stdout(&server.cli(&["namespace", "update", "team-a", "--description", "renamed"]));
    assert!(stdout(&server.cli(&["namespace", "get", "team-a"])).contains("renamed"));
    let duplicate = failure(&server.cli(&["namespace", "create", "team-a"]));
    assert!(
        duplicate.contains("already exists") && duplicate.contains("409"),
        "{duplicate}"
    );
    stdout(&server.cli(&["namespace", "delete", "team-a"]));
    assert!(
        failure(&server.cli(&["namespace", "get", "team-a"]))
            .contains("namespace 'team-a' not found")
    );
}

#[tokio::test]
async fn register_deploy_and_inspect_a_pipeline_through_the_cli() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = sdk_config(
        "cli-pipe",
        json!([
            sdk_task("first", json!({})),
            sdk_task("second", json!({"first": "Success"}))
        ]),
    );
    let file = write_file(dir.path(), "pipeline.json", &config.to_string());
    let file = file.to_str().unwrap();

    let registered =
        stdout(&server.cli(&["pipeline", "config", "register", "--file", file, "--deploy"]));
    assert!(
        registered.contains("Registered and deployed pipeline 'cli-pipe' config v1"),
        "{registered}"
    );
    let second = json_output(&server.cli(&[
        "-o", "json", "pipeline", "config", "register", "--file", file,
    ]));
    assert_eq!(second["pipeline"]["config"]["version"], 2);
    assert_eq!(second["pipeline"]["config"]["state"], "unreleased");

    let list = stdout(&server.cli(&["pipeline", "list"]));
    assert!(
        list.contains("cli-pipe") && list.contains("active"),
        "{list}"
    );
    let detail = stdout(&server.cli(&["pipeline", "get", "cli-pipe"]));
    assert!(
        detail.contains("live config: v1") && detail.contains("first (success)"),
        "{detail}"
    );
    let configs = stdout(&server.cli(&["pipeline", "config", "list", "cli-pipe"]));
    assert!(
        configs.contains("live") && configs.contains("unreleased"),
        "{configs}"
    );

    let deployed = stdout(&server.cli(&["pipeline", "config", "deploy", "cli-pipe", "2"]));
    assert!(
        deployed.contains("Deployed pipeline 'cli-pipe' v2 (deployment 2, from v1)"),
        "{deployed}"
    );
    let deployments = json_output(&server.cli(&["-o", "json", "deployment", "list", "cli-pipe"]));
    assert_eq!(deployments["deployments"].as_array().unwrap().len(), 2);
    assert!(stdout(&server.cli(&["deployment", "get", "cli-pipe", "2"])).contains("1 -> 2"));
    let config = json_output(&server.cli(&["-o", "json", "pipeline", "config", "get", "cli-pipe"]));
    assert_eq!(config["config"]["version"], 2);

    stdout(&server.cli(&["pipeline", "disable", "cli-pipe"]));
    assert!(stdout(&server.cli(&["pipeline", "list"])).contains("disabled"));
    stdout(&server.cli(&["pipeline", "config", "delete", "cli-pipe", "1"]));
    let events = stdout(&server.cli(&["event", "list", "--reverse", "--limit", "3"]));
    assert!(
        events.contains("deleted_pipeline_config") && events.contains("disabled_pipeline"),
        "{events}"
    );

    // Errors: one line, exit code 1.
    let cycle = write_file(
        dir.path(),
        "cycle.json",
        &sdk_config("cli-pipe", json!([sdk_task("aaa", json!({"aaa": "Any"}))])).to_string(),
    );
    assert!(
        failure(&server.cli(&[
            "pipeline",
            "config",
            "register",
            "--file",
            cycle.to_str().unwrap()
        ]))
        .contains("cycle: aaa -> aaa")
    );
    let broken = write_file(dir.path(), "broken.json", "{");
    assert!(
        failure(&server.cli(&[
            "pipeline",
            "config",
            "register",
            "--file",
            broken.to_str().unwrap()
        ]))
        .contains("is not valid JSON")
    );
    assert!(
        failure(&server.cli(&["pipeline", "config", "register", "--file", "/no/such.json"]))
            .contains("could not read the config file /no/such.json")
    );
    assert!(failure(&server.cli(&["pipeline", "get", "ghost"])).contains("pipeline 'ghost'"));
    assert!(
        failure(&server.cli(&["--namespace", "ghost-ns", "pipeline", "list"]))
            .contains("namespace 'ghost-ns' not found")
    );
    stdout(&server.cli(&["pipeline", "delete", "cli-pipe"]));
}

#[tokio::test]
async fn the_cli_streams_events_and_pauses_runs() {
    let server = TestServer::start().await;
    let mut stream = gofer_command()
        .env("GOFER_API_BASE_URL", server.base_url())
        .args(["-o", "json", "event", "stream", "--history"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let paused = stdout(&server.cli(&["system", "pause"]));
    assert!(paused.contains("paused"));
    assert!(stdout(&server.cli(&["system", "get"])).contains("runs paused: true"));
    server.cli(&["namespace", "create", "streamed"]);
    // The stream printed the history and the new event, one JSON object a line.
    let mut lines = Vec::new();
    {
        use std::io::BufRead;
        let reader = std::io::BufReader::new(stream.stdout.as_mut().unwrap());
        for line in reader.lines() {
            let line = line.unwrap();
            let done = line.contains("\"streamed\"");
            lines.push(line);
            if done {
                break;
            }
        }
    }
    stream.kill().unwrap();
    stream.wait().unwrap();
    assert!(
        lines[0].contains("created_namespace") && lines[0].contains("default"),
        "{lines:?}"
    );
    assert!(lines.last().unwrap().contains("streamed"));
}

#[test]
fn the_cli_reports_an_unreachable_server_and_bad_arguments() {
    let output = gofer_command()
        .args(["--api-base-url", "http://127.0.0.1:9", "namespace", "list"])
        .output()
        .unwrap();
    assert!(failure(&output).contains("could not reach the Gofer server at http://127.0.0.1:9"));
    let output = gofer_command()
        .args(["--api-base-url", "localhost:8080", "namespace", "list"])
        .output()
        .unwrap();
    assert!(failure(&output).contains("must start with http://"));
    let output = gofer_command()
        .args(["-o", "yaml", "namespace", "list"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid value 'yaml'"));
    let output = gofer_command()
        .args(["pipeline", "config", "deploy", "p", "latest"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// Shell completions load in bash and complete subcommands; the version line says the version.
#[test]
fn completions_load_in_bash_and_the_version_says_what_it_is() {
    let completed = command_in_shell(
        "source <(\"$GOFER\" completion bash) && COMP_WORDS=(gofer pipel) && COMP_CWORD=1 && \
         _gofer gofer pipel gofer && echo \"${COMPREPLY[@]}\"",
    )
    .env("GOFER", crate::support::GOFER)
    .output()
    .unwrap();
    assert!(completed.status.success(), "{completed:?}");
    assert_eq!(
        String::from_utf8_lossy(&completed.stdout).trim(),
        "pipeline"
    );
    let version = gofer_command().arg("--version").output().unwrap();
    let version = stdout(&version);
    assert!(
        version.starts_with(&format!("gofer {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
}

/// Runs `pipeline` (a shell pipeline whose `gofer` is the binary under test) with `pipefail`.
fn shell_pipeline(server: &TestServer, pipeline: &str) -> std::process::Child {
    command_in_shell(pipeline)
        .env("GOFER", crate::support::GOFER)
        .env("GOFER_API_BASE_URL", server.base_url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn command_in_shell(pipeline: &str) -> std::process::Command {
    let mut command = std::process::Command::new("bash");
    command.args(["-c", &format!("set -o pipefail; {pipeline}")]);
    command
}

fn finished_quietly(child: std::process::Child, what: &str) -> String {
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.is_empty(),
        "{what}: {:?}, stderr: {stderr}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test]
async fn a_closed_output_ends_the_cli_quietly() {
    let server = TestServer::start().await;
    let api = server.client();
    // More output than a pipe holds, so the CLI is still writing when its reader has gone.
    let description = "d".repeat(200);
    for index in 0..400 {
        let (status, body) = api
            .post(
                "/api/namespaces",
                json!({"id": format!("team-{index}"), "name": "Team", "description": description}),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    for (pipeline, expected) in [
        ("\"$GOFER\" namespace list --limit 1000 | head -1", "┌"),
        (
            "\"$GOFER\" namespace list --limit 1000 | grep -q default && echo found",
            "found",
        ),
        (
            "\"$GOFER\" -o json namespace list --limit 1000 | head -1",
            "{",
        ),
        ("\"$GOFER\" service openapi | head -1", "{"),
        ("\"$GOFER\" completion zsh | head -1", "#compdef gofer"),
    ] {
        let printed = finished_quietly(shell_pipeline(&server, pipeline), pipeline);
        assert_eq!(printed.lines().count(), 1, "{pipeline}: {printed}");
        assert!(printed.starts_with(expected), "{pipeline}: {printed}");
    }

    // A stream ends at its first write after the reader has gone.
    let child = shell_pipeline(&server, "\"$GOFER\" event stream --history | head -1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut waiting = Some(child);
    let mut live_events = 0;
    while let Some(mut child) = waiting.take() {
        if child.try_wait().unwrap().is_some() {
            let printed = finished_quietly(child, "event stream");
            assert_eq!(printed.lines().count(), 1, "{printed}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream did not end"
        );
        // Each new event is one more write to the closed pipe.
        let (status, _) = api
            .post(
                "/api/namespaces",
                json!({"id": format!("late-{live_events}"), "name": "Late", "description": ""}),
            )
            .await;
        assert!(status.is_success());
        live_events += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        waiting = Some(child);
    }
}
