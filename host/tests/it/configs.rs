//! Config registration, validation, deployment and deletion.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, assert_error, register, sdk_config, sdk_task};

const CONFIGS: &str = "/api/namespaces/default/pipelines/simple/configs";

#[tokio::test]
async fn register_deploy_list_gives_the_v0_shapes() {
    let server = TestServer::start().await;
    let api = server.client();
    let mut task = sdk_task("simple-task", json!({}));
    task["registry_auth"] = json!({"user": "robot", "pass": "hunter2"});
    let config = sdk_config(
        "simple",
        json!([task, sdk_task("after", json!({"simple-task": "Success"}))]),
    );

    let (status, body) = api.post(CONFIGS, json!({ "config": config })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let metadata = &body["pipeline"]["metadata"];
    assert_eq!(metadata["state"], "active");
    assert_eq!(metadata["pipeline_id"], "simple");
    let stored = &body["pipeline"]["config"];
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["state"], "unreleased");
    assert_eq!(stored["description"], "");
    assert_eq!(stored["deprecated"], 0);
    assert_eq!(stored["parallelism"], 0);
    let expected_task = json!({
        "id": "simple-task", "description": "", "image": "busybox:latest",
        "registry_auth": {"user": "robot", "pass": "[redacted]"},
        "depends_on": {},
        "variables": [{"key": "GREETING", "value": "hello", "source": "pipeline_config"}],
        "entrypoint": null, "command": ["echo", "hi"],
        "inject_api_token": false, "always_pull_newest_image": false
    });
    assert_eq!(stored["tasks"]["simple-task"], expected_task);
    assert_eq!(
        stored["tasks"]["after"]["depends_on"],
        json!({"simple-task": "success"})
    );
    let mut keys: Vec<&str> = stored
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "deprecated",
            "description",
            "name",
            "namespace_id",
            "parallelism",
            "pipeline_id",
            "registered",
            "state",
            "tasks",
            "version"
        ]
    );

    // The registry password never comes back, from any endpoint.
    for path in [format!("{CONFIGS}/1"), CONFIGS.to_string()] {
        let (_, body) = api.get(&path).await;
        assert!(
            !body.to_string().contains("hunter2"),
            "{path} leaked the password: {body}"
        );
    }

    let (status, deployed) = api.post_empty(&format!("{CONFIGS}/1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        without_times(&deployed["deployment"]),
        json!({"namespace_id": "default", "pipeline_id": "simple", "deployment_id": 1,
               "start_version": 1, "end_version": 1, "state": "Complete", "status": "Successful",
               "status_reason": null, "logs": [], "kind": "switch"})
    );
    assert!(
        deployed["deployment"]["ended"].as_u64().unwrap()
            >= deployed["deployment"]["started"].as_u64().unwrap()
    );

    // Version 2, deployed: 1 becomes deprecated.
    assert_eq!(register(&api, "default", config.clone()).await, 2);
    let (_, deployed) = api.post_empty(&format!("{CONFIGS}/2")).await;
    assert_eq!(deployed["deployment"]["deployment_id"], 2);
    assert_eq!(deployed["deployment"]["start_version"], 1);
    assert_eq!(deployed["deployment"]["end_version"], 2);

    let (_, list) = api.get(CONFIGS).await;
    let states: Vec<(u64, &str)> = list["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["version"].as_u64().unwrap(), c["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(2, "live"), (1, "deprecated")]);
    assert!(list["configs"][1]["deprecated"].as_u64().unwrap() > 0);

    // Rollback: deploying 1 again makes it live and deprecates 2.
    api.post_empty(&format!("{CONFIGS}/1")).await;
    assert_eq!(
        api.get(&format!("{CONFIGS}/1")).await.1["config"]["state"],
        "live"
    );
    assert_eq!(
        api.get(&format!("{CONFIGS}/2")).await.1["config"]["state"],
        "deprecated"
    );
    assert_eq!(
        api.get(&format!("{CONFIGS}/0")).await.1["config"]["version"],
        2,
        "0 means latest"
    );

    let (_, deployments) = api
        .get("/api/namespaces/default/pipelines/simple/deployments")
        .await;
    let transitions: Vec<(u64, u64)> = deployments["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["start_version"].as_u64().unwrap(),
                d["end_version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(transitions, [(1, 1), (1, 2), (2, 1)]);
    let (status, one) = api
        .get("/api/namespaces/default/pipelines/simple/deployments/3")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["deployment"]["end_version"], 1);
    assert_error(
        &api.get("/api/namespaces/default/pipelines/simple/deployments/9")
            .await,
        StatusCode::NOT_FOUND,
        "deployment 9",
    );

    // Events of the flow, in order.
    let (_, events) = api.get("/api/events").await;
    let kinds: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["kind"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "created_namespace",
            "created_pipeline",
            "registered_pipeline_config",
            "started_deployment",
            "completed_deployment",
            "registered_pipeline_config",
            "started_deployment",
            "completed_deployment",
            "started_deployment",
            "completed_deployment"
        ]
    );
    let event = &events["events"][3];
    assert_eq!(
        event["kind"]["started_deployment"],
        json!({"namespace_id": "default", "pipeline_id": "simple", "start_version": 1, "end_version": 1})
    );
    assert!(event["id"].as_str().unwrap().len() == 36);
}

