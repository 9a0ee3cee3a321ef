//! Pipelines in Rust: builders for a pipeline and its tasks, the checks the server runs, and the
//! JSON that `gofer pipeline create PATH` registers (what [`Pipeline::finish`] prints).
//!
//! The JSON is the same as the Go SDK's (`gofer.dev/sdk/config`) for the same pipeline, and Gofer
//! v0's for pipelines that use only v0 features; Gofer's additions (shared tasks, timeouts,
//! retries, declared triggers) appear only when used. Must not talk to a server: a pipeline
//! program only prints.
//!
//! ```
//! use gofer_sdk::config::{Pipeline, RequiredParentStatus, Task};
//!
//! let pipeline = Pipeline::new("my-pipeline", "My pipeline")
//!     .description("Builds and tests")
//!     .tasks(vec![
//!         Task::new("build", "golang:1.19").script("go build ./..."),
//!         Task::new("test", "golang:1.19")
//!             .script("go test ./...")
//!             .depends_on("build", RequiredParentStatus::Success),
//!     ]);
//! pipeline.validate().unwrap();
//! // In a pipeline program: `pipeline.finish()?` prints the JSON.
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

use serde::Serialize;

/// The most retries a task may ask for.
pub const MAX_RETRIES: u32 = 10;

/// Why a pipeline is not valid; each message names what is wrong and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid {what} '{id}': {problem}")]
    InvalidId {
        what: &'static str,
        id: String,
        problem: &'static str,
    },
    #[error("parallelism must be 0 (server default) or more, got {0}")]
    NegativeParallelism(i64),
    #[error("pipeline '{0}' has no tasks; a pipeline needs at least one task")]
    NoTasks(String),
    #[error("task '{0}' is defined more than once")]
    DuplicateTask(String),
    #[error("task '{task}' depends on '{parent}', which is not a task of this pipeline")]
    UnknownDependency { task: String, parent: String },
    #[error("the tasks form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("task '{0}' has no image; a task needs a container image or a shared-task plugin")]
    MissingImage(String),
    #[error(
        "task '{0}' names both an image and a plugin; a task is either a container or a shared task"
    )]
    ImageAndPlugin(String),
    #[error("task '{task}' asks for {retries} retries; at most {MAX_RETRIES} are allowed")]
    TooManyRetries { task: String, retries: u32 },
    #[error("trigger '{1}' of plugin '{0}' is declared more than once")]
    DuplicateTrigger(String, String),
    #[error("could not print the pipeline: {0}")]
    Output(String),
}

/// What a parent task must end as for its child to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RequiredParentStatus {
    /// The parent finished, whatever its result (successful, failed or skipped).
    Any,
    /// The parent succeeded.
    Success,
    /// The parent failed.
    Failure,
}

/// The login for a private image registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryAuth {
    pub user: String,
    pub pass: String,
}

/// One task: a container, or a shared task run by a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[must_use]
pub struct Task {
    pub id: String,
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image: String,
    pub registry_auth: Option<RegistryAuth>,
    pub depends_on: BTreeMap<String, RequiredParentStatus>,
    pub variables: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub inject_api_token: bool,
    pub always_pull_newest_image: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub plugin: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_failed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub workspace: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
}

/// CPU and memory limits of a container task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

// A pipeline is compared as a value; a CPU count is never NaN (the server refuses it).
impl Eq for Resources {}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl Task {
    /// A task that runs a container image.
    pub fn new(id: &str, image: &str) -> Self {
        Self {
            id: id.into(),
            description: String::new(),
            image: image.into(),
            registry_auth: None,
            depends_on: BTreeMap::new(),
            variables: BTreeMap::new(),
            entrypoint: None,
            command: None,
            inject_api_token: false,
            always_pull_newest_image: false,
            plugin: String::new(),
            settings: BTreeMap::new(),
            timeout: None,
            retries: 0,
            keep_failed: None,
            resources: None,
            workspace: false,
            placement: Vec::new(),
        }
    }

