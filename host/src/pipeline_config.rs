//! The pipeline config a user registers (what the Go and Rust SDKs print) and its validation.
//!
//! Owns the input JSON shape (Gofer v0's `PipelineConfigInput`, tolerant of both `Any`/`any`
//! spellings and of null or missing optional fields), identifier rules, and the DAG checks the server
//! runs before anything is stored. Must not touch storage or HTTP: it turns input into a
//! [`PipelineConfig`] or an error naming the offending task.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::Timeout;
use crate::models::{
    ConfigState, DeclaredTrigger, PipelineConfig, RegistryAuth, RequiredParentStatus, Task,
    Variable, VariableSource,
};

/// Why a config (or an identifier) was refused. Each message names what is wrong and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid {what} '{id}': {problem}")]
    InvalidId {
        what: &'static str,
        id: String,
        problem: &'static str,
    },
    #[error("config id '{config_id}' does not match the pipeline id '{path_id}' in the URL")]
    IdMismatch { config_id: String, path_id: String },
    #[error("the config has no tasks; a pipeline needs at least one task")]
    NoTasks,
    #[error("task '{0}' is defined more than once")]
    DuplicateTask(String),
    #[error("task '{task}' depends on '{parent}', which is not a task of this pipeline")]
    UnknownDependency { task: String, parent: String },
    #[error(
        "task '{task}' depends on '{parent}' with status 'unknown'; use any, success or failure"
    )]
    UnknownParentStatus { task: String, parent: String },
    #[error("task '{0}' has no image; a task needs a container image or a shared-task plugin")]
    MissingImage(String),
    #[error(
        "task '{0}' names both an image and a plugin; a task is either a container or a shared task"
    )]
    ImageAndPlugin(String),
    #[error("task '{task}' has an invalid variable '{key}': {problem}")]
    InvalidVariable {
        task: String,
        key: String,
        problem: &'static str,
    },
    #[error("task '{task}' has invalid resources: {problem}")]
    InvalidResources { task: String, problem: String },
    #[error("{owner} has an invalid placement: {problem}")]
    InvalidPlacement { owner: String, problem: String },
    #[error("the tasks form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("parallelism must be 0 (server default) or more, got {0}")]
    NegativeParallelism(i64),
    #[error(
        "{owner} has an invalid timeout '{value}': {problem} (use e.g. \"90s\", \"5m\", \"1h 30m\")"
    )]
    InvalidTimeout {
        owner: String,
        value: String,
        problem: String,
    },
    #[error(
        "{owner} has an invalid keep_failed '{value}': {problem} (use e.g. \"30m\" or \"2h\", at most 7 days)"
    )]
    InvalidKeepFailed {
        owner: String,
        value: String,
        problem: String,
    },
    #[error("trigger '{1}' of plugin '{0}' is declared more than once")]
    DuplicateTrigger(String, String),
    #[error("task '{task}' asks for {retries} retries; at most {MAX_RETRIES} are allowed")]
    TooManyRetries { task: String, retries: u32 },
}

/// Most retries a task may ask for.
pub const MAX_RETRIES: u32 = 10;

/// Longest a failed task's container may be kept.
pub const MAX_KEEP_FAILED: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Parses a `keep_failed` duration of `owner`: above zero, at most [`MAX_KEEP_FAILED`].
pub fn parse_keep_failed(owner: &str, value: &str) -> Result<Timeout, ConfigError> {
    let problem = |problem: String| ConfigError::InvalidKeepFailed {
        owner: owner.to_string(),
        value: value.to_string(),
        problem,
    };
    let keep = Timeout::parse(value).map_err(problem)?;
    if keep.duration() > MAX_KEEP_FAILED {
        return Err(problem("it is longer than 7 days".into()));
    }
    Ok(keep)
}

/// Parses a timeout such as `"90s"` or `"5m"` of `owner`; zero is refused.
pub fn parse_timeout(owner: &str, value: &str) -> Result<Timeout, ConfigError> {
    Timeout::parse(value).map_err(|problem| ConfigError::InvalidTimeout {
        owner: owner.to_string(),
        value: value.to_string(),
        problem,
    })
}

/// What is wrong with an environment variable, or `None`: the name must be non-empty without
/// '=' or NUL, the value without NUL (an environment cannot hold them). For task variables and
/// run variables alike.
pub fn variable_problem(key: &str, value: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("it is empty")
    } else if key.contains('=') || key.contains('\0') {
        Some("it cannot contain '=' or NUL")
    } else if value.contains('\0') {
        Some("its value cannot contain NUL")
    } else {
        None
    }
}

