//! `gofer secret …` and `gofer object …`: pipeline and global secrets, pipeline and run objects.
//! Secret values are read from stdin unless given with `--value` (so they stay out of shell
//! history); objects are streamed from and to files.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::Session;
use super::client::field;
use crate::models::{Object, Secret};

#[derive(Debug, Subcommand)]
pub(super) enum SecretCommand {
    /// A pipeline's secrets: `pipeline_secret{{KEY}}` in its tasks' variables.
    #[command(subcommand)]
    Pipeline(PipelineSecretCommand),
    /// Global secrets: `global_secret{{KEY}}`, usable by the namespaces they list.
    #[command(subcommand)]
    Global(GlobalSecretCommand),
}

#[derive(Debug, Subcommand)]
pub(super) enum PipelineSecretCommand {
    /// List a pipeline's secrets (names only).
    List { pipeline: String },
    /// Show a secret's metadata (and its value with --show).
    Get {
        pipeline: String,
        key: String,
        /// Print the value too.
        #[arg(long)]
        show: bool,
    },
    /// Store a secret; the value is read from stdin unless given with --value.
    Put {
        pipeline: String,
        key: String,
        #[arg(long)]
        value: Option<String>,
        /// Replace an existing secret.
        #[arg(long)]
        force: bool,
    },
    /// Delete a secret.
    Delete { pipeline: String, key: String },
}

