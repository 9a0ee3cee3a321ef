//! The S3-compatible object store (`objects.engine = "s3"`) against a real S3 API: moto's server
//! on loopback (scripts/moto.sh). Objects live in the bucket under the configured prefix, stream
//! both ways (multipart past one part), keep their limits, are replaced only by a complete upload,
//! reach tasks, and go with their pipeline; a bucket that cannot be used stops start-up.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    TestServer, deploy, gofer_command, moto, shell_task, start_fails, start_run, task_log,
    wait_for_run,
};

fn objects(pipeline: &str) -> String {
    format!("/api/namespaces/default/pipelines/{pipeline}/objects")
}

/// A body of `size` bytes, patterned so a misplaced part would show.
fn patterned(size: usize, seed: u8) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8 ^ seed).collect()
}

#[tokio::test]
async fn objects_live_in_the_bucket_and_are_replaced_only_by_complete_uploads() {
    let moto = moto();
    let bucket = "gofer-s3-store";
    moto.create_bucket(bucket);
    let mut env = moto.settings(bucket, "team/prod");
    env.push(("GOFER_OBJECTS__MAX_OBJECT_SIZE_MB".into(), "24".into()));
    env.push(("GOFER_OBJECTS__RUN_OBJECT_EXPIRY".into(), "5".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut server = TestServer::start_with_env(&env).await;
    let api = server.client();
    let url = |path: &str| format!("{}{path}", server.base_url());
    let mut show = shell_task("show", "echo \"config: $CONFIG\"", json!({}));
    show["variables"] = json!({"CONFIG": "pipeline_object{{settings}}"});
    deploy(
        &api,
        json!({"id": "keeper", "name": "keeper", "tasks": [show]}),
    )
    .await;

    // 20 MiB goes up in parts and comes back unchanged.
    let big = patterned(20 * 1024 * 1024, 7);
    let (status, body) = api
        .upload(&format!("{}/big", objects("keeper")), &big)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let big_object = format!("{}/big", objects("keeper"));
    assert_eq!(
        api.download(&big_object).await,
        (StatusCode::OK, big.clone())
    );
    // The contents are in the bucket under the prefix, and not on the server's disk.
    let keys = moto.keys(bucket, "team/prod/").await;
    assert_eq!(
        keys,
        [format!("team/prod/pipeline/default/keeper/{}", hex("big"))]
    );
    assert!(!server.data_dir.join("objects").exists());

    // Larger than the limit (24 MiB): refused, and the object is untouched, no upload left open.
    // Each refused upload on its own connection: the server closes it, and it must not go back
    // to the pool the other requests use.
    let replace_on_own_connection = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
            .post(url(&format!("{big_object}?force=true")))
            .header("gofer-api-version", "v0")
    };
    let oversized = replace_on_own_connection()
        .body(patterned(30 * 1024 * 1024, 9))
        .send()
        .await;
    if let Ok(response) = oversized {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    // A client that fails after 12 MiB (a part is already up): the object is untouched too.
    let failing = futures_util::stream::iter([
        Ok(Bytes::from(patterned(12 * 1024 * 1024, 3))),
        Err(std::io::Error::other("the client gave up")),
    ]);
    let cut = replace_on_own_connection()
        .body(reqwest::Body::wrap_stream(failing))
        .send()
        .await;
    assert!(
        cut.as_ref()
            .map_or(true, |response| !response.status().is_success()),
        "{cut:?}"
    );
    // The server notices the cut connection a moment later; then no upload may be left open.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while moto.unfinished_uploads(bucket).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a refused upload was left unfinished in the bucket"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        api.download(&big_object).await,
        (StatusCode::OK, big.clone())
    );

    // A small object replaces in one request and reaches a task through interpolation.
    let (status, _) = api
        .upload(&format!("{}/settings", objects("keeper")), b"mode=fast")
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let run_id = start_run(&api, "keeper", json!({})).await;
    let run = wait_for_run(&api, "keeper", run_id, 60).await;
    assert_eq!(run["status"], "successful", "{run}");
    assert!(
        task_log(&api, "keeper", run_id, "show")
            .await
            .contains("config: mode=fast")
    );
    // Run and plugin objects too.
    let run_object = format!("/api/namespaces/default/pipelines/keeper/runs/{run_id}/objects/note");
    let (status, _) = api.upload(&run_object, b"from the run").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api
        .upload("/api/extensions/interval/objects/state", b"42")
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut keys = moto.keys(bucket, "team/prod/").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("team/prod/pipeline/default/keeper/{}", hex("big")),
            format!("team/prod/pipeline/default/keeper/{}", hex("settings")),
            format!("team/prod/plugin/interval/{}", hex("state")),
            format!("team/prod/run/default/keeper/{run_id}/{}", hex("note")),
        ]
    );

    // A restarted server reads what the bucket holds.
    server.restart().await;
    let api = server.client();
    assert_eq!(
        api.download(&run_object).await,
        (StatusCode::OK, b"from the run".to_vec())
    );
    assert_eq!(api.download(&big_object).await, (StatusCode::OK, big));

    // A backup copies the databases and names the bucket its objects stay in.
    let place = tempfile::tempdir().unwrap();
    let taken = gofer_command()
        .envs(env.iter().copied())
        .args(["service", "backup"])
        .arg(place.path().join("backup"))
        .arg("--data-dir")
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(taken.status.success(), "{taken:?}");
    assert!(
        String::from_utf8_lossy(&taken.stdout)
            .contains("Objects stay in s3://gofer-s3-store/team/prod"),
        "{taken:?}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(place.path().join("backup/BACKUP.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["objects_bucket"], "s3://gofer-s3-store/team/prod");

    // Deleting an object, then the pipeline, empties the bucket of them.
    let (status, _) = api.delete(&format!("{}/settings", objects("keeper"))).await;
    assert!(status.is_success(), "{status}");
    assert!(
        !moto
            .keys(bucket, "team/prod/pipeline/")
            .await
            .contains(&format!(
                "team/prod/pipeline/default/keeper/{}",
                hex("settings")
            ))
    );
    let (status, body) = api.delete("/api/namespaces/default/pipelines/keeper").await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(
        moto.keys(bucket, "team/prod/").await,
        [format!("team/prod/plugin/interval/{}", hex("state"))]
    );
}