/// Checks Gofer's identifier rule: 3 to 32 characters of `[a-zA-Z0-9-]`.
pub fn validate_identifier(what: &'static str, id: &str) -> Result<(), ConfigError> {
    match gofer_sdk::rules::identifier_problem(id) {
        Some(problem) => Err(ConfigError::InvalidId {
            what,
            id: id.to_string(),
            problem,
        }),
        None => Ok(()),
    }
}

/// The body of `POST .../configs`: `{"config": {...}}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RegisterPipelineConfigRequest)]
pub struct RegisterConfigRequest {
    pub config: PipelineConfigInput,
}

/// A pipeline config as printed by an SDK program.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Pipeline)]
pub struct PipelineConfigInput {
    /// Pipeline id; must equal the id in the URL.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Maximum concurrent runs; 0 or absent means the server's default.
    #[serde(default)]
    pub parallelism: i64,
    /// The tasks, in any order.
    pub tasks: Vec<TaskInput>,
    /// Longest a run may take, e.g. `"30m"`; a run past it fails with reason `timeout`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Keep a failed container task's filesystem this long (e.g. `"1h"`, at most 7 days) for
    /// `gofer task shell`; the default for tasks that do not say.
    #[serde(default)]
    pub keep_failed: Option<String>,
    /// Trigger subscriptions that deploying this config sets up.
    #[serde(default)]
    pub triggers: Vec<DeclaredTrigger>,
    /// Placement constraints for every container task (a cluster engine's, e.g.
    /// `node.labels.gpu == true`), before each task's own.
    #[serde(default)]
    pub placement: Vec<String>,
}

/// One task as printed by an SDK program.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Task2)]
pub struct TaskInput {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Container image to run.
    #[serde(default)]
    pub image: Option<String>,
    /// A shared-task plugin to run instead of a container.
    #[serde(default)]
    pub plugin: Option<String>,
    /// The shared task's settings.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub registry_auth: Option<RegistryAuth>,
    /// Parent task id → required status (`Any|any`, `Success|success`, `Failure|failure`).
    #[serde(default)]
    pub depends_on: HashMap<String, RequiredParentStatus>,
    /// Environment variables for the task.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub inject_api_token: bool,
    #[serde(default)]
    pub always_pull_newest_image: bool,
    /// Longest the task may run, e.g. `"90s"`; past it the task fails with reason `timeout`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// How many more times to try the task after it fails (0 to 10), with a growing pause.
    #[serde(default)]
    pub retries: u32,
    /// Keep the container of a failed last attempt this long (e.g. `"1h"`, at most 7 days) for
    /// `gofer task shell`; overrides the pipeline's `keep_failed`.
    #[serde(default)]
    pub keep_failed: Option<String>,
    /// CPU and memory limits of the task's container.
    #[serde(default)]
    pub resources: Option<crate::models::TaskResources>,
    /// Mount the run's workspace volume, shared by the run's tasks that ask for it.
    #[serde(default)]
    pub workspace: bool,
    /// Where a cluster engine may run the task: Swarm placement constraints, e.g.
    /// `node.labels.gpu == true` (all must hold); single-host engines run it on their host.
    #[serde(default)]
    pub placement: Vec<String>,
}

impl PipelineConfigInput {
    /// Validates ids, the DAG and every task, against the pipeline id from the URL.
    pub fn validate(&self, path_pipeline_id: &str) -> Result<(), ConfigError> {
        validate_identifier("pipeline id", &self.id)?;
        if self.id != path_pipeline_id {
            return Err(ConfigError::IdMismatch {
                config_id: self.id.clone(),
                path_id: path_pipeline_id.to_string(),
            });
        }
        if self.parallelism < 0 {
            return Err(ConfigError::NegativeParallelism(self.parallelism));
        }
        if self.tasks.is_empty() {
            return Err(ConfigError::NoTasks);
        }
        if let Some(timeout) = &self.timeout {
            parse_timeout(&format!("pipeline '{}'", self.id), timeout)?;
        }
        if let Some(keep) = &self.keep_failed {
            parse_keep_failed(&format!("pipeline '{}'", self.id), keep)?;
        }
        check_placement(&format!("pipeline '{}'", self.id), &self.placement)?;
        let mut triggers = HashSet::new();
        for trigger in &self.triggers {
            validate_identifier("trigger id", &trigger.id)?;
            if !triggers.insert((trigger.plugin.as_str(), trigger.id.as_str())) {
                return Err(ConfigError::DuplicateTrigger(
                    trigger.plugin.clone(),
                    trigger.id.clone(),
                ));
            }
        }
        let mut ids = HashSet::new();
        for task in &self.tasks {
            if let Some(problem) = gofer_sdk::rules::task_id_problem(&task.id) {
                return Err(ConfigError::InvalidId {
                    what: "task id",
                    id: task.id.clone(),
                    problem,
                });
            }
            if !ids.insert(task.id.as_str()) {
                return Err(ConfigError::DuplicateTask(task.id.clone()));
            }
        }
        for task in &self.tasks {
            task.validate(&ids)?;
        }
        let graph: Vec<(&str, Vec<&str>)> = self
            .tasks
            .iter()
            .map(|task| {
                let parents = task.depends_on.keys().map(String::as_str).collect();
                (task.id.as_str(), parents)
            })
            .collect();
        gofer_sdk::rules::find_cycle(&graph).map_or(Ok(()), |cycle| Err(ConfigError::Cycle(cycle)))
    }

