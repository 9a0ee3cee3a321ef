//! The Docker scheduler: containers through an engine that speaks the Docker Engine API (Docker,
//! or Podman's compatible service), with bollard over a unix socket or TCP. The only module that
//! uses bollard.

// The one home of Docker (host/clippy.toml refuses its types anywhere else).
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, NetworkInspect};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CommitContainerOptionsBuilder, CreateContainerOptionsBuilder,
    CreateImageOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures_util::{StreamExt, TryStreamExt};

use crate::config::{SchedulerEngine, SchedulerSection};

use super::{ContainerSpec, ContainerState, ExecSession, LogStream, Scheduler, SchedulerError};

/// The repository of the images `shell_in_copy` commits kept containers to (tag: the container).
const KEPT_IMAGE_REPOSITORY: &str = "gofer-kept";
/// Marks a shell's container with the kept container it copies.
const SHELL_OF_LABEL: &str = "gofer.shell_of";

/// How many times (100 ms apart) a SIGKILLed container is asked whether it ran out of memory.
const OOM_FLAG_CHECKS: u32 = 20;

/// Seconds an engine request may take before bollard gives up on it (bollard's own default).
const ENGINE_TIMEOUT_SECS: u64 = 120;

/// Podman's service socket: the user's (rootless) when it exists, else the system's.
fn default_podman_socket() -> String {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(|dir| std::path::PathBuf::from(dir).join("podman/podman.sock"))
        .filter(|path| path.exists())
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "/run/podman/podman.sock".into())
}

/// The spec's registry credentials as the Engine API takes them.
pub(super) fn registry_credentials(spec: &ContainerSpec) -> Option<DockerCredentials> {
    spec.registry_auth
        .as_ref()
        .map(|(user, pass)| DockerCredentials {
            username: Some(user.clone()),
            password: Some(pass.clone()),
            ..Default::default()
        })
}

/// An Engine API filter on all of `labels` (containers or services).
pub(super) fn label_filters(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect(),
    )])
}