/// An object key's name in the store: its bytes in hex.
fn hex(key: &str) -> String {
    key.bytes().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn a_bucket_that_cannot_be_used_stops_start_up_naming_it() {
    let moto = moto();
    let settings = |bucket: &str, endpoint: &str| {
        let mut settings = moto.settings(bucket, "");
        settings.retain(|(key, _)| key != "GOFER_OBJECTS__S3__ENDPOINT");
        settings.push(("GOFER_OBJECTS__S3__ENDPOINT".into(), endpoint.into()));
        settings
    };
    let refused = |settings: Vec<(String, String)>| {
        let env: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        start_fails(&[], &env)
    };
    // No server at the endpoint.
    let nowhere = format!("http://{}", crate::support::free_address());
    let stderr = refused(settings("gofer-s3-anything", &nowhere));
    assert!(
        stderr.contains("objects.s3") && stderr.contains(&nowhere),
        "{stderr}"
    );
    // A bucket that does not exist.
    let stderr = refused(settings("gofer-s3-missing", &moto.endpoint));
    assert!(
        stderr.contains("objects.s3") && stderr.contains("'gofer-s3-missing'"),
        "{stderr}"
    );
    // Settings that cannot be right, named by key before anything is contacted.
    for (key, value, expected) in [
        (
            "GOFER_OBJECTS__S3__BUCKET",
            "",
            "objects.s3.bucket: required",
        ),
        (
            "GOFER_OBJECTS__S3__BUCKET",
            "Not_A_Bucket",
            "objects.s3.bucket: 'Not_A_Bucket'",
        ),
        (
            "GOFER_OBJECTS__S3__ENDPOINT",
            "127.0.0.1:9000",
            "objects.s3.endpoint",
        ),
        ("GOFER_OBJECTS__S3__PREFIX", "a/../b", "objects.s3.prefix"),
        (
            "GOFER_OBJECTS__S3__SECRET_ACCESS_KEY",
            "",
            "objects.s3.access_key_id and objects.s3.secret_access_key",
        ),
    ] {
        let mut settings = settings("gofer-s3-anything", &moto.endpoint);
        settings.retain(|(name, _)| name != key);
        settings.push((key.into(), value.into()));
        let stderr = refused(settings);
        assert!(stderr.contains(expected), "{key}={value}: {stderr}");
    }
    // No keys for an S3-compatible endpoint: said, rather than asking for an AWS instance role.
    let mut keyless = settings("gofer-s3-anything", &moto.endpoint);
    keyless.retain(|(name, _)| !name.ends_with("_KEY_ID") && !name.ends_with("ACCESS_KEY"));
    let stderr = refused(keyless);
    assert!(
        stderr.contains("access_key_id and secret_access_key: required for the endpoint"),
        "{stderr}"
    );
}
