//! How the CLI shows results: tables and detail views for people, JSON for scripts.
//!
//! Must not make requests; it only formats values it is given.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

use crate::models::{
    Deployment, Event, Namespace, PipelineConfig, PipelineMetadata, Run, TaskExecution,
};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences for people.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

/// Epoch milliseconds as "3 minutes ago"; 0 as "never".
pub fn ago(millis: u64) -> String {
    if millis == 0 {
        return "never".into();
    }
    let now = crate::models::now_millis();
    let elapsed = std::time::Duration::from_millis(now.saturating_sub(millis));
    let mut formatter = timeago::Formatter::new();
    formatter.num_items(2);
    formatter.convert(elapsed)
}

/// Writes `text` and a newline to standard output. A failed write is returned, never panicked
/// on: when the reader has gone (`gofer … | head -1`), [`super::main`] ends the command quietly.
pub fn line(text: impl std::fmt::Display) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{text}")
}

/// Writes `text` as it is (no newline added) to standard output and flushes it; see [`line`].
pub fn text(text: impl std::fmt::Display) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{text}")?;
    stdout.flush()
}

pub fn print_json(value: &Value) -> std::io::Result<()> {
    line(serde_json::to_string_pretty(value).unwrap_or_default())
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    table
}

/// A value's wire spelling (`active`, `Running`).
fn spelling<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn namespaces(namespaces: &[Namespace]) -> String {
    let mut table = table(&["id", "name", "description", "created"]);
    for namespace in namespaces {
        table.add_row(vec![
            namespace.id.clone(),
            namespace.name.clone(),
            namespace.description.clone(),
            ago(namespace.created),
        ]);
    }
    table.to_string()
}

pub fn namespace(namespace: &Namespace) -> String {
    format!(
        "[{}] {}\n  {}\n  created {}, modified {}",
        namespace.id,
        namespace.name,
        namespace.description,
        ago(namespace.created),
        ago(namespace.modified)
    )
}

pub fn pipelines(pipelines: &[PipelineMetadata]) -> String {
    let mut table = table(&["id", "state", "created", "modified"]);
    for pipeline in pipelines {
        table.add_row(vec![
            pipeline.pipeline_id.clone(),
            spelling(&pipeline.state),
            ago(pipeline.created),
            ago(pipeline.modified),
        ]);
    }
    table.to_string()
}

pub fn pipeline(pipeline: &PipelineMetadata, live: Option<&PipelineConfig>) -> String {
    let mut text = format!(
        "[{}] in namespace {} :: {}\n  created {}, modified {}",
        pipeline.pipeline_id,
        pipeline.namespace_id,
        spelling(&pipeline.state),
        ago(pipeline.created),
        ago(pipeline.modified)
    );
    match live {
        Some(config) => {
            text.push_str(&format!(
                "\n  live config: v{} '{}'\n",
                config.version, config.name
            ));
            text.push_str(&config_tasks(config));
        }
        None => text.push_str("\n  no live config: deploy one with `gofer pipeline config deploy`"),
    }
    text
}

pub fn configs(configs: &[PipelineConfig]) -> String {
    let mut table = table(&[
        "version",
        "state",
        "name",
        "tasks",
        "registered",
        "deprecated",
    ]);
    for config in configs {
        table.add_row(vec![
            config.version.to_string(),
            spelling(&config.state),
            config.name.clone(),
            config.tasks.len().to_string(),
            ago(config.registered),
            ago(config.deprecated),
        ]);
    }
    table.to_string()
}

fn config_tasks(config: &PipelineConfig) -> String {
    let mut table = table(&["task", "image", "depends on"]);
    for task in config.tasks.values() {
        let parents = task
            .depends_on
            .iter()
            .map(|(parent, status)| format!("{parent} ({})", spelling(status)))
            .collect::<Vec<_>>()
            .join(", ");
        table.add_row(vec![task.id.clone(), task.image.clone(), parents]);
    }
    table.to_string()
}

pub fn config(config: &PipelineConfig) -> String {
    format!(
        "[{}] v{} '{}' :: {}\n  {}\n  parallelism {}, registered {}, deprecated {}\n{}",
        config.pipeline_id,
        config.version,
        config.name,
        spelling(&config.state),
        config.description,
        config.parallelism,
        ago(config.registered),
        ago(config.deprecated),
        config_tasks(config)
    )
}

pub fn deployments(deployments: &[Deployment]) -> String {
    let mut table = table(&[
        "id", "kind", "versions", "weight", "started", "ended", "state", "status",
    ]);
    for deployment in deployments {
        table.add_row(vec![
            deployment.deployment_id.to_string(),
            spelling(&deployment.kind),
            format!("{} -> {}", deployment.start_version, deployment.end_version),
            deployment
                .rollout
                .as_ref()
                .map(|rollout| format!("{}%", rollout.weight))
                .unwrap_or_default(),
            ago(deployment.started),
            ago(deployment.ended),
            spelling(&deployment.state),
            spelling(&deployment.status),
        ]);
    }
    table.to_string()
}

