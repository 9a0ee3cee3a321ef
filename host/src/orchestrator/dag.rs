//! DAG rules, as pure functions: when a task may start, whether it runs or is skipped, and how a
//! run's tasks decide the run's status.

use std::collections::{BTreeMap, HashMap};

use crate::models::{
    RequiredParentStatus, RunStatus, RunStatusReason, RunStatusReasonType, TaskExecutionStatus,
};

/// The tasks a re-run of failed tasks takes over as done: those that succeeded in the original,
/// unless one of their ancestors runs again (a task that failed or was skipped runs again, and
/// so does everything that depends on it, directly or not).
pub fn reusable_tasks(
    tasks: &BTreeMap<String, crate::models::Task>,
    statuses: &BTreeMap<String, TaskExecutionStatus>,
) -> Vec<String> {
    let mut again: std::collections::BTreeSet<&str> = tasks
        .keys()
        .filter(|id| statuses.get(*id) != Some(&TaskExecutionStatus::Successful))
        .map(String::as_str)
        .collect();
    // Spread to dependents until nothing changes (configs are acyclic and small).
    loop {
        let before = again.len();
        for (id, task) in tasks {
            if task
                .depends_on
                .keys()
                .any(|parent| again.contains(parent.as_str()))
            {
                again.insert(id);
            }
        }
        if again.len() == before {
            break;
        }
    }
    tasks
        .keys()
        .filter(|id| !again.contains(id.as_str()))
        .cloned()
        .collect()
}

/// What to do with a task whose parents have all completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// Skip, with a sentence saying which parent condition was not met.
    Skip(String),
}

/// Whether every parent has completed (then the task can be decided).
pub fn parents_complete(
    depends_on: &BTreeMap<String, RequiredParentStatus>,
    completed: &HashMap<String, TaskExecutionStatus>,
) -> bool {
    depends_on
        .keys()
        .all(|parent| completed.contains_key(parent))
}

/// Decides a task once all its parents have completed.
///
/// `any` is met by a parent that succeeded, failed or was skipped (not by a cancelled one);
/// `success` only by success; `failure` only by failure.
pub fn decide(
    task_id: &str,
    depends_on: &BTreeMap<String, RequiredParentStatus>,
    completed: &HashMap<String, TaskExecutionStatus>,
) -> Decision {
    use TaskExecutionStatus as Status;
    for (parent, condition) in depends_on {
        let status = completed.get(parent).copied().unwrap_or(Status::Unknown);
        let met = match condition {
            RequiredParentStatus::Any => matches!(
                status,
                Status::Successful | Status::Failed | Status::Skipped
            ),
            RequiredParentStatus::Success => status == Status::Successful,
            RequiredParentStatus::Failure => status == Status::Failed,
            RequiredParentStatus::Unknown => false,
        };
        if !met {
            let wanted = match condition {
                RequiredParentStatus::Any => "to finish (successful, failed or skipped)",
                RequiredParentStatus::Success => "to be successful",
                RequiredParentStatus::Failure => "to fail",
                RequiredParentStatus::Unknown => "to have a known condition",
            };
            let actual = serde_json::to_value(status)
                .ok()
                .and_then(|value| value.as_str().map(str::to_string))
                .unwrap_or_default();
            return Decision::Skip(format!(
                "task '{task_id}' was skipped: it needed parent '{parent}' {wanted}, but '{parent}' was {actual}"
            ));
        }
    }
    Decision::Run
}

/// Why a run ended early, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunInterruption {
    Cancelled { by: String },
    TimedOut { after: String },
}