    /// Turns a validated input into the stored form: tasks keyed by id, snake_case conditions,
    /// variables tagged `pipeline_config`, null descriptions as `""`, timeouts parsed.
    pub fn into_config(
        self,
        namespace_id: &str,
        version: u64,
        registered: u64,
    ) -> Result<PipelineConfig, ConfigError> {
        let timeout = self
            .timeout
            .as_deref()
            .map(|timeout| parse_timeout(&format!("pipeline '{}'", self.id), timeout))
            .transpose()?;
        let keep_failed = self
            .keep_failed
            .as_deref()
            .map(|keep| parse_keep_failed(&format!("pipeline '{}'", self.id), keep))
            .transpose()?;
        let tasks = self
            .tasks
            .into_iter()
            .map(|task| {
                let task = task.into_task(keep_failed.as_ref(), &self.placement)?;
                Ok((task.id.clone(), task))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(PipelineConfig {
            namespace_id: namespace_id.to_string(),
            pipeline_id: self.id,
            version,
            parallelism: self.parallelism.max(0) as u64,
            name: self.name,
            description: self.description.unwrap_or_default(),
            tasks,
            state: ConfigState::Unreleased,
            registered,
            deprecated: 0,
            timeout,
            triggers: self.triggers,
        })
    }
}

impl TaskInput {
    fn validate(&self, task_ids: &HashSet<&str>) -> Result<(), ConfigError> {
        let has_image = self
            .image
            .as_deref()
            .is_some_and(|image| !image.trim().is_empty());
        let has_plugin = self
            .plugin
            .as_deref()
            .is_some_and(|plugin| !plugin.trim().is_empty());
        match (has_image, has_plugin) {
            (false, false) => return Err(ConfigError::MissingImage(self.id.clone())),
            (true, true) => return Err(ConfigError::ImageAndPlugin(self.id.clone())),
            _ => {}
        }
        let mut parents: Vec<_> = self.depends_on.iter().collect();
        parents.sort();
        for (parent, status) in parents {
            if !task_ids.contains(parent.as_str()) {
                return Err(ConfigError::UnknownDependency {
                    task: self.id.clone(),
                    parent: parent.clone(),
                });
            }
            if *status == RequiredParentStatus::Unknown {
                return Err(ConfigError::UnknownParentStatus {
                    task: self.id.clone(),
                    parent: parent.clone(),
                });
            }
        }
        if let Some(timeout) = &self.timeout {
            parse_timeout(&format!("task '{}'", self.id), timeout)?;
        }
        if let Some(keep) = &self.keep_failed {
            parse_keep_failed(&format!("task '{}'", self.id), keep)?;
        }
        if self.workspace && self.plugin.is_some() {
            return Err(ConfigError::InvalidResources {
                task: self.id.clone(),
                problem: "a workspace is a volume of container tasks; a shared task has none"
                    .into(),
            });
        }
        if self.resources.is_some() && self.plugin.is_some() {
            return Err(ConfigError::InvalidResources {
                task: self.id.clone(),
                problem:
                    "they apply to container tasks; a shared task has the server's plugin limits"
                        .into(),
            });
        }
        if !self.placement.is_empty() && self.plugin.is_some() {
            return Err(ConfigError::InvalidPlacement {
                owner: format!("task '{}'", self.id),
                problem: "placement is for container tasks; a shared task runs in the server"
                    .into(),
            });
        }
        check_placement(&format!("task '{}'", self.id), &self.placement)?;
        if let Some(problem) = self.resources.as_ref().and_then(|r| r.problem()) {
            return Err(ConfigError::InvalidResources {
                task: self.id.clone(),
                problem,
            });
        }
        if self.retries > MAX_RETRIES {
            return Err(ConfigError::TooManyRetries {
                task: self.id.clone(),
                retries: self.retries,
            });
        }
        for (key, value) in &self.variables {
            if let Some(problem) = variable_problem(key, value) {
                return Err(ConfigError::InvalidVariable {
                    task: self.id.clone(),
                    key: key.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }

    /// The stored task; `keep_failed` is the pipeline's default for it, and a container task's
    /// placement starts with the pipeline's.
    fn into_task(
        self,
        keep_failed: Option<&Timeout>,
        pipeline_placement: &[String],
    ) -> Result<Task, ConfigError> {
        let mut placement = Vec::new();
        if self.plugin.is_none() {
            for constraint in pipeline_placement.iter().chain(&self.placement) {
                let constraint = constraint.trim().to_string();
                if !placement.contains(&constraint) {
                    placement.push(constraint);
                }
            }
        }
        let timeout = self
            .timeout
            .as_deref()
            .map(|timeout| parse_timeout(&format!("task '{}'", self.id), timeout))
            .transpose()?;
        let keep_failed = match self.keep_failed.as_deref() {
            Some(keep) => Some(parse_keep_failed(&format!("task '{}'", self.id), keep)?),
            None => keep_failed.cloned(),
        };
        Ok(Task {
            id: self.id,
            description: self.description.unwrap_or_default(),
            image: self.image.unwrap_or_default(),
            plugin: self.plugin.filter(|plugin| !plugin.trim().is_empty()),
            settings: self.settings,
            registry_auth: self.registry_auth,
            depends_on: self.depends_on.into_iter().collect(),
            variables: self
                .variables
                .into_iter()
                .map(|(key, value)| Variable {
                    key,
                    value,
                    source: VariableSource::PipelineConfig,
                })
                .collect(),
            entrypoint: self.entrypoint,
            command: self.command,
            inject_api_token: self.inject_api_token,
            always_pull_newest_image: self.always_pull_newest_image,
            timeout,
            retries: self.retries,
            keep_failed,
            resources: self.resources,
            workspace: self.workspace,
            placement,
        })
    }
}

/// Checks placement constraints (at most [`MAX_PLACEMENT`]).
fn check_placement(owner: &str, placement: &[String]) -> Result<(), ConfigError> {
    let invalid = |problem| ConfigError::InvalidPlacement {
        owner: owner.to_string(),
        problem,
    };
    if placement.len() > MAX_PLACEMENT {
        return Err(invalid(format!(
            "{} constraints, at most {MAX_PLACEMENT}",
            placement.len()
        )));
    }
    placement
        .iter()
        .find_map(|constraint| crate::models::placement_problem(constraint))
        .map_or(Ok(()), |problem| Err(invalid(problem)))
}

/// Most placement constraints a pipeline or task may have.
const MAX_PLACEMENT: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, deps: &[(&str, RequiredParentStatus)]) -> TaskInput {
        TaskInput {
            id: id.to_string(),
            description: None,
            image: Some("busybox".to_string()),
            plugin: None,
            settings: BTreeMap::new(),
            registry_auth: None,
            depends_on: deps.iter().map(|(p, s)| (p.to_string(), *s)).collect(),
            variables: BTreeMap::new(),
            entrypoint: None,
            command: None,
            inject_api_token: false,
            always_pull_newest_image: false,
            timeout: None,
            retries: 0,
            keep_failed: None,
            resources: None,
            workspace: false,
            placement: Vec::new(),
        }
    }

    fn config(tasks: Vec<TaskInput>) -> PipelineConfigInput {
        PipelineConfigInput {
            id: "simple".to_string(),
            name: "Simple".to_string(),
            description: None,
            parallelism: 0,
            tasks,
            timeout: None,
            keep_failed: None,
            triggers: Vec::new(),
            placement: Vec::new(),
        }
    }

    #[test]
    fn identifiers_follow_the_v0_rule() {
        assert!(validate_identifier("id", "abc").is_ok());
        assert!(validate_identifier("id", "a-b-C-9").is_ok());
        assert!(validate_identifier("id", &"a".repeat(32)).is_ok());
        let too_long = validate_identifier("id", &"a".repeat(33)).unwrap_err();
        assert!(too_long.to_string().contains("greater than 32"));
        assert!(
            validate_identifier("id", "ab")
                .unwrap_err()
                .to_string()
                .contains("less than 3")
        );
        assert!(
            validate_identifier("id", "task_one")
                .unwrap_err()
                .to_string()
                .contains("alphanumeric")
        );
        assert!(validate_identifier("id", "héllo").is_err());
    }

    #[test]
    fn a_valid_dag_passes() {
        use RequiredParentStatus::*;
        let input = config(vec![
            task("first", &[]),
            task("second", &[("first", Success)]),
            task("third", &[("first", Any), ("second", Failure)]),
        ]);
        assert_eq!(input.validate("simple"), Ok(()));
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        use RequiredParentStatus::*;
        let input = config(vec![
            task("aaa", &[("ccc", Any)]),
            task("bbb", &[("aaa", Any)]),
            task("ccc", &[("bbb", Any)]),
        ]);
        let error = input.validate("simple").unwrap_err();
        assert!(
            matches!(error, ConfigError::Cycle(ref path) if path.len() == 4 && path[0] == path[3])
        );
        let self_loop = config(vec![task("aaa", &[("aaa", Success)])]);
        assert_eq!(
            self_loop.validate("simple").unwrap_err(),
            ConfigError::Cycle(vec!["aaa".into(), "aaa".into()])
        );
    }

    #[test]
    fn task_problems_name_the_task() {
        use RequiredParentStatus::*;
        let duplicate = config(vec![task("aaa", &[]), task("aaa", &[])]);
        assert_eq!(
            duplicate.validate("simple").unwrap_err(),
            ConfigError::DuplicateTask("aaa".into())
        );
        let unknown = config(vec![task("aaa", &[("zzz", Any)])]);
        assert!(
            unknown
                .validate("simple")
                .unwrap_err()
                .to_string()
                .contains("'aaa' depends on 'zzz'")
        );
        let mut no_image = task("bbb", &[]);
        no_image.image = Some(" ".into());
        assert_eq!(
            config(vec![no_image]).validate("simple").unwrap_err(),
            ConfigError::MissingImage("bbb".into())
        );
        let mismatch = config(vec![task("aaa", &[])])
            .validate("other")
            .unwrap_err();
        assert!(matches!(mismatch, ConfigError::IdMismatch { .. }));
    }

    #[test]
    fn placement_is_checked_and_the_pipelines_comes_first() {
        let mut pipeline = config(vec![task("first", &[]), task("second", &[])]);
        pipeline.placement = vec!["node.role == worker".into()];
        pipeline.tasks[0].placement = vec![
            "node.labels.gpu==true".into(),
            " node.role == worker ".into(),
        ];
        pipeline.validate("simple").unwrap();
        let stored = pipeline.into_config("default", 1, 0).unwrap();
        assert_eq!(
            stored.tasks["first"].placement,
            ["node.role == worker", "node.labels.gpu==true"]
        );
        assert_eq!(stored.tasks["second"].placement, ["node.role == worker"]);
        for (constraint, expected) in [
            (
                "gpu",
                "task 'first' has an invalid placement: 'gpu' is not a constraint",
            ),
            (
                "node.color == red",
                "'node.color' in 'node.color == red' is not an attribute",
            ),
            ("node.labels. == x", "'node.labels.' in"),
            ("node.labels.gpu == ", "'node.labels.gpu == ' has no value"),
            ("engine.labels.zone != eu", ""),
        ] {
            let mut pipeline = config(vec![task("first", &[])]);
            pipeline.tasks[0].placement = vec![constraint.into()];
            match pipeline.validate("simple") {
                Ok(()) => assert!(expected.is_empty(), "{constraint} was accepted"),
                Err(error) => assert!(
                    !expected.is_empty() && error.to_string().contains(expected),
                    "{constraint}: {error}"
                ),
            }
        }
        let mut pipeline = config(vec![task("first", &[])]);
        pipeline.placement = vec!["x".into()];
        assert!(
            pipeline
                .validate("simple")
                .unwrap_err()
                .to_string()
                .starts_with("pipeline 'simple' has an invalid placement")
        );
    }

    #[test]
    fn resources_are_checked_and_stored() {
        let mut pipeline = config(vec![task("first", &[])]);
        pipeline.tasks[0].resources = Some(crate::models::TaskResources {
            cpus: Some(0.5),
            memory: Some("64m".into()),
        });
        pipeline.validate("simple").unwrap();
        let stored = pipeline.clone().into_config("default", 1, 0).unwrap();
        let resources = stored.tasks["first"].resources.clone().unwrap();
        assert_eq!(resources.memory_bytes(), Some(64 << 20));
        assert_eq!(resources.nano_cpus(), Some(500_000_000));
        for (cpus, memory, expected) in [
            (
                Some(0.0),
                None,
                "task 'first' has invalid resources: cpus must be above 0",
            ),
            (
                None,
                Some("lots"),
                "task 'first' has invalid resources: memory 'lots' is not a size",
            ),
            (
                None,
                Some("5m"),
                "task 'first' has invalid resources: memory must be at least 6m",
            ),
            (
                None,
                Some("12t"),
                "task 'first' has invalid resources: memory '12t' is not a size",
            ),
        ] {
            pipeline.tasks[0].resources = Some(crate::models::TaskResources {
                cpus,
                memory: memory.map(str::to_string),
            });
            let error = pipeline.validate("simple").unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn keep_failed_is_checked_and_tasks_inherit_the_pipelines() {
        let mut pipeline = config(vec![task("first", &[]), task("second", &[])]);
        pipeline.keep_failed = Some("2h".into());
        pipeline.tasks[1].keep_failed = Some("10m".into());
        pipeline.validate("simple").unwrap();
        let stored = pipeline.clone().into_config("default", 1, 0).unwrap();
        assert_eq!(
            stored.tasks["first"].keep_failed.as_ref().unwrap().text(),
            "2h"
        );
        assert_eq!(
            stored.tasks["second"].keep_failed.as_ref().unwrap().text(),
            "10m"
        );
        pipeline.tasks[0].keep_failed = Some("8d".into());
        let error = pipeline.validate("simple").unwrap_err().to_string();
        assert!(
            error.starts_with(
                "task 'first' has an invalid keep_failed '8d': it is longer than 7 days"
            ),
            "{error}"
        );
        pipeline.tasks[0].keep_failed = None;
        pipeline.keep_failed = Some("forever".into());
        let error = pipeline.validate("simple").unwrap_err().to_string();
        assert!(
            error.starts_with("pipeline 'simple' has an invalid keep_failed 'forever'"),
            "{error}"
        );
    }

    #[test]
    fn timeouts_and_retries_are_checked() {
        let mut slow = task("slow", &[]);
        slow.timeout = Some("5 parsecs".into());
        let error = config(vec![slow]).validate("simple").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("task 'slow' has an invalid timeout '5 parsecs'"),
            "{error}"
        );
        let mut zero = task("zero", &[]);
        zero.timeout = Some("0s".into());
        assert!(config(vec![zero]).validate("simple").is_err());
        let mut eager = task("eager", &[]);
        eager.retries = 11;
        assert_eq!(
            config(vec![eager]).validate("simple").unwrap_err(),
            ConfigError::TooManyRetries {
                task: "eager".into(),
                retries: 11
            }
        );
        let mut fine = task("fine", &[]);
        fine.timeout = Some("1m 30s".into());
        fine.retries = 2;
        let mut pipeline = config(vec![fine]);
        pipeline.timeout = Some("2h".into());
        assert_eq!(pipeline.validate("simple"), Ok(()));
        assert_eq!(
            parse_timeout("x", "1m 30s").unwrap().duration().as_secs(),
            90
        );
    }

    #[test]
    fn sdk_json_with_pascal_case_conditions_is_accepted() {
        let json = r#"{"id":"dag","name":"Dag","description":null,"parallelism":0,"tasks":[
            {"id":"first-task","description":null,"image":"busybox","registry_auth":null,"depends_on":{},
             "variables":{"WAIT":"1s"},"entrypoint":null,"command":null,"inject_api_token":false,"always_pull_newest_image":true},
            {"id":"second","image":"busybox","depends_on":{"first-task":"Success"},"variables":{}}]}"#;
        let input: PipelineConfigInput = serde_json::from_str(json).unwrap();
        input.validate("dag").unwrap();
        let stored = input.into_config("default", 3, 42).unwrap();
        assert_eq!(
            stored.tasks["second"].depends_on["first-task"],
            RequiredParentStatus::Success
        );
        assert_eq!(
            stored.tasks["first-task"].variables[0].source,
            VariableSource::PipelineConfig
        );
        assert_eq!(stored.description, "");
        assert_eq!(stored.version, 3);
        let stored_json = serde_json::to_value(&stored).unwrap();
        assert_eq!(
            stored_json["tasks"]["second"]["depends_on"]["first-task"],
            "success"
        );
    }
}