    /// A task run by a shared-task plugin (e.g. `http-request`) instead of a container.
    pub fn shared(id: &str, plugin: &str) -> Self {
        Self {
            plugin: plugin.into(),
            ..Self::new(id, "")
        }
    }

    pub fn description(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }

    /// The login for the image's private registry.
    pub fn registry_auth(mut self, user: &str, pass: &str) -> Self {
        self.registry_auth = Some(RegistryAuth {
            user: user.into(),
            pass: pass.into(),
        });
        self
    }

    /// Waits for a parent, and runs only if the parent ends as required.
    pub fn depends_on(mut self, task_id: &str, status: RequiredParentStatus) -> Self {
        self.depends_on.insert(task_id.into(), status);
        self
    }

    /// Adds several parents at once.
    pub fn depends_on_many(mut self, parents: HashMap<String, RequiredParentStatus>) -> Self {
        self.depends_on.extend(parents);
        self
    }

    /// Adds environment variables (values may be secrets or objects, see [`pipeline_secret`]).
    pub fn variables<K: Into<String>, V: Into<String>>(
        mut self,
        variables: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.variables.extend(
            variables
                .into_iter()
                .map(|(key, value)| (key.into(), value.into())),
        );
        self
    }

    /// Adds one environment variable.
    pub fn variable(mut self, key: &str, value: &str) -> Self {
        self.variables.insert(key.into(), value.into());
        self
    }

    /// Replaces the image's entrypoint.
    pub fn entrypoint(mut self, entrypoint: Vec<String>) -> Self {
        self.entrypoint = Some(entrypoint);
        self
    }

    /// Replaces the image's command.
    pub fn command(mut self, command: Vec<String>) -> Self {
        self.command = Some(command);
        self
    }

    /// Runs a shell script in the container (the command becomes `/bin/sh -c SCRIPT`).
    pub fn script(self, script: &str) -> Self {
        self.command(vec!["/bin/sh".into(), "-c".into(), script.trim().into()])
    }

    /// Gives the task a token for the Gofer API, valid while the run lasts.
    pub fn inject_api_token(mut self, inject: bool) -> Self {
        self.inject_api_token = inject;
        self
    }

    /// Pulls the image before every run, even when it is present.
    pub fn always_pull_newest_image(mut self, pull: bool) -> Self {
        self.always_pull_newest_image = pull;
        self
    }

    /// Sets one setting of a shared task.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// The longest the task may run; past it the task fails with reason `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(format_duration(timeout));
        self
    }

    /// Keeps the container of a failed last attempt this long (at most 7 days), so that
    /// `gofer task shell` can open a shell in its filesystem. Overrides the pipeline's.
    pub fn keep_failed(mut self, keep: Duration) -> Self {
        self.keep_failed = Some(format_duration(keep));
        self
    }

    /// How many more times to try the task after it fails (0 to 10).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Mounts the run's workspace at `/gofer/workspace` (also in `GOFER_WORKSPACE`): one volume
    /// shared by the run's tasks that ask for it, removed when the run ends.
    pub fn workspace(mut self) -> Self {
        self.workspace = true;
        self
    }

    /// Where a cluster engine may run the container: a Swarm placement constraint such as
    /// `node.labels.gpu == true` (all must hold; single-host engines ignore them).
    pub fn placement(mut self, constraint: &str) -> Self {
        self.placement.push(constraint.into());
        self
    }

    /// The CPUs the container may use, e.g. `0.5`.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.resources
            .get_or_insert(Resources {
                cpus: None,
                memory: None,
            })
            .cpus = Some(cpus);
        self
    }

    /// The memory the container may use, e.g. `"256m"` or `"1g"`; past it the task is killed
    /// and fails saying so.
    pub fn memory(mut self, memory: &str) -> Self {
        self.resources
            .get_or_insert(Resources {
                cpus: None,
                memory: None,
            })
            .memory = Some(memory.into());
        self
    }
}

