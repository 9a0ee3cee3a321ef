//! `gofer plugin …` and `gofer subscription …`.

use clap::Subcommand;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

use super::Session;
use super::client::field;
use crate::models::{Plugin, Subscription};

#[derive(Debug, Subcommand)]
pub(super) enum PluginCommand {
    /// List plugins (built-in and from the plugins folder), loaded or failed.
    List,
    /// Show one plugin and its settings.
    Get { name: String },
    /// A plugin's own log (what it wrote; administrators only); `--follow` keeps printing new
    /// lines until interrupted.
    Logs {
        name: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// Write a new plugin project that builds and whose tests pass: a Rust WebAssembly component
    /// or a Go gRPC process (no server needed).
    New {
        /// The plugin's name: 3 to 32 of a-z, A-Z, 0-9 and '-'.
        name: String,
        #[arg(long, value_enum)]
        kind: super::scaffold::Kind,
        #[arg(long = "lang", value_enum)]
        language: super::scaffold::Language,
        /// Where to write it (default: ./NAME); must be new or empty.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The SDK to build against: sdk-rust or sdk-go/plugin of a Gofer checkout (default: the
        /// checkout this binary was built from, if it is still there).
        #[arg(long)]
        sdk: Option<std::path::PathBuf>,
    },
    /// Say what a plugin file is (a .wasm component or a .toml manifest of a gRPC plugin):
    /// interface version, world, name, kind, settings; or why a server would refuse it. Loads it
    /// as a server would (a manifest's process is started and stopped); no server needed.
    Check {
        file: std::path::PathBuf,
        /// Server configuration whose [plugins] limits and grants apply (default: the embedded
        /// defaults and GOFER_CONFIG).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
}

/// Runs the plugin commands that need no server; gives the others back.
pub(super) async fn offline_plugin_command(
    command: PluginCommand,
    json: bool,
) -> anyhow::Result<Option<PluginCommand>> {
    match command {
        PluginCommand::New {
            name,
            kind,
            language,
            dir,
            sdk,
        } => {
            let report = super::scaffold::new_plugin(super::scaffold::NewPlugin {
                name,
                kind,
                language,
                dir,
                sdk,
            })?;
            super::output::text(report)?;
            Ok(None)
        }
        PluginCommand::Check { file, config } => {
            let config = crate::config::ServerConfig::load(
                config.as_deref(),
                &crate::config::ConfigOverrides::default(),
            )?;
            let report = crate::plugins::check::check(&file, &config.plugins)
                .await
                .map_err(|error| anyhow::anyhow!("{} would be refused: {error}", file.display()))?;
            if json {
                super::output::print_json(&check_json(&report))?;
            } else {
                super::output::text(check_text(&file, &report))?;
            }
            Ok(None)
        }
        other => Ok(Some(other)),
    }
}

fn check_json(report: &crate::plugins::check::CheckReport) -> Value {
    let description = &report.description;
    json!({
        "runtime": report.runtime,
        "interface": report.interface,
        "name": description.name,
        "kind": description.kind,
        "version": description.version,
        "description": description.description,
        "settings": description.settings,
        "notes": report.notes,
    })
}

fn check_text(file: &std::path::Path, report: &crate::plugins::check::CheckReport) -> String {
    let description = &report.description;
    let shape = match (report.runtime, description.kind) {
        ("grpc", crate::models::PluginKind::Trigger) => "its TriggerService".to_string(),
        ("grpc", crate::models::PluginKind::Task) => "its TaskService".to_string(),
        (_, kind) => format!("the {} world", kind.as_str()),
    };
    let mut text = format!("✓ {} would load\n", file.display());
    for (label, value) in [
        ("runtime", report.runtime.to_string()),
        ("interface", format!("{} ({shape})", report.interface)),
        ("name", description.name.clone()),
        ("kind", description.kind.as_str().to_string()),
        ("version", description.version.clone()),
        ("description", description.description.clone()),
    ] {
        text.push_str(&format!("  {:<13}{value}\n", format!("{label}:")));
    }
    if !description.settings.is_empty() {
        text.push_str("  settings:\n");
        for setting in &description.settings {
            let required = if setting.required { " (required)" } else { "" };
            text.push_str(&format!(
                "    {}{required}: {}\n",
                setting.key, setting.documentation
            ));
        }
    }
    for note in &report.notes {
        text.push_str(&format!("  note: {note}\n"));
    }
    text
}

#[derive(Debug, Subcommand)]
pub(super) enum SubscriptionCommand {
    /// List a pipeline's trigger subscriptions, or with `--plugin` (and no pipeline) every
    /// subscription to that plugin.
    #[command(arg_required_else_help = true)]
    List {
        #[arg(required_unless_present = "plugin")]
        pipeline: Option<String>,
        /// Only subscriptions to this plugin; without a pipeline, across all pipelines.
        #[arg(long)]
        plugin: Option<String>,
    },
    /// Subscribe a pipeline to a trigger plugin: `gofer subscription create PIPELINE interval every-5m -s every=5m`.
    Create {
        pipeline: String,
        plugin: String,
        /// Your label for the subscription.
        label: String,
        /// A plugin setting KEY=VALUE (repeatable).
        #[arg(long = "setting", short = 's', value_parser = super::runs::parse_variable)]
        settings: Vec<(String, String)>,
    },
    /// Stop a subscription for now.
    Disable {
        pipeline: String,
        plugin: String,
        label: String,
    },
    /// Start a disabled subscription again.
    Enable {
        pipeline: String,
        plugin: String,
        label: String,
    },
    /// Delete a subscription.
    Delete {
        pipeline: String,
        plugin: String,
        label: String,
    },
}

fn spelling<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn plugins_table(plugins: &[Plugin]) -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "name", "kind", "version", "runtime", "source", "status",
    ]);
    for plugin in plugins {
        let mut status = plugin.status.clone();
        // A gRPC plugin's process: its pid and how often it was restarted.
        let process: Vec<String> = plugin
            .pid
            .map(|pid| format!("pid {pid}"))
            .into_iter()
            .chain(plugin.restarts.filter(|restarts| *restarts > 0).map(
                |restarts| match restarts {
                    1 => "1 restart".to_string(),
                    _ => format!("{restarts} restarts"),
                },
            ))
            .collect();
        if !process.is_empty() {
            status.push_str(&format!(" ({})", process.join(", ")));
        }
        if let Some(error) = &plugin.error {
            status.push_str(&format!(": {error}"));
        }
        table.add_row(vec![
            plugin.name.clone(),
            plugin.kind.as_ref().map(spelling).unwrap_or_default(),
            plugin.version.clone(),
            plugin.runtime.clone(),
            plugin.source.clone(),
            status,
        ]);
    }
    table.to_string()
}

