//! Start-up: configuration layers, refusals with the key named, schema versions, shutdown.

use std::process::Stdio;

use reqwest::StatusCode;

use crate::support::{TestServer, free_address, gofer_command, start_fails, write_file};

#[test]
fn a_bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let typo = write_file(
        dir.path(),
        "typo.toml",
        "[server]\nbindd = \"127.0.0.1:1\"\n",
    );
    let stderr = start_fails(&["--config", typo.to_str().unwrap()], &[]);
    assert!(
        stderr.contains("unknown field") && stderr.contains("bindd"),
        "{stderr}"
    );

    let bad_value = write_file(
        dir.path(),
        "value.toml",
        "[server]\nbind = \"not an address\"\n",
    );
    let stderr = start_fails(&["--config", bad_value.to_str().unwrap()], &[]);
    assert!(stderr.contains("server.bind"), "{stderr}");
    assert!(stderr.contains("value.toml"), "names the file: {stderr}");

    let bad_toml = write_file(dir.path(), "broken.toml", "[server\n");
    let stderr = start_fails(&["--config", bad_toml.to_str().unwrap()], &[]);
    assert!(stderr.contains("broken.toml"), "{stderr}");

    let stderr = start_fails(&[], &[("GOFER_API__MAX_PAGE_LIMIT", "many")]);
    assert!(
        stderr.contains("api.max_page_limit") && stderr.contains("GOFER_API__MAX_PAGE_LIMIT"),
        "{stderr}"
    );

    let stderr = start_fails(&[], &[("GOFER_SCHEDULER__ENGINE", "kubernetes")]);
    assert!(
        stderr.contains("scheduler.engine")
            && stderr.contains("kubernetes")
            && stderr.contains("docker")
            && stderr.contains("podman")
            && stderr.contains("GOFER_SCHEDULER__ENGINE"),
        "{stderr}"
    );
    let stderr = start_fails(&[], &[("GOFER_SCHEDULER__SOCKET", "docker.sock")]);
    assert!(
        stderr.contains("scheduler.socket: 'docker.sock' is not an engine address"),
        "{stderr}"
    );
    let stderr = start_fails(&[], &[("GOFER_OBJECTS__ENGINE", "s4")]);
    assert!(
        stderr.contains("objects.engine") && stderr.contains("filesystem"),
        "{stderr}"
    );

    let stderr = start_fails(&[], &[("GOFER_LOG__LEVEL", "loud[")]);
    assert!(stderr.contains("log.level"), "{stderr}");

    let stderr = start_fails(&[], &[("GOFER_PLUGINS__OBJECT_MAX_KIB", "0")]);
    assert!(
        stderr.contains("object_max_kib and external_event_max_kib must be above 0"),
        "{stderr}"
    );

    let stderr = start_fails(&["--config", "/no/such/gofer.toml"], &[]);
    assert!(
        stderr.contains("/no/such/gofer.toml does not exist"),
        "{stderr}"
    );

    let stderr = start_fails(&[], &[("GOFER_CONFIG", "/no/such/env.toml")]);
    assert!(stderr.contains("/no/such/env.toml"), "{stderr}");

    let stderr = start_fails(&["--bind", "127.0.0.1"], &[]);
    assert!(stderr.contains("--bind"), "{stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        stderr.trim().lines().count().min(8),
        "short message: {stderr}"
    );
}