/// One deployment: what it does, its rules, its tallies per version, and its log.
pub fn deployment(deployment: &Deployment) -> String {
    let mut text = format!(
        "Deployment {} of {} ({}): {} -> {} :: {} {}\n  started {}, ended {}\n",
        deployment.deployment_id,
        deployment.pipeline_id,
        spelling(&deployment.kind),
        deployment.start_version,
        deployment.end_version,
        spelling(&deployment.state),
        spelling(&deployment.status),
        ago(deployment.started),
        ago(deployment.ended),
    );
    if let Some(reason) = &deployment.status_reason {
        text.push_str(&format!(
            "  {}: {}\n",
            spelling(&reason.reason),
            reason.description
        ));
    }
    if let Some(rollout) = &deployment.rollout {
        text.push_str(&format!(
            "  version {} gets {}% of new runs",
            deployment.end_version, rollout.weight
        ));
        if !rollout.steps.is_empty() {
            let steps: Vec<String> = rollout
                .steps
                .iter()
                .map(|step| format!("{step}%"))
                .collect();
            text.push_str(&format!(
                " (steps {}; promote after {} canary runs, roll back after {} failures, tolerance {:.0}%{})",
                steps.join(" → "),
                rollout.promote_after,
                rollout.rollback_after_failures,
                rollout.tolerance * 100.0,
                rollout
                    .min_success_rate
                    .map(|rate| format!(", at least {:.0}% successful", rate * 100.0))
                    .unwrap_or_default()
            ));
        }
        if let Some(variable) = &rollout.sticky_variable {
            text.push_str(&format!("; sticky by {variable}"));
        }
        text.push('\n');
        let mut tallies = table(&[
            "arm",
            "version",
            "runs",
            "successful",
            "failed",
            "this step",
            "step successful",
        ]);
        for tally in &rollout.tallies {
            tallies.add_row(vec![
                spelling(&tally.arm),
                tally.version.to_string(),
                tally.runs.to_string(),
                tally.successful.to_string(),
                tally.failed.to_string(),
                tally.step_complete.to_string(),
                tally.step_successful.to_string(),
            ]);
        }
        text.push_str(&tallies.to_string());
        text.push('\n');
    }
    if !deployment.logs.is_empty() {
        text.push_str("Log:\n");
        for event in &deployment.logs {
            text.push_str(&format!(
                "  {}: {}\n",
                ago(event.emitted),
                deployment_step(event)
            ));
        }
    }
    text
}

/// Two versions side by side, then the verdicts.
pub fn comparison(comparison: &crate::rollouts::Comparison) -> String {
    let millis = |value: Option<u64>| value.map(|ms| format!("{ms} ms")).unwrap_or_default();
    let mut sides = table(&[
        "",
        "runs",
        "successful",
        "failed",
        "success rate",
        "duration p50",
        "duration p95",
    ]);
    for arm in &comparison.arms {
        sides.add_row(vec![
            format!("{} (v{})", spelling(&arm.arm), arm.version),
            arm.runs.to_string(),
            arm.successful.to_string(),
            arm.failed.to_string(),
            arm.success_rate
                .map(|rate| format!("{:.0}%", rate * 100.0))
                .unwrap_or_default(),
            millis(arm.duration_p50_ms),
            millis(arm.duration_p95_ms),
        ]);
    }
    let mut tasks = table(&["task", "", "executions", "failures", "duration p50"]);
    for arm in &comparison.arms {
        for task in &arm.tasks {
            tasks.add_row(vec![
                task.task_id.clone(),
                format!("{} (v{})", spelling(&arm.arm), arm.version),
                task.executions.to_string(),
                task.failures.to_string(),
                millis(task.duration_p50_ms),
            ]);
        }
    }
    let mut text = format!("{sides}\n{tasks}\n");
    text.push_str(&format!(
        "success rate ({}): {}\nduration ({}): {}\n",
        comparison.success_rate.test,
        comparison.success_rate.says,
        comparison.duration.test,
        comparison.duration.says
    ));
    for task in &comparison.tasks {
        text.push_str(&format!("task {}: {}\n", task.task_id, task.duration.says));
    }
    text
}

pub fn events(events: &[Event]) -> String {
    let mut table = table(&["id", "kind", "emitted"]);
    for event in events {
        table.add_row(vec![
            event.id.clone(),
            event_kind(event),
            ago(event.emitted),
        ]);
    }
    table.to_string()
}

/// One line per event, for streams.
pub fn event_line(event: &Event) -> String {
    format!("{} {} {}", event.emitted, event.id, event_kind(event))
}

/// A deployment's log line as a sentence (other events as their JSON).
fn deployment_step(event: &Event) -> String {
    use crate::models::EventKind;
    match &event.kind {
        EventKind::StartedDeployment {
            start_version,
            end_version,
            ..
        } => format!("started: v{start_version} -> v{end_version}"),
        EventKind::PromotedDeployment {
            end_version,
            weight,
            reason,
            ..
        } => format!("v{end_version} raised to {weight}%: {reason}"),
        EventKind::RolledBackDeployment {
            start_version,
            reason,
            ..
        } => format!("ended, v{start_version} stays live: {reason}"),
        EventKind::CompletedDeployment { end_version, .. } => {
            format!("complete: v{end_version} is live")
        }
        _ => event_kind(event),
    }
}