pub(super) async fn plugin(ctx: &Session, command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::List => {
            let body = ctx.client.get("/api/plugins").await?;
            ctx.show(&body, |body| {
                Ok(plugins_table(&field::<Vec<Plugin>>(body, "plugins")?))
            })
        }
        PluginCommand::Logs { name, follow } => {
            let path = format!("/api/extensions/{name}/logs");
            if follow {
                return super::runs::stream_log(ctx, &path, None).await;
            }
            super::output::text(ctx.client.get_text(&path).await?)?;
            Ok(())
        }
        PluginCommand::New { .. } | PluginCommand::Check { .. } => {
            unreachable!("run before a client is made")
        }
        PluginCommand::Get { name } => {
            let body = ctx.client.get(&format!("/api/plugins/{name}")).await?;
            ctx.show(&body, |body| {
                let plugin: Plugin = field(body, "plugin")?;
                let mut text = plugins_table(std::slice::from_ref(&plugin));
                text.push_str(&format!("\n{}\n", plugin.description));
                for setting in &plugin.settings {
                    let required = if setting.required { " (required)" } else { "" };
                    text.push_str(&format!(
                        "  {}{required}: {}\n",
                        setting.key, setting.documentation
                    ));
                }
                Ok(text)
            })
        }
    }
}

