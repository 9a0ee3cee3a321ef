//! The Docker Swarm scheduler: each container task attempt is a Swarm service in `replicated-job`
//! mode (one completion, never restarted), carrying Gofer's labels; its outcome is read from the
//! service's task status. What needs the task's container (its output, attach, a shell in a kept
//! task, the out-of-memory flag, the image digest) goes to the container on this engine's node,
//! through [`DockerScheduler`]: that is the whole cluster on a single-node Swarm, and the manager's
//! own tasks on a bigger one (see `docs/configuration.md`). A task's placement constraints go
//! to the service; one that no node satisfies fails after `scheduler.placement_timeout_secs`
//! with the Swarm's reason.
//!
//! Must not know about runs or pipelines beyond the spec it is given.

// The one other home of Docker types (host/clippy.toml refuses them elsewhere).
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    Limit, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob, TaskSpec,
    TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder};
use futures_util::StreamExt;

use super::docker::{
    DockerScheduler, environment, label_filters, registry_credentials, volume_mounts,
};
use super::{ContainerSpec, ContainerState, ExecSession, LogStream, Scheduler, SchedulerError};
use crate::config::SchedulerSection;

/// The label that names, on a service, the container name Gofer knows the attempt by.
const CONTAINER_LABEL: &str = "dev.gofer.container";
/// How often a service's task is looked at while waiting for it.
const TASK_POLL: Duration = Duration::from_millis(100);
/// How long a volume may stay in use after the containers that used it were removed.
const VOLUME_RELEASE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a task may take to get a container before its output is given up on.
const CONTAINER_DEADLINE: Duration = Duration::from_secs(300);

/// Swarm services through the manager's Docker Engine API.
#[derive(Debug)]
pub struct SwarmScheduler {
    engine: DockerScheduler,
    /// How long a task may wait for a node that satisfies its placement.
    placement_timeout: Duration,
}

/// What a service's task has come to.
enum TaskOutcome {
    /// Pending, assigned, starting or running.
    Going,
    /// Pending because no node can take it (the Swarm's reason, e.g. "no suitable node").
    Unplaced(String),
    Exited(i64),
    /// Never ran: the engine's reason.
    Refused(String),
}

/// How long a pending task has had no node to go to.
#[derive(Default)]
struct Unplaced {
    since: Option<tokio::time::Instant>,
}

impl Unplaced {
    /// Notes the Swarm's reason a task is pending (none: it is placed); fails once it has had
    /// no node for `timeout`.
    fn check(&mut self, timeout: Duration, why: Option<&str>) -> Result<(), SchedulerError> {
        let Some(why) = why.filter(|why| !why.is_empty()) else {
            self.since = None;
            return Ok(());
        };
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < timeout {
            return Ok(());
        }
        Err(SchedulerError::Engine(format!(
            "the Swarm found no node for the task within {}s (scheduler.placement_timeout_secs): {why}",
            timeout.as_secs()
        )))
    }
}

impl SwarmScheduler {
    /// Connects (lazily) to the Swarm manager at the configured socket.
    pub fn connect(settings: &SchedulerSection) -> Self {
        Self {
            engine: DockerScheduler::connect(settings),
            placement_timeout: Duration::from_secs(settings.placement_timeout_secs),
        }
    }

    /// The service of an attempt: its container name made a valid service name (letters,
    /// digits and dashes, at most 63), with a hash of the whole name so that it stays unique.
    pub fn service_name(name: &str) -> String {
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        let plain: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(46)
            .collect();
        format!("{}-{hash:016x}", plain.trim_matches('-'))
    }