/// The status of a completed run from its tasks' statuses.
pub fn run_outcome(
    tasks: &BTreeMap<String, TaskExecutionStatus>,
    interruption: Option<&RunInterruption>,
) -> (RunStatus, Option<RunStatusReason>) {
    match interruption {
        Some(RunInterruption::Cancelled { by }) => {
            return (
                RunStatus::Cancelled,
                Some(RunStatusReason {
                    reason: RunStatusReasonType::UserCancelled,
                    description: format!("The run was cancelled by {by}"),
                }),
            );
        }
        Some(RunInterruption::TimedOut { after }) => {
            return (
                RunStatus::Failed,
                Some(RunStatusReason {
                    reason: RunStatusReasonType::Timeout,
                    description: format!("The run did not finish within its timeout of {after}"),
                }),
            );
        }
        None => {}
    }
    let failed: Vec<&str> = tasks
        .iter()
        .filter(|(_, status)| **status == TaskExecutionStatus::Failed)
        .map(|(id, _)| id.as_str())
        .collect();
    let cancelled: Vec<&str> = tasks
        .iter()
        .filter(|(_, status)| **status == TaskExecutionStatus::Cancelled)
        .map(|(id, _)| id.as_str())
        .collect();
    if !cancelled.is_empty() {
        return (
            RunStatus::Cancelled,
            Some(RunStatusReason {
                reason: RunStatusReasonType::UserCancelled,
                description: format!("Task(s) cancelled during the run: {}", cancelled.join(", ")),
            }),
        );
    }
    if !failed.is_empty() {
        return (
            RunStatus::Failed,
            Some(RunStatusReason {
                reason: RunStatusReasonType::AbnormalExit,
                description: format!("One or more task executions failed: {}", failed.join(", ")),
            }),
        );
    }
    (RunStatus::Successful, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequiredParentStatus as Condition;
    use TaskExecutionStatus as Status;

    fn deps(pairs: &[(&str, Condition)]) -> BTreeMap<String, Condition> {
        pairs
            .iter()
            .map(|(id, condition)| (id.to_string(), *condition))
            .collect()
    }

    fn done(pairs: &[(&str, Status)]) -> HashMap<String, Status> {
        pairs
            .iter()
            .map(|(id, status)| (id.to_string(), *status))
            .collect()
    }

    #[test]
    fn a_failed_only_rerun_reuses_what_succeeded_upstream_of_nothing_that_runs_again() {
        // one -> two -> three -> four; five after two; six after three with `failure`.
        let task = |id: &str, parents: &[(&str, &str)]| -> (String, crate::models::Task) {
            let depends_on: serde_json::Map<String, serde_json::Value> = parents
                .iter()
                .map(|(parent, condition)| (parent.to_string(), serde_json::json!(condition)))
                .collect();
            let task = serde_json::from_value(serde_json::json!({
                "id": id, "description": "", "image": "x", "registry_auth": null,
                "depends_on": depends_on, "variables": [], "entrypoint": null, "command": null,
                "inject_api_token": false, "always_pull_newest_image": false,
            }))
            .unwrap();
            (id.to_string(), task)
        };
        let tasks: BTreeMap<_, _> = [
            task("one", &[]),
            task("two", &[("one", "success")]),
            task("three", &[("two", "success")]),
            task("four", &[("three", "success")]),
            task("five", &[("two", "success")]),
            task("six", &[("three", "failure")]),
        ]
        .into_iter()
        .collect();
        let statuses: BTreeMap<String, Status> = [
            ("one", Status::Successful),
            ("two", Status::Successful),
            ("three", Status::Failed),
            ("four", Status::Skipped),
            ("five", Status::Successful),
            ("six", Status::Successful),
        ]
        .into_iter()
        .map(|(id, status)| (id.to_string(), status))
        .collect();
        assert_eq!(reusable_tasks(&tasks, &statuses), ["five", "one", "two"]);
    }

    #[test]
    fn conditions_follow_the_v0_semantics() {
        let cases = [
            (Condition::Any, Status::Successful, true),
            (Condition::Any, Status::Failed, true),
            (Condition::Any, Status::Skipped, true),
            (Condition::Any, Status::Cancelled, false),
            (Condition::Success, Status::Successful, true),
            (Condition::Success, Status::Failed, false),
            (Condition::Success, Status::Skipped, false),
            (Condition::Failure, Status::Failed, true),
            (Condition::Failure, Status::Successful, false),
            (Condition::Failure, Status::Skipped, false),
        ];
        for (condition, parent, runs) in cases {
            let decision = decide(
                "child",
                &deps(&[("parent", condition)]),
                &done(&[("parent", parent)]),
            );
            assert_eq!(
                decision == Decision::Run,
                runs,
                "{condition:?} with a {parent:?} parent"
            );
        }
        let skipped = decide(
            "child",
            &deps(&[("parent", Condition::Success)]),
            &done(&[("parent", Status::Failed)]),
        );
        assert_eq!(
            skipped,
            Decision::Skip("task 'child' was skipped: it needed parent 'parent' to be successful, but 'parent' was failed".into())
        );
    }

    #[test]
    fn a_task_waits_for_every_parent() {
        let depends = deps(&[("a", Condition::Any), ("b", Condition::Any)]);
        assert!(!parents_complete(
            &depends,
            &done(&[("a", Status::Successful)])
        ));
        assert!(parents_complete(
            &depends,
            &done(&[("a", Status::Successful), ("b", Status::Failed)])
        ));
        assert!(parents_complete(&deps(&[]), &done(&[])));
    }

    #[test]
    fn the_run_status_comes_from_its_tasks() {
        let tasks = |pairs: &[(&str, Status)]| -> BTreeMap<String, Status> {
            pairs
                .iter()
                .map(|(id, status)| (id.to_string(), *status))
                .collect()
        };
        assert_eq!(
            run_outcome(
                &tasks(&[("a", Status::Successful), ("b", Status::Skipped)]),
                None
            )
            .0,
            RunStatus::Successful
        );
        let (status, reason) = run_outcome(
            &tasks(&[("a", Status::Failed), ("b", Status::Successful)]),
            None,
        );
        assert_eq!(status, RunStatus::Failed);
        assert!(reason.unwrap().description.contains(": a"));
        let cancelled = RunInterruption::Cancelled { by: "alice".into() };
        assert_eq!(
            run_outcome(&tasks(&[]), Some(&cancelled)).0,
            RunStatus::Cancelled
        );
        let timed_out = RunInterruption::TimedOut { after: "1s".into() };
        let (status, reason) = run_outcome(&tasks(&[]), Some(&timed_out));
        assert_eq!(
            (status, reason.unwrap().reason),
            (RunStatus::Failed, RunStatusReasonType::Timeout)
        );
    }
}