/// The spec's environment as `KEY=value` strings.
pub(super) fn environment(spec: &ContainerSpec) -> Vec<String> {
    spec.env
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// The spec's volume (the run's workspace) as a mount, if it has one.
pub(super) fn volume_mounts(spec: &ContainerSpec) -> Option<Vec<Mount>> {
    spec.volume.as_ref().map(|(volume, target)| {
        vec![Mount {
            target: Some(target.clone()),
            source: Some(volume.clone()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }]
    })
}

fn kept_image(container: &str) -> String {
    format!("{KEPT_IMAGE_REPOSITORY}:{container}")
}

#[derive(Clone)]
/// Docker through bollard. Connecting is lazy: a server starts even when the engine is down, and
/// each call then fails with [`SchedulerError::Unreachable`].
pub struct DockerScheduler {
    docker: Result<Docker, String>,
    endpoint: String,
}

impl std::fmt::Debug for DockerScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerScheduler")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl DockerScheduler {
    /// Uses `DOCKER_HOST` when set, else the local unix socket.
    pub fn from_environment() -> Self {
        Self::connect(&SchedulerSection {
            engine: SchedulerEngine::Docker,
            socket: String::new(),
            placement_timeout_secs: 60,
        })
    }

    /// Connects (lazily) to the configured engine: its `socket`, else the engine's usual address.
    pub fn connect(settings: &SchedulerSection) -> Self {
        let socket = match (settings.socket.as_str(), settings.engine) {
            ("", SchedulerEngine::Docker | SchedulerEngine::Swarm) => None,
            ("", SchedulerEngine::Podman) => Some(default_podman_socket()),
            (socket, _) => Some(socket.to_string()),
        };
        let (endpoint, docker) = match socket {
            None => (
                std::env::var("DOCKER_HOST")
                    .unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
                Docker::connect_with_defaults(),
            ),
            Some(socket) if socket.starts_with("tcp://") || socket.starts_with("http://") => (
                socket.clone(),
                Docker::connect_with_http(&socket, ENGINE_TIMEOUT_SECS, API_DEFAULT_VERSION),
            ),
            Some(socket) => {
                let path = socket.trim_start_matches("unix://").to_string();
                (
                    format!("unix://{path}"),
                    Docker::connect_with_unix(&path, ENGINE_TIMEOUT_SECS, API_DEFAULT_VERSION),
                )
            }
        };
        Self {
            docker: docker.map_err(|error| error.to_string()),
            endpoint,
        }
    }

    /// The client, for the Swarm scheduler (same manager, same socket).
    pub(super) fn engine(&self) -> Result<&Docker, SchedulerError> {
        self.docker()
    }

    fn docker(&self) -> Result<&Docker, SchedulerError> {
        self.docker
            .as_ref()
            .map_err(|detail| SchedulerError::Unreachable {
                endpoint: self.endpoint.clone(),
                detail: detail.clone(),
            })
    }

    pub(super) fn classify(&self, error: DockerError) -> SchedulerError {
        match error {
            DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            } => SchedulerError::NotFound(message),
            DockerError::DockerResponseServerError { message, .. } => {
                SchedulerError::Engine(message)
            }
            DockerError::DockerContainerWaitError { error, code } => {
                SchedulerError::Engine(format!("wait failed with {code}: {error}"))
            }
            other => SchedulerError::Unreachable {
                endpoint: self.endpoint.clone(),
                detail: other.to_string(),
            },
        }
    }

    /// A container's output (its logs, or an attached command's) as Gofer's stream.
    fn output_stream(
        &self,
        output: impl futures_util::Stream<Item = Result<bollard::container::LogOutput, DockerError>>
        + Send
        + 'static,
    ) -> LogStream {
        let endpoint = self.endpoint.clone();
        output
            .map(move |chunk| match chunk {
                Ok(output) => Ok(output.into_bytes()),
                Err(error) => Err(SchedulerError::Unreachable {
                    endpoint: endpoint.clone(),
                    detail: error.to_string(),
                }),
            })
            .boxed()
    }

    pub(super) async fn ensure_image(&self, spec: &ContainerSpec) -> Result<(), SchedulerError> {
        let docker = self.docker()?;
        if !spec.always_pull {
            match docker.inspect_image(&spec.image).await {
                Ok(_) => return Ok(()),
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(other) => return Err(self.classify(other)),
            }
        }
        let credentials = registry_credentials(spec);
        let options = CreateImageOptionsBuilder::default()
            .from_image(&spec.image)
            .build();
        let pulled: Result<Vec<_>, _> = docker
            .create_image(Some(options), None, credentials)
            .try_collect()
            .await;
        match pulled {
            Ok(_) => Ok(()),
            Err(DockerError::DockerResponseServerError { message, .. }) => {
                Err(SchedulerError::ImageUnavailable {
                    image: spec.image.clone(),
                    detail: format!("it is not present locally and could not be pulled: {message}"),
                })
            }
            Err(other) => match self.classify(other) {
                SchedulerError::Engine(message) | SchedulerError::NotFound(message) => {
                    Err(SchedulerError::ImageUnavailable {
                        image: spec.image.clone(),
                        detail: format!(
                            "it is not present locally and could not be pulled: {message}"
                        ),
                    })
                }
                unreachable => Err(unreachable),
            },
        }
    }
}