    /// The newest task of the attempt's service; `NotFound` when there is no such service.
    async fn task_of(&self, name: &str) -> Result<Option<bollard::models::Task>, SchedulerError> {
        let docker = self.engine.engine()?;
        let service = Self::service_name(name);
        if let Err(error) = docker.inspect_service(&service, None).await {
            return Err(self.engine.classify(error));
        }
        let filters = HashMap::from([("service".to_string(), vec![service])]);
        let tasks = docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::default().filters(&filters).build(),
            ))
            .await
            .map_err(|error| self.engine.classify(error))?;
        Ok(tasks
            .into_iter()
            .max_by_key(|task| task.version.as_ref().and_then(|v| v.index)))
    }

    async fn outcome(&self, name: &str) -> Result<TaskOutcome, SchedulerError> {
        let Some(task) = self.task_of(name).await? else {
            return Ok(TaskOutcome::Going);
        };
        let status = task.status.unwrap_or_default();
        let exit_code = status
            .container_status
            .as_ref()
            .and_then(|container| container.exit_code);
        Ok(match status.state {
            Some(TaskState::COMPLETE) => TaskOutcome::Exited(exit_code.unwrap_or(0)),
            Some(TaskState::FAILED | TaskState::SHUTDOWN | TaskState::ORPHANED) => {
                match exit_code {
                    Some(code) => TaskOutcome::Exited(code),
                    None => TaskOutcome::Refused(
                        status
                            .err
                            .unwrap_or_else(|| "the Swarm task ended without running".to_string()),
                    ),
                }
            }
            Some(TaskState::REJECTED) => TaskOutcome::Refused(
                status
                    .err
                    .unwrap_or_else(|| "the Swarm task was rejected".to_string()),
            ),
            Some(TaskState::PENDING)
                if status.err.as_deref().is_some_and(|err| !err.is_empty()) =>
            {
                TaskOutcome::Unplaced(status.err.unwrap_or_default())
            }
            _ => TaskOutcome::Going,
        })
    }

    /// The id of the attempt's container, once its task has one (waiting while it is pending).
    async fn container_of(&self, name: &str) -> Result<String, SchedulerError> {
        let deadline = tokio::time::Instant::now() + CONTAINER_DEADLINE;
        let mut unplaced = Unplaced::default();
        loop {
            let task = self.task_of(name).await?;
            let status = task.and_then(|task| task.status).unwrap_or_default();
            if status.state == Some(TaskState::PENDING) {
                unplaced.check(self.placement_timeout, status.err.as_deref())?;
            }
            if let Some(id) = status
                .container_status
                .and_then(|container| container.container_id)
                .filter(|id| !id.is_empty())
            {
                return Ok(id);
            }
            if matches!(status.state, Some(TaskState::REJECTED | TaskState::FAILED)) {
                return Err(SchedulerError::Engine(status.err.unwrap_or_else(|| {
                    format!("the Swarm task of '{name}' never ran")
                })));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(SchedulerError::Engine(format!(
                    "the Swarm task of '{name}' got no container within {}s",
                    CONTAINER_DEADLINE.as_secs()
                )));
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }
}

#[async_trait::async_trait]
impl Scheduler for SwarmScheduler {
    async fn start(&self, spec: &ContainerSpec) -> Result<(), SchedulerError> {
        self.engine.ensure_image(spec).await?;
        let docker = self.engine.engine()?;
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.insert(CONTAINER_LABEL.to_string(), spec.name.clone());
        let service = ServiceSpec {
            name: Some(Self::service_name(&spec.name)),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(spec.image.clone()),
                    labels: Some(labels),
                    // Swarm's `command` replaces the entrypoint, `args` the command.
                    command: spec.entrypoint.clone(),
                    args: spec.command.clone(),
                    env: Some(environment(spec)),
                    mounts: volume_mounts(spec),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: spec.nano_cpus,
                        memory_bytes: spec.memory_bytes,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                placement: (!spec.placement.is_empty()).then(|| TaskSpecPlacement {
                    constraints: Some(spec.placement.clone()),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated_job: Some(ServiceSpecModeReplicatedJob {
                    max_concurrent: Some(1),
                    total_completions: Some(1),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        // As `docker service create --with-registry-auth` does: the nodes pull with them.
        docker
            .create_service(service, registry_credentials(spec))
            .await
            .map(|_| ())
            .map_err(|error| self.engine.classify(error))
    }

    async fn wait(&self, name: &str) -> Result<i64, SchedulerError> {
        let mut unplaced = Unplaced::default();
        loop {
            match self.outcome(name).await? {
                TaskOutcome::Going => unplaced.check(self.placement_timeout, None)?,
                TaskOutcome::Unplaced(why) => {
                    unplaced.check(self.placement_timeout, Some(&why))?;
                }
                TaskOutcome::Exited(code) => return Ok(code),
                TaskOutcome::Refused(why) => return Err(SchedulerError::Engine(why)),
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }

    async fn state(&self, name: &str) -> Result<ContainerState, SchedulerError> {
        match self.outcome(name).await {
            Ok(TaskOutcome::Going | TaskOutcome::Unplaced(_)) => Ok(ContainerState::Running),
            Ok(TaskOutcome::Exited(exit_code)) => Ok(ContainerState::Exited { exit_code }),
            Ok(TaskOutcome::Refused(_)) => Ok(ContainerState::Exited { exit_code: -1 }),
            Err(SchedulerError::NotFound(_)) => Ok(ContainerState::Missing),
            Err(error) => Err(error),
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<(), SchedulerError> {
        // The node lets go of a removed task's volumes a moment after its container is gone.
        let deadline = tokio::time::Instant::now() + VOLUME_RELEASE_DEADLINE;
        loop {
            match self.engine.remove_volume(name).await {
                Err(SchedulerError::Engine(message))
                    if message.contains("in use") && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(TASK_POLL).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn out_of_memory(&self, name: &str) -> bool {
        match self.container_of(name).await {
            Ok(container) => self.engine.out_of_memory(&container).await,
            Err(_) => false,
        }
    }

    fn logs(&self, name: &str, follow: bool) -> LogStream {
        let (engine, name) = (
            Self {
                engine: self.engine.clone(),
                placement_timeout: self.placement_timeout,
            },
            name.to_string(),
        );
        futures_util::stream::once(async move {
            match engine.container_of(&name).await {
                Ok(container) => engine.engine.logs(&container, follow),
                Err(error) => futures_util::stream::once(async move { Err(error) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), SchedulerError> {
        let container = self.container_of(name).await?;
        self.engine.stop(&container, grace).await
    }

    async fn remove(&self, name: &str) -> Result<(), SchedulerError> {
        let docker = self.engine.engine()?;
        match docker.delete_service(&Self::service_name(name)).await {
            Ok(()) => {}
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => return Err(self.engine.classify(error)),
        }
        // A job's finished container stays after its service is removed (the engine keeps
        // completed tasks' containers); remove it, so that nothing holds the run's workspace.
        for container in self.engine.list(&[(CONTAINER_LABEL, name)]).await? {
            self.engine.remove(&container).await?;
        }
        Ok(())
    }

    async fn exec(&self, name: &str, command: Vec<String>) -> Result<ExecSession, SchedulerError> {
        let container = self.container_of(name).await?;
        self.engine.exec(&container, command).await
    }

    async fn shell_in_copy(
        &self,
        name: &str,
        command: Vec<String>,
    ) -> Result<ExecSession, SchedulerError> {
        let container = self.container_of(name).await?;
        self.engine.shell_in_copy(&container, command).await
    }

    async fn discard_kept(&self, name: &str) -> Result<(), SchedulerError> {
        if let Ok(container) = self.container_of(name).await {
            self.engine.discard_kept(&container).await?;
        }
        self.remove(name).await
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, SchedulerError> {
        let docker = self.engine.engine()?;
        let filters = label_filters(labels);
        let services = docker
            .list_services(Some(
                ListServicesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|error| self.engine.classify(error))?;
        Ok(services
            .into_iter()
            .filter_map(|service| service.spec?.labels?.remove(CONTAINER_LABEL))
            .collect())
    }

    async fn host_address(&self) -> Result<Option<std::net::IpAddr>, SchedulerError> {
        self.engine.host_address().await
    }

    async fn ping(&self) -> Result<(), SchedulerError> {
        self.engine.ping().await
    }

    async fn image_digest(&self, name: &str) -> Result<Option<String>, SchedulerError> {
        let container = self.container_of(name).await?;
        self.engine.image_digest(&container).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_valid_and_unique() {
        let long = "gofer_1a2b3c_default_a-pipeline-with-a-long-name_12345_the-task-id_1";
        for name in [long, "gofer_x_default_p_1_t_1", "gofer_x_default_p_1_t_2"] {
            let service = SwarmScheduler::service_name(name);
            assert!(service.len() <= 63, "{service}");
            assert!(
                service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{service}"
            );
        }
        assert_ne!(
            SwarmScheduler::service_name("gofer_x_default_p_1_t_1"),
            SwarmScheduler::service_name("gofer_x_default_p_1_t_2")
        );
    }
}