/// A subscription to a trigger plugin that deploying the pipeline sets up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[must_use]
pub struct Trigger {
    pub plugin: String,
    pub id: String,
    pub settings: BTreeMap<String, String>,
}

impl Trigger {
    /// Declares a subscription to `plugin` (e.g. `interval`, `cron`), labelled `id`.
    pub fn new(plugin: &str, id: &str) -> Self {
        Self {
            plugin: plugin.into(),
            id: id.into(),
            settings: BTreeMap::new(),
        }
    }

    /// Sets one setting (e.g. `every` = `1h` for `interval`).
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }
}

/// A whole pipeline config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[must_use]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub description: String,
    pub parallelism: i64,
    pub tasks: Vec<Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_failed: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
}

impl Pipeline {
    /// Starts a pipeline. The id is 3 to 32 characters of `[a-zA-Z0-9-]`.
    pub fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            parallelism: 0,
            tasks: Vec::new(),
            timeout: None,
            keep_failed: None,
            triggers: Vec::new(),
            placement: Vec::new(),
        }
    }

    pub fn description(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }

    /// Caps how many runs of the pipeline run at once; 0 is the server's default.
    pub fn parallelism(mut self, parallelism: i64) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Adds tasks (in any order; dependencies decide the order of execution).
    pub fn tasks(mut self, tasks: Vec<Task>) -> Self {
        self.tasks.extend(tasks);
        self
    }

    /// The longest a run may take; past it the run fails with reason `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(format_duration(timeout));
        self
    }

    /// Keeps failed container tasks' filesystems this long (at most 7 days) for
    /// `gofer task shell`, unless a task says otherwise.
    pub fn keep_failed(mut self, keep: Duration) -> Self {
        self.keep_failed = Some(format_duration(keep));
        self
    }

    /// A placement constraint for every container task (before each task's own), e.g.
    /// `node.labels.zone == eu`.
    pub fn placement(mut self, constraint: &str) -> Self {
        self.placement.push(constraint.into());
        self
    }

    /// Declares subscriptions that deploying the pipeline sets up.
    pub fn triggers(mut self, triggers: Vec<Trigger>) -> Self {
        self.triggers.extend(triggers);
        self
    }

    /// Checks what the server checks: identifiers, the task graph (no duplicate ids, no unknown
    /// dependencies, no cycles) and every task.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_identifier("pipeline id", &self.id)?;
        if self.parallelism < 0 {
            return Err(ConfigError::NegativeParallelism(self.parallelism));
        }
        if self.tasks.is_empty() {
            return Err(ConfigError::NoTasks(self.id.clone()));
        }
        let mut tasks: BTreeMap<&str, &Task> = BTreeMap::new();
        for task in &self.tasks {
            validate_identifier("task id", &task.id)?;
            if tasks.insert(&task.id, task).is_some() {
                return Err(ConfigError::DuplicateTask(task.id.clone()));
            }
            match (task.image.is_empty(), task.plugin.is_empty()) {
                (true, true) => return Err(ConfigError::MissingImage(task.id.clone())),
                (false, false) => return Err(ConfigError::ImageAndPlugin(task.id.clone())),
                _ => {}
            }
            if task.retries > MAX_RETRIES {
                return Err(ConfigError::TooManyRetries {
                    task: task.id.clone(),
                    retries: task.retries,
                });
            }
        }
        for task in &self.tasks {
            if let Some(parent) = task
                .depends_on
                .keys()
                .find(|parent| !tasks.contains_key(parent.as_str()))
            {
                return Err(ConfigError::UnknownDependency {
                    task: task.id.clone(),
                    parent: parent.clone(),
                });
            }
        }
        let graph: Vec<(&str, Vec<&str>)> = self
            .tasks
            .iter()
            .map(|task| {
                let parents = task.depends_on.keys().map(String::as_str).collect();
                (task.id.as_str(), parents)
            })
            .collect();
        if let Some(cycle) = crate::rules::find_cycle(&graph) {
            return Err(ConfigError::Cycle(cycle));
        }
        let mut triggers = BTreeSet::new();
        for trigger in &self.triggers {
            validate_identifier("trigger id", &trigger.id)?;
            if !triggers.insert((&trigger.plugin, &trigger.id)) {
                return Err(ConfigError::DuplicateTrigger(
                    trigger.plugin.clone(),
                    trigger.id.clone(),
                ));
            }
        }
        Ok(())
    }

    /// The pipeline as JSON (after validating it).
    pub fn to_json(&self) -> Result<String, ConfigError> {
        self.validate()?;
        serde_json::to_string(self).map_err(|error| ConfigError::Output(error.to_string()))
    }

    /// Validates the pipeline and prints it as JSON on stdout, for `gofer pipeline create`.
    pub fn finish(&self) -> Result<(), ConfigError> {
        let json = self.to_json()?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{json}")
            .and_then(|()| stdout.flush())
            .map_err(|error| ConfigError::Output(error.to_string()))
    }
}

