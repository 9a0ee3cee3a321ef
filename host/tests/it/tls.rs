//! HTTPS: a server with an operator-provided certificate (made here by openssl), the CLI trusting
//! it with --ca-cert, and a gRPC plugin calling the API over HTTPS with the certificate it is given.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_address, gofer_command};

/// A test CA and a server certificate it signed for localhost and 127.0.0.1:
/// (ca.pem, cert.pem, key.pem).
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is needed to make test certificates");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca, ca_key) = (path("ca.pem"), path("ca-key.pem"));
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=Gofer test CA",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ],
        ]
        .concat(),
    );
    let (request, cert, key) = (path("server.csr"), path("cert.pem"), path("key.pem"));
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-subj", "/CN=localhost", "-keyout", &key, "-out", &request],
        ]
        .concat(),
    );
    let extensions = path("san.ext");
    std::fs::write(
        &extensions,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &request,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &extensions,
        "-out",
        &cert,
    ]);
    (ca, cert, key)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_cli_talks_to_an_https_server() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let address = free_address();
    let plugins = crate::grpc_plugins::folder_with(dir.path(), &["go-echo"]);
    let _server = Server(
        gofer_command()
            .args([
                "service",
                "start",
                "--bind",
                &address.to_string(),
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env("GOFER_SERVER__TLS_CERT", &cert)
            .env("GOFER_SERVER__TLS_KEY", &key)
            .env("GOFER_PLUGINS__DIR", &plugins)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("https://localhost:{}", address.port());
    let cli = |args: &[&str]| {
        gofer_command()
            .env("GOFER_API_BASE_URL", &base)
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let output = cli(&["--ca-cert", &ca, "namespace", "list"]);
        if output.status.success() {
            break output;
        }
        assert!(
            Instant::now() < deadline,
            "the HTTPS server never answered: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(String::from_utf8_lossy(&listed.stdout).contains("default"));
    // Streams (run events and task logs) go over wss:// with the same trust.
    let config = crate::support::write_file(
        dir.path(),
        "pipeline.json",
        r#"{"id": "secure", "name": "secure", "tasks": [
            {"id": "report", "plugin": "debug", "settings": {"note": "over-tls"}, "depends_on": {}, "variables": {}},
            {"id": "ask", "plugin": "go-echo", "settings": {"api_get": "/api/namespaces"}, "depends_on": {}, "variables": {}}]}"#,
    );
    let registered = cli(&[
        "--ca-cert",
        &ca,
        "pipeline",
        "config",
        "register",
        "--file",
        config.to_str().unwrap(),
        "--deploy",
    ]);
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let followed = cli(&["--ca-cert", &ca, "run", "start", "secure", "--follow"]);
    let output = String::from_utf8_lossy(&followed.stdout);
    assert!(
        followed.status.success()
            && output.contains("over-tls")
            && output.contains("api GET /api/namespaces: 200"),
        "{output}\n{}",
        String::from_utf8_lossy(&followed.stderr)
    );

    // Without trusting the certificate, the CLI refuses the server.
    let untrusted = cli(&["namespace", "list"]);
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        stderr.contains("could not reach the Gofer server"),
        "{stderr}"
    );
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = gofer_command()
        .env(
            "GOFER_API_BASE_URL",
            format!("http://127.0.0.1:{}", address.port()),
        )
        .args(["namespace", "list"])
        .output()
        .unwrap();
    assert!(!plain.status.success());

    // A bad certificate path stops start-up, naming the file.
    let missing = dir.path().join("missing.pem").display().to_string();
    let stderr = crate::support::start_fails(
        &[],
        &[
            ("GOFER_SERVER__TLS_CERT", &missing),
            ("GOFER_SERVER__TLS_KEY", &key),
        ],
    );
    assert!(
        stderr.contains("could not read the TLS certificate") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}