#[async_trait::async_trait]
impl Scheduler for DockerScheduler {
    async fn start(&self, spec: &ContainerSpec) -> Result<(), SchedulerError> {
        self.ensure_image(spec).await?;
        let docker = self.docker()?;
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(environment(spec)),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.command.clone(),
            labels: Some(spec.labels.clone().into_iter().collect::<HashMap<_, _>>()),
            host_config: Some(HostConfig {
                nano_cpus: spec.nano_cpus,
                memory: spec.memory_bytes,
                // No swap beyond the limit: past it the task is killed, not slowed down.
                memory_swap: spec.memory_bytes,
                mounts: volume_mounts(spec),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|error| self.classify(error))?;
        docker
            .start_container(
                &spec.name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|error| self.classify(error))
    }

    async fn wait(&self, name: &str) -> Result<i64, SchedulerError> {
        let docker = self.docker()?;
        let mut responses = docker.wait_container(name, None::<WaitContainerOptions>);
        match responses.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(error)) => Err(self.classify(error)),
            None => Err(SchedulerError::Engine(format!(
                "waiting for '{name}' returned nothing"
            ))),
        }
    }

    async fn state(&self, name: &str) -> Result<ContainerState, SchedulerError> {
        let docker = self.docker()?;
        match docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspect) => {
                let state = inspect.state.unwrap_or_default();
                let running = state.running.unwrap_or(false)
                    || state.restarting.unwrap_or(false)
                    || state.paused.unwrap_or(false)
                    || matches!(
                        state.status,
                        Some(bollard::models::ContainerStateStatusEnum::CREATED)
                    );
                if running {
                    Ok(ContainerState::Running)
                } else {
                    Ok(ContainerState::Exited {
                        exit_code: state.exit_code.unwrap_or(-1),
                    })
                }
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(ContainerState::Missing),
            Err(error) => Err(self.classify(error)),
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<(), SchedulerError> {
        match self
            .docker()?
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(error) => Err(self.classify(error)),
        }
    }

    async fn out_of_memory(&self, name: &str) -> bool {
        let Ok(docker) = self.docker() else {
            return false;
        };
        // The engine records the OOM kill from its own event, which can come a moment after the
        // exit: ask again for a little while (only a SIGKILLed container is asked about).
        for _ in 0..OOM_FLAG_CHECKS {
            let flagged = docker
                .inspect_container(name, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|inspect| inspect.state)
                .and_then(|state| state.oom_killed)
                .unwrap_or(false);
            if flagged {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn logs(&self, name: &str, follow: bool) -> LogStream {
        let docker = match self.docker() {
            Ok(docker) => docker.clone(),
            Err(error) => return futures_util::stream::once(async move { Err(error) }).boxed(),
        };
        let options = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .build();
        self.output_stream(docker.logs(name, Some(options)))
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), SchedulerError> {
        let docker = self.docker()?;
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match docker.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(error) => Err(self.classify(error)),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), SchedulerError> {
        let docker = self.docker()?;
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(name, Some(options)).await {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(error) => Err(self.classify(error)),
        }
    }

    async fn exec(&self, name: &str, command: Vec<String>) -> Result<ExecSession, SchedulerError> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let docker = self.docker()?;
        let options = CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(true),
            cmd: Some(command),
            ..Default::default()
        };
        let created = docker
            .create_exec(name, options)
            .await
            .map_err(|error| self.classify(error))?;
        let started = docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: true,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|error| self.classify(error))?;
        match started {
            StartExecResults::Attached { output, input } => Ok(ExecSession {
                output: self.output_stream(output),
                input,
                exit_code: None,
            }),
            StartExecResults::Detached => {
                Err(SchedulerError::Engine("the exec session detached".into()))
            }
        }
    }

    async fn shell_in_copy(
        &self,
        name: &str,
        command: Vec<String>,
    ) -> Result<ExecSession, SchedulerError> {
        let docker = self.docker()?;
        let image = kept_image(name);
        match docker.inspect_image(&image).await {
            Ok(_) => {}
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                let options = CommitContainerOptionsBuilder::default()
                    .container(name)
                    .repo(KEPT_IMAGE_REPOSITORY)
                    .tag(name)
                    .comment("the filesystem a failed Gofer task left (keep_failed)")
                    .pause(false)
                    .build();
                docker
                    .commit_container(options, bollard::models::ContainerConfig::default())
                    .await
                    .map_err(|error| self.classify(error))?;
            }
            Err(error) => return Err(self.classify(error)),
        }
        let (program, arguments) = command
            .split_first()
            .ok_or_else(|| SchedulerError::Engine("the command is empty".into()))?;
        let shell = format!(
            "{name}_shell_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let body = ContainerCreateBody {
            image: Some(image),
            entrypoint: Some(vec![program.clone()]),
            cmd: Some(arguments.to_vec()),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            labels: Some(HashMap::from([(
                SHELL_OF_LABEL.to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&shell)
            .build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|error| self.classify(error))?;
        let attach = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let attached = match docker.attach_container(&shell, Some(attach)).await {
            Ok(attached) => attached,
            Err(error) => {
                let _ = self.remove(&shell).await;
                return Err(self.classify(error));
            }
        };
        if let Err(error) = docker
            .start_container(&shell, None::<StartContainerOptions>)
            .await
        {
            let _ = self.remove(&shell).await;
            return Err(self.classify(error));
        }
        // Once the command exits: its code to the session, and the shell's container removed.
        let (exited, exit_code) = tokio::sync::oneshot::channel();
        let owned = docker.clone();
        tokio::spawn(async move {
            let mut responses = owned.wait_container(&shell, None::<WaitContainerOptions>);
            let code = match responses.next().await {
                Some(Ok(response)) => response.status_code,
                Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
                _ => -1,
            };
            let _ = exited.send(code);
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = owned.remove_container(&shell, Some(options)).await;
        });
        Ok(ExecSession {
            output: self.output_stream(attached.output),
            input: attached.input,
            exit_code: Some(exit_code),
        })
    }

    async fn discard_kept(&self, name: &str) -> Result<(), SchedulerError> {
        self.remove(name).await?;
        let docker = self.docker()?;
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        match docker
            .remove_image(&kept_image(name), Some(options), None)
            .await
        {
            Ok(_)
            | Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(error) => Err(self.classify(error)),
        }
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, SchedulerError> {
        let docker = self.docker()?;
        let filters = label_filters(labels);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|error| self.classify(error))?;
        Ok(containers
            .into_iter()
            .filter_map(|container| container.names?.into_iter().next())
            .map(|name| name.trim_start_matches('/').to_string())
            .collect())
    }

    async fn image_digest(&self, name: &str) -> Result<Option<String>, SchedulerError> {
        let docker = self.docker()?;
        let container = docker
            .inspect_container(name, None)
            .await
            .map_err(|error| self.classify(error))?;
        Ok(container.image)
    }

    async fn ping(&self) -> Result<(), SchedulerError> {
        let docker = self.docker()?;
        docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|error| self.classify(error))
    }

    async fn host_address(&self) -> Result<Option<IpAddr>, SchedulerError> {
        let docker = self.docker()?;
        let network = docker
            .inspect_network(DEFAULT_BRIDGE, None)
            .await
            .map_err(|error| self.classify(error))?;
        // Read only when the network does not say, and only when it names its interface.
        let interfaces = || {
            if_addrs::get_if_addrs()
                .unwrap_or_default()
                .into_iter()
                .map(|interface| (interface.name.clone(), interface.ip()))
                .collect::<Vec<_>>()
        };
        Ok(bridge_gateway(&network, interfaces))
    }
}