/// A variable value replaced at launch by the pipeline's secret `key`.
pub fn pipeline_secret(key: &str) -> String {
    format!("pipeline_secret{{{{{key}}}}}")
}

/// A variable value replaced at launch by the global secret `key`.
pub fn global_secret(key: &str) -> String {
    format!("global_secret{{{{{key}}}}}")
}

/// A variable value replaced at launch by the pipeline's object `key`.
pub fn pipeline_object(key: &str) -> String {
    format!("pipeline_object{{{{{key}}}}}")
}

/// A variable value replaced at launch by the run's object `key`.
pub fn run_object(key: &str) -> String {
    format!("run_object{{{{{key}}}}}")
}

/// Writes a duration the server reads (`90s`, `1500ms`).
fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

fn validate_identifier(what: &'static str, id: &str) -> Result<(), ConfigError> {
    match crate::rules::identifier_problem(id) {
        Some(problem) => Err(ConfigError::InvalidId {
            what,
            id: id.into(),
            problem,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Task {
        Task::new(id, "busybox")
    }

    fn refused(pipeline: Pipeline) -> String {
        pipeline
            .validate()
            .expect_err("the pipeline should be refused")
            .to_string()
    }

    #[test]
    fn validation_names_what_is_wrong() {
        use RequiredParentStatus::{Any, Failure, Success};
        let cases = [
            (
                Pipeline::new("no", "x").tasks(vec![task("aaa")]),
                "invalid pipeline id 'no': length cannot be less than 3",
            ),
            (
                Pipeline::new("my_pipeline", "x").tasks(vec![task("aaa")]),
                "alphanumeric and hyphen",
            ),
            (Pipeline::new("empty", "x"), "has no tasks"),
            (
                Pipeline::new("dupes", "x").tasks(vec![task("aaa"), task("aaa")]),
                "task 'aaa' is defined more than once",
            ),
            (
                Pipeline::new("unknown", "x").tasks(vec![task("aaa").depends_on("ghost", Any)]),
                "task 'aaa' depends on 'ghost', which is not a task of this pipeline",
            ),
            (
                Pipeline::new("cycle", "x").tasks(vec![
                    task("aaa").depends_on("ccc", Any),
                    task("bbb").depends_on("aaa", Success),
                    task("ccc").depends_on("bbb", Failure),
                ]),
                "the tasks form a cycle: aaa -> ccc -> bbb -> aaa",
            ),
            (
                Pipeline::new("self", "x").tasks(vec![task("aaa").depends_on("aaa", Any)]),
                "cycle: aaa -> aaa",
            ),
            (
                Pipeline::new("noimage", "x").tasks(vec![Task::new("aaa", "")]),
                "task 'aaa' has no image",
            ),
            (
                Pipeline::new("retries", "x").tasks(vec![task("aaa").retries(11)]),
                "at most 10 are allowed",
            ),
            (
                Pipeline::new("triggers", "x")
                    .tasks(vec![task("aaa")])
                    .triggers(vec![
                        Trigger::new("interval", "hourly"),
                        Trigger::new("interval", "hourly"),
                    ]),
                "trigger 'hourly' of plugin 'interval' is declared more than once",
            ),
        ];
        for (pipeline, expected) in cases {
            let error = refused(pipeline);
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        }
        let mut both = Task::shared("aaa", "debug");
        both.image = "busybox".into();
        assert!(refused(Pipeline::new("both", "x").tasks(vec![both])).contains("both an image"));
        Pipeline::new("fine", "Fine")
            .tasks(vec![task("aaa"), task("bbb").depends_on("aaa", Any)])
            .validate()
            .unwrap();
    }

    /// The same JSON as the Go SDK's (and Gofer v0's Go SDK) for a v0-only pipeline.
    #[test]
    fn json_matches_the_go_sdk() {
        let pipeline = Pipeline::new("dag", "Dag Test Pipeline")
            .description("a dag")
            .tasks(vec![
                Task::new("first-task", "busybox")
                    .variables([("WAIT_DURATION", "20s")])
                    .always_pull_newest_image(true),
                Task::new("depends-on-first", "busybox")
                    .depends_on("first-task", RequiredParentStatus::Success)
                    .variable("TOKEN", &pipeline_secret("token"))
                    .script("  echo hi \n"),
            ]);
        let expected = concat!(
            r#"{"id":"dag","name":"Dag Test Pipeline","description":"a dag","parallelism":0,"tasks":["#,
            r#"{"id":"first-task","description":"","image":"busybox","registry_auth":null,"depends_on":{},"variables":{"WAIT_DURATION":"20s"},"entrypoint":null,"command":null,"inject_api_token":false,"always_pull_newest_image":true},"#,
            r#"{"id":"depends-on-first","description":"","image":"busybox","registry_auth":null,"depends_on":{"first-task":"Success"},"variables":{"TOKEN":"pipeline_secret{{token}}"},"entrypoint":null,"command":["/bin/sh","-c","echo hi"],"inject_api_token":false,"always_pull_newest_image":false}]}"#
        );
        assert_eq!(pipeline.to_json().unwrap(), expected);
    }

    #[test]
    fn gofer_additions_appear_only_when_used() {
        let json = Pipeline::new("extras", "Extras")
            .timeout(Duration::from_secs(1800))
            .keep_failed(Duration::from_secs(3600))
            .triggers(vec![
                Trigger::new("interval", "hourly").setting("every", "1h"),
            ])
            .placement("node.role == worker")
            .tasks(vec![
                Task::shared("call", "http-request")
                    .setting("url", "http://example.com")
                    .timeout(Duration::from_millis(1500))
                    .retries(2),
                Task::new("build", "busybox")
                    .keep_failed(Duration::from_secs(600))
                    .cpus(0.5)
                    .memory("256m")
                    .workspace()
                    .placement("node.labels.gpu == true"),
            ])
            .to_json()
            .unwrap();
        for expected in [
            r#""timeout":"1800s","keep_failed":"3600s""#,
            r#""keep_failed":"600s","resources":{"cpus":0.5,"memory":"256m"},"workspace":true,"placement":["node.labels.gpu == true"]"#,
            r#""placement":["node.role == worker"]}"#,
            r#""triggers":[{"plugin":"interval","id":"hourly","settings":{"every":"1h"}}]"#,
            r#""plugin":"http-request","settings":{"url":"http://example.com"},"timeout":"1500ms","retries":2"#,
        ] {
            assert!(json.contains(expected), "{expected} is missing from {json}");
        }
        assert!(
            !json.contains(r#""id":"call","description":"","image""#),
            "a shared task has no image: {json}"
        );
    }
}