fn without_times(value: &Value) -> Value {
    let mut value = value.clone();
    let object = value.as_object_mut().unwrap();
    object.remove("started");
    object.remove("ended");
    value
}

#[tokio::test]
async fn invalid_configs_are_refused_naming_the_task() {
    let server = TestServer::start().await;
    let api = server.client();
    let cases: Vec<(Value, &str)> = vec![
        (
            sdk_config(
                "simple",
                json!([
                    sdk_task("aaa", json!({"bbb": "Any"})),
                    sdk_task("bbb", json!({"aaa": "any"}))
                ]),
            ),
            "the tasks form a cycle: aaa -> bbb -> aaa",
        ),
        (
            sdk_config(
                "simple",
                json!([sdk_task("self", json!({"self": "Success"}))]),
            ),
            "cycle: self -> self",
        ),
        (
            sdk_config("simple", json!([sdk_task("aaa", json!({"ghost": "Any"}))])),
            "task 'aaa' depends on 'ghost', which is not a task of this pipeline",
        ),
        (
            sdk_config(
                "simple",
                json!([sdk_task("twice", json!({})), sdk_task("twice", json!({}))]),
            ),
            "task 'twice' is defined more than once",
        ),
        (
            sdk_config("simple", json!([sdk_task("bad/id", json!({}))])),
            "invalid task id 'bad/id'",
        ),
        (
            sdk_config(
                "simple",
                json!([
                    sdk_task("aaa", json!({})),
                    sdk_task("bbb", json!({"aaa": "Sometimes"}))
                ]),
            ),
            "unknown variant `Sometimes`",
        ),
        (sdk_config("simple", json!([])), "no tasks"),
        (
            sdk_config("other", json!([sdk_task("aaa", json!({}))])),
            "does not match the pipeline id 'simple'",
        ),
        (
            sdk_config(
                "simple",
                json!([{"id": "noimage", "depends_on": {}, "variables": {}}]),
            ),
            "task 'noimage' has no image",
        ),
    ];
    for (config, message) in cases {
        let response = api.post(CONFIGS, json!({ "config": config })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, message);
    }
    let negative = api.post(CONFIGS, json!({"config": {"id": "simple", "name": "s", "parallelism": -1, "tasks": [sdk_task("aaa", json!({}))]}})).await;
    assert_error(&negative, StatusCode::BAD_REQUEST, "parallelism");
    let not_wrapped = api
        .post(
            CONFIGS,
            sdk_config("simple", json!([sdk_task("aaa", json!({}))])),
        )
        .await;
    assert_error(
        &not_wrapped,
        StatusCode::BAD_REQUEST,
        "invalid request body",
    );
    let bad_pipeline_id = api
        .post(
            "/api/namespaces/default/pipelines/x_y/configs",
            json!({"config": sdk_config("x_y", json!([sdk_task("aaa", json!({}))]))}),
        )
        .await;
    assert_error(
        &bad_pipeline_id,
        StatusCode::BAD_REQUEST,
        "invalid pipeline id 'x_y'",
    );
    let no_namespace = api
        .post(
            "/api/namespaces/ghost/pipelines/simple/configs",
            json!({"config": sdk_config("simple", json!([sdk_task("aaa", json!({}))]))}),
        )
        .await;
    assert_error(
        &no_namespace,
        StatusCode::NOT_FOUND,
        "namespace 'ghost' not found",
    );
    // Nothing was stored by any refused registration.
    assert_error(
        &api.get("/api/namespaces/default/pipelines/simple").await,
        StatusCode::NOT_FOUND,
        "not found",
    );
}

#[tokio::test]
async fn deploying_and_deleting_follow_the_rules() {
    let server = TestServer::start().await;
    let api = server.client();
    let config = sdk_config("simple", json!([sdk_task("aaa", json!({}))]));
    for _ in 0..3 {
        register(&api, "default", config.clone()).await;
    }
    assert_error(
        &api.post_empty(&format!("{CONFIGS}/7")).await,
        StatusCode::NOT_FOUND,
        "config version 7",
    );
    assert_error(
        &api.post_empty("/api/namespaces/default/pipelines/ghost/configs/1")
            .await,
        StatusCode::NOT_FOUND,
        "pipeline 'ghost'",
    );
    assert_eq!(
        api.post_empty(&format!("{CONFIGS}/2")).await.0,
        StatusCode::CREATED
    );
    // The failed deploy of version 7 did not deprecate anything.
    assert_eq!(
        api.get(&format!("{CONFIGS}/1")).await.1["config"]["state"],
        "unreleased"
    );

    assert_error(
        &api.delete(&format!("{CONFIGS}/3")).await,
        StatusCode::BAD_REQUEST,
        "it is the latest config version",
    );
    assert_error(
        &api.delete(&format!("{CONFIGS}/2")).await,
        StatusCode::BAD_REQUEST,
        "it is live",
    );
    assert_error(
        &api.delete(&format!("{CONFIGS}/9")).await,
        StatusCode::NOT_FOUND,
        "config version 9",
    );
    assert_eq!(
        api.delete(&format!("{CONFIGS}/1")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &api.get(&format!("{CONFIGS}/1")).await,
        StatusCode::NOT_FOUND,
        "config version 1",
    );
    // Versions are never reused.
    assert_eq!(register(&api, "default", config).await, 4);
    let (_, list) = api.get(&format!("{CONFIGS}?limit=2")).await;
    let versions: Vec<u64> = list["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [4, 3]);
}