/// Docker's default network: containers started without a network join it.
const DEFAULT_BRIDGE: &str = "bridge";

/// The option naming a bridge network's host interface (`docker0`).
const BRIDGE_INTERFACE_OPTION: &str = "com.docker.network.bridge.name";

/// The host's address on a bridge network: the IPv4 gateway its IPAM config records, else the
/// IPv4 address of its host interface. A daemon on its first start records no gateway for the
/// default bridge (only the subnet), although `docker0` has it; after a restart it does.
fn bridge_gateway(
    network: &NetworkInspect,
    interfaces: impl FnOnce() -> Vec<(String, IpAddr)>,
) -> Option<IpAddr> {
    let recorded = network
        .ipam
        .as_ref()
        .and_then(|ipam| ipam.config.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|config| config.gateway.as_deref()?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4);
    if recorded.is_some() {
        return recorded;
    }
    let interface = network.options.as_ref()?.get(BRIDGE_INTERFACE_OPTION)?;
    interfaces()
        .into_iter()
        .find(|(name, address)| name == interface && address.is_ipv4())
        .map(|(_, address)| address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{Ipam, IpamConfig};

    fn bridge(gateway: Option<&str>) -> NetworkInspect {
        NetworkInspect {
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some("172.17.0.0/16".into()),
                    gateway: gateway.map(str::to_string),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            options: Some(HashMap::from([(
                BRIDGE_INTERFACE_OPTION.to_string(),
                "docker0".to_string(),
            )])),
            ..Default::default()
        }
    }

    fn host_interfaces() -> Vec<(String, IpAddr)> {
        vec![
            ("lo".into(), "127.0.0.1".parse().unwrap()),
            ("docker0".into(), "fe80::1".parse().unwrap()),
            ("docker0".into(), "172.17.0.1".parse().unwrap()),
        ]
    }

    #[test]
    fn the_recorded_gateway_wins() {
        let found = bridge_gateway(&bridge(Some("172.17.0.254")), || {
            panic!("interfaces are read only when the network records no gateway")
        });
        assert_eq!(found, Some("172.17.0.254".parse().unwrap()));
    }

    #[test]
    fn without_a_recorded_gateway_the_bridge_interface_address_is_used() {
        let found = bridge_gateway(&bridge(None), host_interfaces);
        assert_eq!(found, Some("172.17.0.1".parse().unwrap()));
    }

    #[test]
    fn no_gateway_and_no_such_interface_is_none() {
        let found = bridge_gateway(&bridge(None), Vec::new);
        assert_eq!(found, None);
        let mut unnamed = bridge(None);
        unnamed.options = None;
        assert_eq!(bridge_gateway(&unnamed, host_interfaces), None);
    }
}
