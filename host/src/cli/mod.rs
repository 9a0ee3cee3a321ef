//! The `gofer` command line: argument parsing and one function per command.
//!
//! Every command except `service ...` is a client of the REST API (through `client`), printing
//! with `output`. Errors end the process with a one-line message and exit code 1. This is an edge
//! of the program, so it uses `anyhow`.

mod access;
pub mod client;
mod deployments;
pub mod output;
mod plugins;
mod program;
mod reference;
mod runs;
mod scaffold;
mod stores;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::config::{ConfigOverrides, DEFAULT_CONFIG_TOML, ServerConfig};
use crate::models::{Deployment, Event, Namespace, PipelineConfig, PipelineMetadata};
use client::{Client, ClientError, field};
use output::OutputFormat;

/// Gofer runs short-lived jobs: pipelines of containers (and WebAssembly plugins) as DAGs.
#[derive(Debug, Parser)]
#[command(name = "gofer", version = env!("GOFER_VERSION_LINE"), about)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Address of the Gofer server.
    #[arg(
        long,
        global = true,
        env = "GOFER_API_BASE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api_base_url: String,
    /// A CA certificate (PEM) to trust for an HTTPS server, e.g. its self-signed certificate.
    #[arg(long, global = true, env = "GOFER_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// API token (not needed against a development server).
    #[arg(long, global = true, env = "GOFER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Namespace of the pipelines a command acts on.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "GOFER_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// `table` for people, `json` for scripts.
    #[arg(
        long,
        short = 'o',
        global = true,
        env = "GOFER_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run and configure the server.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage namespaces.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// Manage pipelines and their configs.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// See a pipeline's deployments.
    #[command(subcommand)]
    Deployment(deployments::DeploymentCommand),
    /// Start, follow and cancel runs.
    #[command(subcommand)]
    Run(runs::RunCommand),
    /// Inspect a run's tasks, read their logs, cancel them.
    #[command(subcommand)]
    Task(runs::TaskCommand),
    /// See the plugins (triggers and shared tasks).
    #[command(subcommand)]
    Plugin(plugins::PluginCommand),
    /// Subscribe pipelines to trigger plugins.
    #[command(subcommand)]
    Subscription(plugins::SubscriptionCommand),
    /// API tokens: bootstrap, create, disable, whoami.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// Roles: what tokens may do.
    #[command(subcommand)]
    Role(access::RoleCommand),
    /// Store secrets for pipelines' tasks: pipeline and global secrets.
    #[command(subcommand)]
    Secret(stores::SecretCommand),
    /// Store files for tasks: pipeline and run objects.
    #[command(subcommand)]
    Object(stores::ObjectCommand),
    /// Read the event log.
    #[command(subcommand)]
    Event(EventCommand),
    /// Server-wide settings.
    #[command(subcommand)]
    System(SystemCommand),
    /// Print shell completions, e.g. `gofer completion bash > /etc/bash_completion.d/gofer`
    /// (zsh: into a directory on `$fpath` as `_gofer`; fish: `~/.config/fish/completions/gofer.fish`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a document generated from this command line (`make cli-docs`, `make release`).
    #[command(hide = true)]
    Reference {
        #[arg(value_enum)]
        format: ReferenceFormat,
    },
}