#[derive(Debug, Subcommand)]
pub(super) enum GlobalSecretCommand {
    /// List global secrets (names and namespaces only).
    List,
    /// Show a global secret's metadata (and its value with --show).
    Get {
        key: String,
        #[arg(long)]
        show: bool,
    },
    /// Store a global secret; the value is read from stdin unless given with --value.
    Put {
        key: String,
        #[arg(long)]
        value: Option<String>,
        /// A namespace regex whose pipelines may use it (repeatable; matched against the whole
        /// namespace id; default: all).
        #[arg(long = "allow", value_name = "NAMESPACE_REGEX", default_value = ".*")]
        namespaces: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Delete a global secret.
    Delete { key: String },
}

#[derive(Debug, Subcommand)]
pub(super) enum ObjectCommand {
    /// A pipeline's objects (`pipeline_object{{KEY}}`), kept across runs.
    #[command(subcommand)]
    Pipeline(PipelineObjectCommand),
    /// A run's objects (`run_object{{KEY}}`), expiring with the run.
    #[command(subcommand)]
    Run(RunObjectCommand),
    /// A plugin's own objects (its key-value store, e.g. `interval`'s schedules).
    #[command(subcommand)]
    Plugin(PluginObjectCommand),
}

#[derive(Debug, Subcommand)]
pub(super) enum PluginObjectCommand {
    /// List a plugin's objects, oldest first.
    List { plugin: String },
    /// Write an object to a file (default: stdout).
    Get {
        plugin: String,
        key: String,
        #[arg(long)]
        output_file: Option<PathBuf>,
    },
    /// Upload a file (`-` for stdin) as an object.
    Put {
        plugin: String,
        key: String,
        file: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Delete an object.
    Delete { plugin: String, key: String },
}

#[derive(Debug, Subcommand)]
pub(super) enum PipelineObjectCommand {
    /// List a pipeline's objects, oldest first.
    List { pipeline: String },
    /// Write an object to a file (default: stdout).
    Get {
        pipeline: String,
        key: String,
        #[arg(long)]
        output_file: Option<PathBuf>,
    },
    /// Upload a file (`-` for stdin) as an object.
    Put {
        pipeline: String,
        key: String,
        file: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Delete an object.
    Delete { pipeline: String, key: String },
}

#[derive(Debug, Subcommand)]
pub(super) enum RunObjectCommand {
    /// List a run's objects, oldest first.
    List { pipeline: String, run: u64 },
    /// Write an object to a file (default: stdout).
    Get {
        pipeline: String,
        run: u64,
        key: String,
        #[arg(long)]
        output_file: Option<PathBuf>,
    },
    /// Upload a file (`-` for stdin) as an object.
    Put {
        pipeline: String,
        run: u64,
        key: String,
        file: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Delete an object.
    Delete {
        pipeline: String,
        run: u64,
        key: String,
    },
}

fn secrets_table(secrets: &[Secret]) -> String {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(vec!["key", "namespaces", "created"]);
    for secret in secrets {
        table.add_row(vec![
            secret.key.clone(),
            secret.namespaces.join(", "),
            super::output::ago(secret.created),
        ]);
    }
    table.to_string()
}

fn objects_table(objects: &[Object]) -> String {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(vec!["key", "created"]);
    for object in objects {
        table.add_row(vec![object.key.clone(), super::output::ago(object.created)]);
    }
    table.to_string()
}

/// A secret value: `--value`, or all of stdin (one trailing newline dropped).
fn secret_value(value: Option<String>) -> anyhow::Result<String> {
    if let Some(value) = value {
        return Ok(value);
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("could not read the secret from stdin")?;
    let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
    anyhow::ensure!(
        !text.is_empty(),
        "no secret value: give --value or pipe it on stdin"
    );
    Ok(text)
}

fn show_secret(ctx: &Session, body: &Value) -> anyhow::Result<()> {
    ctx.show(body, |body| {
        let metadata: Secret = field(body, "metadata")?;
        let mut text = secrets_table(std::slice::from_ref(&metadata));
        if let Some(value) = body.get("secret").and_then(Value::as_str) {
            text.push_str(&format!("\n{value}"));
        }
        Ok(text)
    })
}

pub(super) async fn secret(ctx: &Session, command: SecretCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match command {
        SecretCommand::Pipeline(command) => {
            let base = |pipeline: &str| format!("{}/secrets", ctx.pipeline_path(pipeline));
            match command {
                PipelineSecretCommand::List { pipeline } => {
                    let body = client.get(&base(&pipeline)).await?;
                    ctx.show(&body, |body| {
                        Ok(secrets_table(&field::<Vec<Secret>>(body, "secrets")?))
                    })
                }
                PipelineSecretCommand::Get {
                    pipeline,
                    key,
                    show,
                } => {
                    let body = client
                        .get(&format!("{}/{key}?include_secret={show}", base(&pipeline)))
                        .await?;
                    show_secret(ctx, &body)
                }
                PipelineSecretCommand::Put {
                    pipeline,
                    key,
                    value,
                    force,
                } => {
                    let content = secret_value(value)?;
                    let body = client
                        .post(
                            &base(&pipeline),
                            json!({"key": key, "content": content, "force": force}),
                        )
                        .await?;
                    ctx.done(
                        &body,
                        format!("Stored secret '{key}' of pipeline '{pipeline}'"),
                    )?;
                    Ok(())
                }
                PipelineSecretCommand::Delete { pipeline, key } => {
                    let body = client.delete(&format!("{}/{key}", base(&pipeline))).await?;
                    ctx.done(
                        &body,
                        format!("Deleted secret '{key}' of pipeline '{pipeline}'"),
                    )?;
                    Ok(())
                }
            }
        }
        SecretCommand::Global(command) => match command {
            GlobalSecretCommand::List => {
                let body = client.get("/api/secrets/global").await?;
                ctx.show(&body, |body| {
                    Ok(secrets_table(&field::<Vec<Secret>>(body, "secrets")?))
                })
            }
            GlobalSecretCommand::Get { key, show } => {
                let body = client
                    .get(&format!("/api/secrets/global/{key}?include_secret={show}"))
                    .await?;
                show_secret(ctx, &body)
            }
            GlobalSecretCommand::Put {
                key,
                value,
                namespaces,
                force,
            } => {
                let content = secret_value(value)?;
                let body = client
                    .post(
                        "/api/secrets/global",
                        json!({"key": key, "content": content, "namespaces": namespaces, "force": force}),
                    )
                    .await?;
                ctx.done(&body, format!("Stored global secret '{key}'"))?;
                Ok(())
            }
            GlobalSecretCommand::Delete { key } => {
                let body = client.delete(&format!("/api/secrets/global/{key}")).await?;
                ctx.done(&body, format!("Deleted global secret '{key}'"))?;
                Ok(())
            }
        },
    }
}

/// A key (or name) as one path segment: `%` and `/` escaped (spaces and the rest are sent as
/// they are and escaped by the HTTP client).
fn escape_key(key: &str) -> String {
    key.replace('%', "%25").replace('/', "%2F")
}

async fn list_objects(ctx: &Session, path: &str) -> anyhow::Result<()> {
    let body = ctx.client.get(path).await?;
    ctx.show(&body, |body| {
        Ok(objects_table(&field::<Vec<Object>>(body, "objects")?))
    })
}

async fn get_object(ctx: &Session, path: &str, output: Option<PathBuf>) -> anyhow::Result<()> {
    let response = ctx.client.download(path).await?;
    let mut stream = response.bytes_stream();
    let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &output {
        Some(file) => Box::new(
            tokio::fs::File::create(file)
                .await
                .with_context(|| format!("could not create {}", file.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    while let Some(chunk) = stream.next().await {
        sink.write_all(&chunk.context("the download broke off")?)
            .await
            .context("could not write the object")?;
    }
    sink.flush().await?;
    Ok(())
}

async fn put_object(ctx: &Session, path: &str, file: PathBuf, force: bool) -> anyhow::Result<()> {
    let body = if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("could not read the object from stdin")?;
        reqwest::Body::from(bytes)
    } else {
        let opened = tokio::fs::File::open(&file)
            .await
            .with_context(|| format!("could not open {}", file.display()))?;
        // 256 KiB reads: the default 4 KiB is several times slower for large files.
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            opened,
            256 * 1024,
        ))
    };
    let body = ctx
        .client
        .upload(&format!("{path}?force={force}"), body)
        .await?;
    let key = body
        .pointer("/object/key")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    ctx.done(&body, format!("Stored object '{key}'"))?;
    Ok(())
}

/// What to do with an object, whoever owns it.
enum ObjectAction {
    List,
    Get(String, Option<PathBuf>),
    Put(String, PathBuf, bool),
    Delete(String),
}

pub(super) async fn object(ctx: &Session, command: ObjectCommand) -> anyhow::Result<()> {
    // (the owner's objects path, the owner in words, what to do)
    let (objects, owner, action) = match command {
        ObjectCommand::Pipeline(command) => {
            let (pipeline, action) = match command {
                PipelineObjectCommand::List { pipeline } => (pipeline, ObjectAction::List),
                PipelineObjectCommand::Get {
                    pipeline,
                    key,
                    output_file,
                } => (pipeline, ObjectAction::Get(key, output_file)),
                PipelineObjectCommand::Put {
                    pipeline,
                    key,
                    file,
                    force,
                } => (pipeline, ObjectAction::Put(key, file, force)),
                PipelineObjectCommand::Delete { pipeline, key } => {
                    (pipeline, ObjectAction::Delete(key))
                }
            };
            (
                format!("{}/objects", ctx.pipeline_path(&pipeline)),
                format!("pipeline '{pipeline}'"),
                action,
            )
        }
        ObjectCommand::Run(command) => {
            let (pipeline, run, action) = match command {
                RunObjectCommand::List { pipeline, run } => (pipeline, run, ObjectAction::List),
                RunObjectCommand::Get {
                    pipeline,
                    run,
                    key,
                    output_file,
                } => (pipeline, run, ObjectAction::Get(key, output_file)),
                RunObjectCommand::Put {
                    pipeline,
                    run,
                    key,
                    file,
                    force,
                } => (pipeline, run, ObjectAction::Put(key, file, force)),
                RunObjectCommand::Delete { pipeline, run, key } => {
                    (pipeline, run, ObjectAction::Delete(key))
                }
            };
            (
                format!("{}/runs/{run}/objects", ctx.pipeline_path(&pipeline)),
                format!("run {run}"),
                action,
            )
        }
        ObjectCommand::Plugin(command) => {
            let (plugin, action) = match command {
                PluginObjectCommand::List { plugin } => (plugin, ObjectAction::List),
                PluginObjectCommand::Get {
                    plugin,
                    key,
                    output_file,
                } => (plugin, ObjectAction::Get(key, output_file)),
                PluginObjectCommand::Put {
                    plugin,
                    key,
                    file,
                    force,
                } => (plugin, ObjectAction::Put(key, file, force)),
                PluginObjectCommand::Delete { plugin, key } => (plugin, ObjectAction::Delete(key)),
            };
            (
                format!("/api/extensions/{}/objects", escape_key(&plugin)),
                format!("plugin '{plugin}'"),
                action,
            )
        }
    };
    let object = |key: &str| format!("{objects}/{}", escape_key(key));
    match action {
        ObjectAction::List => list_objects(ctx, &objects).await,
        ObjectAction::Get(key, output_file) => get_object(ctx, &object(&key), output_file).await,
        ObjectAction::Put(key, file, force) => put_object(ctx, &object(&key), file, force).await,
        ObjectAction::Delete(key) => {
            let body = ctx.client.delete(&object(&key)).await?;
            ctx.done(&body, format!("Deleted object '{key}' of {owner}"))?;
            Ok(())
        }
    }
}