#[tokio::test]
async fn the_layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (file_address, env_address, flag_address) =
        (free_address(), free_address(), free_address());
    let config = write_file(
        dir.path(),
        "gofer.toml",
        &format!(
            "[server]\nbind = \"{file_address}\"\ndata_dir = \"{}\"\n",
            dir.path().join("from-file").display()
        ),
    );
    let start = |extra: &[&str], env: Option<(&str, String)>| {
        let mut command = gofer_command();
        command
            .args(["service", "start", "--config", config.to_str().unwrap()])
            .args(extra);
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let healthy = |address: std::net::SocketAddr| async move {
        let api = crate::support::Api::new(&format!("http://{address}"));
        for _ in 0..500 {
            if api.get("/api/system/metadata").await.0 == StatusCode::OK {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    };

    // File only.
    let mut child = start(&[], None);
    assert!(
        healthy(file_address).await,
        "the file's bind address is used"
    );
    assert!(
        dir.path().join("from-file/gofer.db").exists(),
        "the file's data dir is used"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Environment over file.
    let mut child = start(&[], Some(("GOFER_SERVER__BIND", env_address.to_string())));
    assert!(
        healthy(env_address).await,
        "GOFER_SERVER__BIND overrides the file"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Flags over environment.
    let flag_dir = dir.path().join("from-flag");
    let mut child = start(
        &[
            "--bind",
            &flag_address.to_string(),
            "--data-dir",
            flag_dir.to_str().unwrap(),
        ],
        Some(("GOFER_SERVER__BIND", env_address.to_string())),
    );
    assert!(
        healthy(flag_address).await,
        "--bind overrides the environment"
    );
    assert!(
        flag_dir.join("gofer.db").exists(),
        "--data-dir overrides the file"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn the_printed_default_config_starts_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let output = gofer_command()
        .args(["service", "init-config"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("# Development mode"), "commented: {text}");
    let address = free_address();
    let text = text
        .replace(
            "bind = \"127.0.0.1:8080\"",
            &format!("bind = \"{address}\""),
        )
        .replace(
            "data_dir = \"\"",
            &format!("data_dir = \"{}\"", dir.path().join("data").display()),
        );
    let config = write_file(dir.path(), "gofer.toml", &text);
    let mut child = gofer_command()
        .args(["service", "start", "--config", config.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = crate::support::Api::new(&format!("http://{address}"));
    let mut healthy = false;
    for _ in 0..500 {
        if api.get("/api/system/metadata").await.0 == StatusCode::OK {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(healthy);
}

#[tokio::test]
async fn development_mode_is_announced_and_data_is_not_in_tmp_by_default() {
    let mut server = TestServer::start().await;
    assert!(
        server.log().contains("DEVELOPMENT MODE"),
        "{}",
        server.log()
    );
    assert!(server.stop(), "SIGTERM ends the server with success");
    assert!(
        server.log().contains("gofer server stopped"),
        "{}",
        server.log()
    );

    let default = gofer_command()
        .args(["service", "init-config"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&default.stdout).contains("$XDG_DATA_HOME/gofer"));
}

#[tokio::test]
// The test plays a newer Gofer writing the file, so it reaches into SQLite itself.
#[allow(clippy::disallowed_types)]
async fn a_database_from_a_newer_gofer_is_refused() {
    let mut server = TestServer::start().await;
    assert!(server.stop());
    let database = server.data_dir.join("gofer.db");
    let connection = rusqlite::Connection::open(&database).unwrap();
    connection.pragma_update(None, "user_version", 42).unwrap();
    drop(connection);
    let stderr = crate::support::start_fails_in(&server.data_dir, &[], &[]);
    assert!(
        stderr.contains("schema version 42") && stderr.contains("newer"),
        "{stderr}"
    );
}

#[test]
fn a_busy_port_is_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let stderr = start_fails(&["--bind", &address], &[]);
    assert!(
        stderr.contains(&format!("could not listen on {address}")),
        "{stderr}"
    );
}

#[test]
fn outside_development_mode_the_default_secret_key_is_refused() {
    let stderr = start_fails(&[], &[("GOFER_DEVELOPMENT__BYPASS_AUTH", "false")]);
    assert!(
        stderr.contains("secrets.encryption_key: still the shipped default"),
        "{stderr}"
    );
    let stderr = start_fails(&["--auth"], &[]);
    assert!(
        stderr.contains("secrets.encryption_key: still the shipped default"),
        "--auth turns development mode off too: {stderr}"
    );
    let stderr = start_fails(&[], &[("GOFER_SECRETS__ENCRYPTION_KEY", "too-short")]);
    assert!(
        stderr.contains("secrets.encryption_key: must be exactly 32 bytes, got 9"),
        "{stderr}"
    );
}