/// What `gofer reference` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReferenceFormat {
    /// docs/cli.md.
    Markdown,
    /// The man page, gofer(1), in roff.
    Man,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Start the server (development mode, no auth, unless configured otherwise).
    Start {
        /// Config file (TOML); `gofer service init-config` prints a commented one.
        #[arg(long, env = "GOFER_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, IP:PORT (overrides server.bind).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
        /// Data directory (overrides server.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Require tokens (development.bypass_auth = false); needs your own
        /// secrets.encryption_key.
        #[arg(long)]
        auth: bool,
    },
    /// Print a commented default config file.
    InitConfig,
    /// Print the OpenAPI document of the REST API.
    Openapi,
    /// Ask a running server whether it is ready (database, container engine, plugins); exit
    /// code 1 when it is not.
    Status,
    /// Back up a server's state into DIR (missing or empty), also while it runs: both databases
    /// (SQLite's online backup), objects, logs, plugins, and the secrets key.
    Backup {
        /// Where to write the backup.
        dir: PathBuf,
        /// The server's config file, to find its data directory and key.
        #[arg(long, env = "GOFER_CONFIG")]
        config: Option<PathBuf>,
        /// The server's data directory (overrides server.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Restore the backup in DIR into a new data directory.
    Restore {
        /// A folder made by `gofer service backup`.
        dir: PathBuf,
        /// The data directory to make (missing or empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum NamespaceCommand {
    /// List namespaces.
    List(ListArgs),
    /// Show one namespace.
    Get { id: String },
    /// Create a namespace.
    Create {
        id: String,
        /// Human-friendly name (default: the id).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Change a namespace's name or description.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a namespace and everything in it.
    Delete { id: String },
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Maximum number of items.
    #[arg(long)]
    limit: Option<u64>,
    /// Items to skip.
    #[arg(long)]
    offset: Option<u64>,
}

impl ListArgs {
    pub(super) fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        if let Some(offset) = self.offset {
            parts.push(format!("offset={offset}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

#[derive(Debug, Subcommand)]
enum PipelineCommand {
    /// List the pipelines of the namespace.
    List(ListArgs),
    /// Show a pipeline and its live config.
    Get { id: String },
    /// Let a pipeline start runs again.
    Enable { id: String },
    /// Stop a pipeline from starting runs.
    Disable { id: String },
    /// Delete a pipeline with its configs, deployments and runs.
    Delete { id: String },
    /// Register a new pipeline from a pipeline program (a Go module or Rust crate using a Gofer
    /// SDK: built and run, its JSON output registered) or a JSON file.
    Create {
        /// Folder with a go.mod or Cargo.toml, or a .json file.
        path: PathBuf,
        /// Deploy the new config right away.
        #[arg(long)]
        deploy: bool,
    },
    /// Register a new config version of an existing pipeline from a pipeline program or a JSON
    /// file (like `create`).
    Update {
        /// Folder with a go.mod or Cargo.toml, or a .json file.
        path: PathBuf,
        /// Deploy the new config right away.
        #[arg(long)]
        deploy: bool,
    },
    /// Register, inspect and deploy config versions.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Register a config from a JSON file (what an SDK program prints); `-` reads stdin.
    Register {
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Deploy the new version right away.
        #[arg(long)]
        deploy: bool,
    },
    /// List a pipeline's config versions.
    List {
        pipeline: String,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show one config version (default: the latest).
    Get {
        pipeline: String,
        version: Option<u64>,
    },
    /// Make a version live.
    Deploy { pipeline: String, version: u64 },
    /// Delete a version that is neither live nor the latest.
    Delete { pipeline: String, version: u64 },
}

#[derive(Debug, Subcommand)]
enum EventCommand {
    /// List stored events.
    List {
        #[command(flatten)]
        list: ListArgs,
        /// Newest first.
        #[arg(long)]
        reverse: bool,
    },
    /// Show one event.
    Get { id: String },
    /// Follow events live until interrupted.
    Stream {
        /// Send stored events first.
        #[arg(long)]
        history: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Show server-wide settings.
    Get,
    /// Stop every pipeline from starting new runs.
    Pause,
    /// Let pipelines start runs again.
    Resume,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // Half the cores (at least one) run async work; SQLite and plugin compiles have their own
    // blocking threads. Measured on 2 cores under load (docs/performance.md): one worker keeps
    // API tails at a third of two workers'. TOKIO_WORKER_THREADS overrides.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        builder.worker_threads((cores / 2).max(1));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of the output has gone (`| head -1`, `| grep -q`): done, like other tools.
        Err(error) if output_closed(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// Whether the command failed only because its standard output was closed.
pub(crate) fn output_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes on one line.
fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        // Many errors already say their source ("could not open X: {source}"): say it once.
        if parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    let command = match cli.command {
        Command::Service(ServiceCommand::Status) => Command::Service(ServiceCommand::Status),
        Command::Service(command) => return service(command).await,
        Command::Completion { shell } => {
            std::io::Write::write_all(&mut std::io::stdout(), &reference::completions(shell))?;
            return Ok(());
        }
        Command::Reference { format } => {
            let document = match format {
                ReferenceFormat::Markdown => reference::markdown().into_bytes(),
                ReferenceFormat::Man => reference::man_page(),
            };
            std::io::Write::write_all(&mut std::io::stdout(), &document)?;
            return Ok(());
        }
        Command::Plugin(command) => {
            let json = global.output == OutputFormat::Json;
            match plugins::offline_plugin_command(command, json).await? {
                Some(command) => Command::Plugin(command),
                None => return Ok(()),
            }
        }
        command => command,
    };
    let client = Client::new(
        &global.api_base_url,
        global.token.clone(),
        global.ca_cert.as_deref(),
    )?;
    let ctx = Session { client, global };
    match command {
        Command::Service(ServiceCommand::Status) => service_status(&ctx).await,
        Command::Service(_) | Command::Completion { .. } | Command::Reference { .. } => {
            unreachable!("handled above")
        }
        Command::Namespace(command) => namespace(&ctx, command).await,
        Command::Pipeline(command) => pipeline(&ctx, command).await,
        Command::Deployment(command) => deployments::deployment(&ctx, command).await,
        Command::Run(command) => runs::run(&ctx, command).await,
        Command::Task(command) => runs::task(&ctx, command).await,
        Command::Plugin(command) => plugins::plugin(&ctx, command).await,
        Command::Subscription(command) => plugins::subscription(&ctx, command).await,
        Command::Secret(command) => stores::secret(&ctx, command).await,
        Command::Token(command) => access::token(&ctx, command).await,
        Command::Role(command) => access::role(&ctx, command).await,
        Command::Object(command) => stores::object(&ctx, command).await,
        Command::Event(command) => event(&ctx, command).await,
        Command::System(command) => system(&ctx, command).await,
    }
}

/// `gofer service status`: the server's readiness checks; an error when it is not ready.
async fn service_status(ctx: &Session) -> anyhow::Result<()> {
    let (status, body) = ctx.client.get_with_status("/api/ready").await?;
    ctx.show(&body, |body| {
        let mut text = String::new();
        for check in body["checks"].as_array().into_iter().flatten() {
            let mark = if check["ok"] == true { "✓" } else { "✗" };
            text.push_str(&format!(
                "{mark} {}: {}\n",
                check["name"].as_str().unwrap_or_default(),
                check["detail"].as_str().unwrap_or_default()
            ));
        }
        Ok(text.trim_end().to_string())
    })?;
    if status == 200 && body["ready"] == true {
        Ok(())
    } else {
        anyhow::bail!("the server at {} is not ready", ctx.global.api_base_url)
    }
}

async fn service(command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::InitConfig => {
            output::text(DEFAULT_CONFIG_TOML)?;
            Ok(())
        }
        ServiceCommand::Openapi => {
            output::text(crate::api::openapi_json())?;
            Ok(())
        }
        ServiceCommand::Status => unreachable!("needs a session; handled in `run`"),
        ServiceCommand::Backup {
            dir,
            config,
            data_dir,
        } => {
            let overrides = ConfigOverrides {
                bind: None,
                data_dir,
                auth: false,
            };
            let config = ServerConfig::load(config.as_deref(), &overrides)?;
            let manifest = crate::backup::backup(&config, &dir)
                .with_context(|| format!("backing up {}", config.server.data_dir.display()))?;
            output::line(format!(
                "✓ Backed up {} into {}: both databases, {} files ({} bytes)",
                config.server.data_dir.display(),
                dir.display(),
                manifest.files,
                manifest.bytes
            ))?;
            if let Some(bucket) = &manifest.objects_bucket {
                output::line(format!(
                    "  Objects stay in {bucket} (objects.engine = \"s3\"): back the bucket up with its own tools (versioning, replication)."
                ))?;
            }
            output::line(format!(
                "\n!! {key} is the key that decrypts every secret in this backup.\n\
                 !! Move it out of the backup now, into a password manager or a vault: anyone who\n\
                 !! has both can read your secrets, and without it they are lost. A restored server\n\
                 !! needs it as secrets.encryption_key (GOFER_SECRETS__ENCRYPTION_KEY).",
                key = dir.join(crate::backup::KEY_FILE).display()
            ))?;
            Ok(())
        }
        ServiceCommand::Restore { dir, data_dir } => {
            let manifest = crate::backup::restore(&dir, &data_dir)
                .with_context(|| format!("restoring {}", dir.display()))?;
            output::line(format!(
                "✓ Restored the backup of {} (taken {} by Gofer {}) into {}.\n\
                 Start it with: gofer service start --data-dir {} (with secrets.encryption_key set \
                 to the backup's key)",
                manifest.source.display(),
                output::ago(manifest.created),
                manifest.gofer_version,
                data_dir.display(),
                data_dir.display()
            ))?;
            Ok(())
        }
        ServiceCommand::Start {
            config,
            bind,
            data_dir,
            auth,
        } => {
            let overrides = ConfigOverrides {
                bind,
                data_dir,
                auth,
            };
            let config = ServerConfig::load(config.as_deref(), &overrides)?;
            let telemetry = crate::telemetry::Telemetry::init(&config.log, &config.tracing)?;
            let served = crate::server::serve(config).await;
            telemetry.shutdown().await;
            served?;
            Ok(())
        }
    }
}

struct Session {
    client: Client,
    global: GlobalArgs,
}

impl Session {
    /// A copy for a concurrent stream.
    fn clone_for_streams(&self) -> Session {
        Session {
            client: self.client.clone(),
            global: GlobalArgs {
                api_base_url: self.global.api_base_url.clone(),
                ca_cert: self.global.ca_cert.clone(),
                token: self.global.token.clone(),
                namespace: self.global.namespace.clone(),
                output: self.global.output,
            },
        }
    }

    fn json(&self) -> bool {
        self.global.output == OutputFormat::Json
    }

    fn pipeline_path(&self, pipeline: &str) -> String {
        format!(
            "/api/namespaces/{}/pipelines/{pipeline}",
            self.global.namespace
        )
    }

    /// Prints `body` as JSON, or the table/view `render` makes of it.
    fn show(
        &self,
        body: &Value,
        render: impl FnOnce(&Value) -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        if self.json() {
            output::print_json(body)?;
        } else {
            output::line(render(body)?)?;
        }
        Ok(())
    }

    /// Prints a confirmation for people, or `{}`-like JSON for scripts.
    fn done(&self, body: &Value, message: String) -> anyhow::Result<()> {
        if self.json() {
            let empty = Value::Object(Default::default());
            output::print_json(if body.is_null() { &empty } else { body })?;
        } else {
            output::line(format_args!("✓ {message}"))?;
        }
        Ok(())
    }
}

async fn namespace(ctx: &Session, command: NamespaceCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match command {
        NamespaceCommand::List(list) => {
            let body = client
                .get(&format!("/api/namespaces{}", list.query()))
                .await?;
            ctx.show(&body, |body| {
                Ok(output::namespaces(&field::<Vec<Namespace>>(
                    body,
                    "namespaces",
                )?))
            })
        }
        NamespaceCommand::Get { id } => {
            let body = client.get(&format!("/api/namespaces/{id}")).await?;
            ctx.show(&body, |body| {
                Ok(output::namespace(&field(body, "namespace")?))
            })
        }
        NamespaceCommand::Create {
            id,
            name,
            description,
        } => {
            let name = name.unwrap_or_else(|| id.clone());
            let body = client
                .post(
                    "/api/namespaces",
                    json!({"id": id, "name": name, "description": description}),
                )
                .await?;
            ctx.done(&body, format!("Created namespace '{id}'"))?;
            Ok(())
        }
        NamespaceCommand::Update {
            id,
            name,
            description,
        } => {
            if name.is_none() && description.is_none() {
                bail!("nothing to update: give --name and/or --description");
            }
            let body = client
                .patch(
                    &format!("/api/namespaces/{id}"),
                    json!({"name": name, "description": description}),
                )
                .await?;
            ctx.done(&body, format!("Updated namespace '{id}'"))?;
            Ok(())
        }
        NamespaceCommand::Delete { id } => {
            let body = client.delete(&format!("/api/namespaces/{id}")).await?;
            ctx.done(&body, format!("Deleted namespace '{id}'"))?;
            Ok(())
        }
    }
}

async fn pipeline(ctx: &Session, command: PipelineCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match command {
        PipelineCommand::List(list) => {
            let path = format!(
                "/api/namespaces/{}/pipelines{}",
                ctx.global.namespace,
                list.query()
            );
            let body = client.get(&path).await?;
            ctx.show(&body, |body| {
                Ok(output::pipelines(&field::<Vec<PipelineMetadata>>(
                    body,
                    "pipelines",
                )?))
            })
        }
        PipelineCommand::Get { id } => {
            let body = client.get(&ctx.pipeline_path(&id)).await?;
            if ctx.json() {
                output::print_json(&body)?;
                return Ok(());
            }
            let metadata: PipelineMetadata = field(&body, "pipeline")?;
            let configs = client
                .get(&format!("{}/configs?limit=1000", ctx.pipeline_path(&id)))
                .await?;
            let configs: Vec<PipelineConfig> = field(&configs, "configs")?;
            let live = configs
                .iter()
                .find(|config| config.state == crate::models::ConfigState::Live);
            output::line(output::pipeline(&metadata, live))?;
            Ok(())
        }
        PipelineCommand::Create { path, deploy } => {
            pipeline_from_program(ctx, path, deploy, false).await
        }
        PipelineCommand::Update { path, deploy } => {
            pipeline_from_program(ctx, path, deploy, true).await
        }
        PipelineCommand::Enable { id } => set_pipeline_state(ctx, &id, "active").await,
        PipelineCommand::Disable { id } => set_pipeline_state(ctx, &id, "disabled").await,
        PipelineCommand::Delete { id } => {
            let body = client.delete(&ctx.pipeline_path(&id)).await?;
            ctx.done(&body, format!("Deleted pipeline '{id}'"))?;
            Ok(())
        }
        PipelineCommand::Config(command) => config(ctx, command).await,
    }
}

/// `pipeline create|update PATH`: runs the program, checks the pipeline is (or is not) there yet,
/// registers the config.
async fn pipeline_from_program(
    ctx: &Session,
    path: PathBuf,
    deploy: bool,
    update: bool,
) -> anyhow::Result<()> {
    let config = tokio::task::spawn_blocking(move || {
        program::config_from(&path, |progress| eprintln!("{progress}"))
    })
    .await
    .context("the pipeline program's runner stopped")??;
    let id = config
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let exists = match ctx.client.get(&ctx.pipeline_path(&id)).await {
        Ok(_) => true,
        Err(ClientError::Api { status: 404, .. }) => false,
        Err(error) => return Err(error.into()),
    };
    let namespace = &ctx.global.namespace;
    if exists && !update {
        bail!(
            "pipeline '{id}' already exists in namespace '{namespace}'; use `gofer pipeline update` to register a new version"
        );
    }
    if !exists && update {
        bail!(
            "pipeline '{id}' does not exist in namespace '{namespace}'; use `gofer pipeline create` to register it"
        );
    }
    register_config(ctx, config, deploy).await
}

/// Registers a config (and deploys it when asked), and says what happened.
async fn register_config(ctx: &Session, config: Value, deploy: bool) -> anyhow::Result<()> {
    let client = &ctx.client;
    let id = config
        .get("id")
        .and_then(Value::as_str)
        .context("the config has no string field \"id\"")?
        .to_string();
    let registered = client
        .post(
            &format!("{}/configs", ctx.pipeline_path(&id)),
            json!({ "config": config }),
        )
        .await?;
    let version: u64 = registered
        .pointer("/pipeline/config/version")
        .and_then(Value::as_u64)
        .context("the server's answer has no config version")?;
    if !deploy {
        ctx.done(&registered, format!("Registered pipeline '{id}' config v{version} (not deployed; `gofer pipeline config deploy {id} {version}`)"))?;
        return Ok(());
    }
    let deployed = client
        .post(
            &format!("{}/configs/{version}", ctx.pipeline_path(&id)),
            Value::Null,
        )
        .await?;
    let body = json!({ "pipeline": registered["pipeline"], "deployment": deployed["deployment"] });
    ctx.done(
        &body,
        format!("Registered and deployed pipeline '{id}' config v{version}"),
    )?;
    Ok(())
}

async fn set_pipeline_state(ctx: &Session, id: &str, state: &str) -> anyhow::Result<()> {
    let body = ctx
        .client
        .patch(&ctx.pipeline_path(id), json!({ "state": state }))
        .await?;
    ctx.done(&body, format!("Pipeline '{id}' is now {state}"))?;
    Ok(())
}

async fn config(ctx: &Session, command: ConfigCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match command {
        ConfigCommand::Register { file, deploy } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("could not read the config from stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("could not read the config file {}", file.display()))?
            };
            let config: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            register_config(ctx, config, deploy).await
        }
        ConfigCommand::List { pipeline, list } => {
            let body = client
                .get(&format!(
                    "{}/configs{}",
                    ctx.pipeline_path(&pipeline),
                    list.query()
                ))
                .await?;
            ctx.show(&body, |body| {
                Ok(output::configs(&field::<Vec<PipelineConfig>>(
                    body, "configs",
                )?))
            })
        }
        ConfigCommand::Get { pipeline, version } => {
            let path = format!(
                "{}/configs/{}",
                ctx.pipeline_path(&pipeline),
                version.unwrap_or(0)
            );
            let body = client.get(&path).await?;
            ctx.show(&body, |body| Ok(output::config(&field(body, "config")?)))
        }
        ConfigCommand::Deploy { pipeline, version } => {
            let body = client
                .post(
                    &format!("{}/configs/{version}", ctx.pipeline_path(&pipeline)),
                    Value::Null,
                )
                .await?;
            let deployment: Deployment = field(&body, "deployment")?;
            ctx.done(
                &body,
                format!(
                    "Deployed pipeline '{pipeline}' v{} (deployment {}, from v{})",
                    deployment.end_version, deployment.deployment_id, deployment.start_version
                ),
            )?;
            Ok(())
        }
        ConfigCommand::Delete { pipeline, version } => {
            let body = client
                .delete(&format!(
                    "{}/configs/{version}",
                    ctx.pipeline_path(&pipeline)
                ))
                .await?;
            ctx.done(
                &body,
                format!("Deleted pipeline '{pipeline}' config v{version}"),
            )?;
            Ok(())
        }
    }
}

async fn event(ctx: &Session, command: EventCommand) -> anyhow::Result<()> {
    match command {
        EventCommand::List { list, reverse } => {
            let mut query = list.query();
            if reverse {
                query.push_str(if query.is_empty() {
                    "?reverse=true"
                } else {
                    "&reverse=true"
                });
            }
            let body = ctx.client.get(&format!("/api/events{query}")).await?;
            ctx.show(&body, |body| {
                Ok(output::events(&field::<Vec<Event>>(body, "events")?))
            })
        }
        EventCommand::Get { id } => {
            let body = ctx.client.get(&format!("/api/events/{id}")).await?;
            ctx.show(&body, |body| Ok(output::events(&[field(body, "event")?])))
        }
        EventCommand::Stream { history } => stream_events(ctx, history).await,
    }
}

async fn stream_events(ctx: &Session, history: bool) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    let request = ctx
        .client
        .websocket_request(&format!("/api/events?history={history}"))?;
    let (mut socket, _) = ctx
        .client
        .connect_websocket(request)
        .await
        .with_context(|| {
            format!(
                "could not open the event stream at {}",
                ctx.global.api_base_url
            )
        })?;
    while let Some(message) = socket.next().await {
        match message.context("the event stream broke")? {
            Message::Text(text) => {
                if ctx.json() {
                    output::line(text)?;
                } else {
                    let event: Event = serde_json::from_str(&text)
                        .context("the server sent an unreadable event")?;
                    output::line(output::event_line(&event))?;
                }
            }
            Message::Close(frame) => {
                if let Some(frame) = frame
                    && frame.code != tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal
                {
                    bail!("the server closed the event stream: {}", frame.reason);
                }
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

async fn system(ctx: &Session, command: SystemCommand) -> anyhow::Result<()> {
    let pause = match command {
        SystemCommand::Get => {
            let body = ctx.client.get("/api/system").await?;
            return ctx.show(&body, |body| {
                Ok(format!(
                    "runs paused: {}\nbootstrap token created: {}",
                    body["ignore_pipeline_run_events"], body["bootstrap_token_created"]
                ))
            });
        }
        SystemCommand::Pause => true,
        SystemCommand::Resume => false,
    };
    let body = ctx
        .client
        .patch(
            "/api/system",
            json!({ "ignore_pipeline_run_events": pause }),
        )
        .await?;
    ctx.done(
        &body,
        if pause {
            "New runs are paused".into()
        } else {
            "New runs are allowed again".into()
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn an_error_that_already_says_its_source_says_it_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("could not open the store: {0}")]
        struct Saying(#[source] std::io::Error);
        let error = anyhow::Error::new(Saying(std::io::Error::other("the disk is full")))
            .context("starting the server");
        assert_eq!(
            super::one_line(&error),
            "starting the server: could not open the store: the disk is full"
        );
    }
}