pub(super) async fn subscription(
    ctx: &Session,
    command: SubscriptionCommand,
) -> anyhow::Result<()> {
    let client = &ctx.client;
    match command {
        SubscriptionCommand::List { pipeline, plugin } => {
            let path = match (&pipeline, &plugin) {
                (Some(pipeline), _) => format!("{}/subscriptions", ctx.pipeline_path(pipeline)),
                (None, Some(plugin)) => format!("/api/extensions/{plugin}/subscriptions"),
                (None, None) => anyhow::bail!("give a pipeline, or --plugin NAME"),
            };
            let mut body = client.get(&path).await?;
            if let (Some(_), Some(plugin), Some(Value::Array(listed))) =
                (&pipeline, &plugin, body.get_mut("subscriptions"))
            {
                listed.retain(|subscription| subscription["extension_id"] == plugin.as_str());
            }
            let across_pipelines = pipeline.is_none();
            ctx.show(&body, |body| {
                let subscriptions: Vec<Subscription> = field(body, "subscriptions")?;
                let mut table = Table::new();
                let mut header = vec!["plugin", "label", "settings", "status"];
                if across_pipelines {
                    header.insert(0, "pipeline");
                }
                table.load_style(UTF8_FULL_CONDENSED).set_header(header);
                for subscription in subscriptions {
                    let settings: Vec<String> = subscription
                        .settings
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let mut status = spelling(&subscription.status);
                    if let Some(reason) = &subscription.status_reason {
                        status.push_str(&format!(": {}", reason.description));
                    }
                    let mut row = vec![
                        subscription.extension_id,
                        subscription.subscription_id,
                        settings.join(" "),
                        status,
                    ];
                    if across_pipelines {
                        row.insert(
                            0,
                            format!("{}/{}", subscription.namespace_id, subscription.pipeline_id),
                        );
                    }
                    table.add_row(row);
                }
                Ok(table.to_string())
            })
        }
        SubscriptionCommand::Create {
            pipeline,
            plugin,
            label,
            settings,
        } => {
            let settings: std::collections::BTreeMap<String, String> =
                settings.into_iter().collect();
            let body = client
                .post(
                    &format!("{}/subscriptions", ctx.pipeline_path(&pipeline)),
                    json!({"extension_id": plugin, "subscription_id": label, "settings": settings}),
                )
                .await?;
            ctx.done(
                &body,
                format!("Subscribed '{pipeline}' to {plugin} as '{label}'"),
            )?;
            Ok(())
        }
        SubscriptionCommand::Disable {
            pipeline,
            plugin,
            label,
        } => set_status(ctx, &pipeline, &plugin, &label, "disabled").await,
        SubscriptionCommand::Enable {
            pipeline,
            plugin,
            label,
        } => set_status(ctx, &pipeline, &plugin, &label, "active").await,
        SubscriptionCommand::Delete {
            pipeline,
            plugin,
            label,
        } => {
            let body = client
                .delete(&format!(
                    "{}/subscriptions/{plugin}/{label}",
                    ctx.pipeline_path(&pipeline)
                ))
                .await?;
            ctx.done(
                &body,
                format!("Deleted subscription '{label}' of '{pipeline}' to {plugin}"),
            )?;
            Ok(())
        }
    }
}

async fn set_status(
    ctx: &Session,
    pipeline: &str,
    plugin: &str,
    label: &str,
    status: &str,
) -> anyhow::Result<()> {
    let body = ctx
        .client
        .patch(
            &format!(
                "{}/subscriptions/{plugin}/{label}",
                ctx.pipeline_path(pipeline)
            ),
            json!({ "status": status }),
        )
        .await?;
    ctx.done(
        &body,
        format!("Subscription '{label}' of '{pipeline}' to {plugin} is now {status}"),
    )?;
    Ok(())
}