fn event_kind(event: &Event) -> String {
    serde_json::to_string(&event.kind).unwrap_or_default()
}

/// Milliseconds between two epoch times as "1.2s" / "3m 4s"; "-" if not both set.
pub fn duration(start: u64, end: u64) -> String {
    if start == 0 || end == 0 || end < start {
        return "-".into();
    }
    let millis = end - start;
    if millis < 60_000 {
        format!("{:.1}s", millis as f64 / 1000.0)
    } else {
        format!("{}m {}s", millis / 60_000, (millis % 60_000) / 1000)
    }
}

pub fn runs(runs: &[Run]) -> String {
    let mut table = table(&[
        "run", "state", "status", "started", "duration", "config", "by",
    ]);
    for run in runs {
        table.add_row(vec![
            run.run_id.to_string(),
            spelling(&run.state),
            spelling(&run.status),
            ago(run.started),
            duration(run.started, run.ended),
            match &run.routing {
                Some(routing) => format!(
                    "v{} ({})",
                    run.pipeline_config_version,
                    routing.arm.as_str()
                ),
                None => format!("v{}", run.pipeline_config_version),
            },
            match run.rerun_of {
                Some(original) => format!("{} (re-runs #{original})", run.initiator.user),
                None => run.initiator.user.clone(),
            },
        ]);
    }
    table.to_string()
}

pub fn run(run: &Run, tasks: &[TaskExecution]) -> String {
    let mut text = format!(
        "Run #{} of {} (config v{}) :: {} {}\n  started {}, took {}, by {}",
        run.run_id,
        run.pipeline_id,
        run.pipeline_config_version,
        spelling(&run.state),
        spelling(&run.status),
        ago(run.started),
        duration(run.started, run.ended),
        run.initiator.user
    );
    if let Some(reason) = &run.status_reason {
        text.push_str(&format!(
            "\n  {}: {}",
            spelling(&reason.reason),
            reason.description
        ));
    }
    if let Some(routing) = &run.routing {
        text.push_str(&format!(
            "\n  routed to {} by deployment {} ({})",
            routing.arm.as_str(),
            routing.deployment_id,
            routing.reason
        ));
    }
    if let Some(original) = run.rerun_of {
        text.push_str(&format!("\n  re-runs run #{original}"));
        if !run.reused_tasks.is_empty() {
            text.push_str(&format!(
                " (took over as done: {})",
                run.reused_tasks.join(", ")
            ));
        }
    }
    text.push('\n');
    text.push_str(&task_executions(tasks));
    text
}

pub fn task_executions(tasks: &[TaskExecution]) -> String {
    let mut table = table(&[
        "task", "state", "status", "exit", "attempt", "duration", "reason",
    ]);
    for task in tasks {
        table.add_row(vec![
            task.task_id.clone(),
            spelling(&task.state),
            spelling(&task.status),
            task.exit_code
                .map(|code| code.to_string())
                .unwrap_or_else(|| "-".into()),
            task.attempt.to_string(),
            duration(task.started, task.ended),
            task.status_reason
                .as_ref()
                .map(|reason| reason.description.clone())
                .unwrap_or_default(),
        ]);
    }
    table.to_string()
}

pub fn task_execution(task: &TaskExecution) -> String {
    let mut text = format!(
        "Task '{}' of run #{} of {} :: {} {}\n  image {}, attempt {}, exit code {}, took {}",
        task.task_id,
        task.run_id,
        task.pipeline_id,
        spelling(&task.state),
        spelling(&task.status),
        match &task.image_digest {
            Some(digest) => format!("{} ({digest})", task.task.image),
            None => task.task.image.clone(),
        },
        task.attempt,
        task.exit_code
            .map(|code| code.to_string())
            .unwrap_or_else(|| "-".into()),
        duration(task.started, task.ended)
    );
    if let Some(reason) = &task.status_reason {
        text.push_str(&format!(
            "\n  {}: {}",
            spelling(&reason.reason),
            reason.description
        ));
    }
    let mut table = table(&["variable", "value", "source"]);
    for variable in &task.variables {
        table.add_row(vec![
            variable.key.clone(),
            variable.value.clone(),
            spelling(&variable.source),
        ]);
    }
    text.push('\n');
    text.push_str(&table.to_string());
    text
}

/// A run's timeline: time since the first entry, what, which task (attempt), detail.
pub fn timeline(entries: &[crate::models::TimelineEntry]) -> String {
    let first = entries.first().map_or(0, |entry| entry.at);
    let mut table = table(&["+ms", "what", "task", "detail"]);
    for entry in entries {
        let task = match (&entry.task_id, entry.attempt) {
            (Some(task), Some(attempt)) if attempt > 1 => format!("{task} (attempt {attempt})"),
            (Some(task), _) => task.clone(),
            (None, _) => String::new(),
        };
        table.add_row(vec![
            (entry.at.saturating_sub(first)).to_string(),
            entry.what.clone(),
            task,
            entry.detail.clone(),
        ]);
    }
    table.to_string()
}
