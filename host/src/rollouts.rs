//! The rules of canary and A/B deployments, as pure functions: checking a request, routing a new
//! run to a version (by weight, or sticky by a variable's value), judging a canary from its
//! tallies (hold, next step, promote, roll back), and comparing two versions' runs with the
//! statistics that say whether a difference is real.
//!
//! Owns no state and does no I/O: the application layer reads tallies and samples from storage,
//! asks here, and commits what it is told; the orchestrator asks [`route`] inside the
//! transaction that queues a run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::models::{Arm, ArmTally, Rollout};

/// Why a canary or A/B request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("weight must be 1 to 99 percent, got {0}")]
    Weight(u64),
    #[error("steps must rise from 1 to 100 percent, each above the last, ending at 100; got {0:?}")]
    Steps(Vec<u64>),
    #[error("{name} must be between 0 and 1, got {value}")]
    Rate { name: &'static str, value: String },
    #[error("sticky_variable {0:?} is not a variable name (letters, digits and _)")]
    StickyVariable(String),
}

/// The weights of a canary: `steps` if given (each above the last, ending at 100), else the
/// `weight` and then 100.
pub fn canary_steps(weight: Option<u64>, steps: &[u64]) -> Result<Vec<u8>, RolloutError> {
    if !steps.is_empty() {
        let rising = steps.windows(2).all(|pair| pair[0] < pair[1]);
        if !rising || steps[0] == 0 || steps.last() != Some(&100) {
            return Err(RolloutError::Steps(steps.to_vec()));
        }
        if let Some(weight) = weight
            && weight != steps[0]
        {
            return Err(RolloutError::Steps(steps.to_vec()));
        }
        return Ok(steps.iter().map(|step| *step as u8).collect());
    }
    let weight = weight.unwrap_or(10);
    check_weight(weight)?;
    Ok(vec![weight as u8, 100])
}

/// An A/B test's (or a canary's first) weight: 1 to 99.
pub fn check_weight(weight: u64) -> Result<u8, RolloutError> {
    match weight {
        1..=99 => Ok(weight as u8),
        other => Err(RolloutError::Weight(other)),
    }
}

/// A rate setting: 0 to 1.
pub fn check_rate(name: &'static str, value: f64) -> Result<f64, RolloutError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(RolloutError::Rate {
            name,
            value: value.to_string(),
        })
    }
}

/// A sticky variable's name: what a run variable may be called.
pub fn check_sticky(name: &str) -> Result<(), RolloutError> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        Ok(())
    } else {
        Err(RolloutError::StickyVariable(name.to_string()))
    }
}

/// Where a new run goes: to `end_version` (`true`) or `start_version`, and why. `random` is a
/// uniformly random number; with a sticky variable present in the run's variables its value
/// decides instead, the same value always to the same side for a weight (a value on the new side
/// stays there as the weight rises).
pub fn route(
    rollout: &Rollout,
    deployment_id: u64,
    variables: &BTreeMap<String, String>,
    random: u128,
) -> (bool, String) {
    let weight = u128::from(rollout.weight);
    if let Some(name) = &rollout.sticky_variable
        && let Some(value) = variables.get(name)
    {
        let digest = Sha256::new()
            .chain_update(deployment_id.to_be_bytes())
            .chain_update(value.as_bytes())
            .finalize();
        let bucket = u128::from(u16::from_be_bytes([digest[0], digest[1]])) % 100;
        return (bucket < weight, format!("sticky {name}={value}"));
    }
    (
        random % 10_000 < weight * 100,
        format!("weight {}%", rollout.weight),
    )
}

/// What a canary's runs so far call for.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Not enough runs yet.
    Hold,
    /// Move to the next step's weight.
    NextStep { weight: u8, why: String },
    /// The last step passed: the canary's version becomes live.
    Promote { why: String },
    /// Stop sending it runs; the stable version stays live.
    RollBack { why: String },
}

fn percent(rate: f64) -> String {
    format!("{:.0}%", rate * 100.0)
}

/// Judges a canary from the tallies of its two arms.
pub fn judge(rollout: &Rollout, stable: &ArmTally, canary: &ArmTally) -> Judgement {
    if rollout.rollback_after_failures > 0 && canary.failed >= rollout.rollback_after_failures {
        return Judgement::RollBack {
            why: format!(
                "{} canary runs of version {} failed (rollback_after_failures = {})",
                canary.failed, canary.version, rollout.rollback_after_failures
            ),
        };
    }
    if rollout.promote_after == 0 || canary.step_complete < rollout.promote_after {
        return Judgement::Hold;
    }
    let canary_rate = canary.step_successful as f64 / canary.step_complete as f64;
    if let Some(minimum) = rollout.min_success_rate
        && canary_rate < minimum
    {
        return Judgement::RollBack {
            why: format!(
                "the canary's success rate {} over its last {} runs is below min_success_rate {}",
                percent(canary_rate),
                canary.step_complete,
                percent(minimum)
            ),
        };
    }
    // Against the stable version over the same window; if it ran nothing then (the last step
    // sends it nothing), over the whole deployment; if never, only the minimum above applies.
    let stable_rate = if stable.step_complete > 0 {
        Some(stable.step_successful as f64 / stable.step_complete as f64)
    } else if stable.successful + stable.failed > 0 {
        Some(stable.successful as f64 / (stable.successful + stable.failed) as f64)
    } else {
        None
    };
    if let Some(stable_rate) = stable_rate
        && canary_rate + 1e-9 < stable_rate - rollout.tolerance
    {
        return Judgement::RollBack {
            why: format!(
                "the canary's success rate {} over {} runs is below the stable version's {} minus the tolerance {}",
                percent(canary_rate),
                canary.step_complete,
                percent(stable_rate),
                percent(rollout.tolerance)
            ),
        };
    }
    let why = format!(
        "{} canary runs at {}%, success rate {}{}",
        canary.step_complete,
        rollout.weight,
        percent(canary_rate),
        stable_rate
            .map(|rate| format!(" against the stable version's {}", percent(rate)))
            .unwrap_or_default()
    );
    match rollout.steps.get(rollout.step + 1) {
        Some(&weight) if weight < 100 => Judgement::NextStep { weight, why },
        _ => Judgement::Promote { why },
    }
}

/// One arm's runs for a comparison.
#[derive(Debug, Clone, Default)]
pub struct ArmSamples {
    /// Complete runs: whether each succeeded, and its duration in ms.
    pub runs: Vec<(bool, u64)>,
    /// Per task: each execution's success and duration in ms.
    pub tasks: BTreeMap<String, Vec<(bool, u64)>>,
}

/// Two versions side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Comparison {
    pub arms: Vec<ArmSummary>,
    /// Whether the success rates differ: two-proportion z-test.
    pub success_rate: Verdict,
    /// Whether the run durations differ: Mann–Whitney U test.
    pub duration: Verdict,
    /// Per task that ran in both: its durations compared the same way.
    pub tasks: Vec<TaskComparison>,
    /// One sentence for people.
    pub summary: String,
}

/// One arm in a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArmSummary {
    pub arm: Arm,
    pub version: u64,
    pub runs: u64,
    pub successful: u64,
    pub failed: u64,
    pub success_rate: Option<f64>,
    pub duration_p50_ms: Option<u64>,
    pub duration_p95_ms: Option<u64>,
    /// Per task: executions, failures and median duration.
    pub tasks: Vec<TaskSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskSummary {
    pub task_id: String,
    pub executions: u64,
    pub failures: u64,
    pub duration_p50_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskComparison {
    pub task_id: String,
    pub duration: Verdict,
}

/// The outcome of one significance test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    /// The test used.
    pub test: String,
    /// Its two-sided p-value; none when there were too few runs to test.
    pub p_value: Option<f64>,
    /// Whether p < 0.05.
    pub significant: bool,
    /// What it means, e.g. `B is slower (p = 0.0003)`.
    pub says: String,
}

/// The significance level of every verdict.
pub const ALPHA: f64 = 0.05;

/// Fewest samples per arm a test is run on.
const MIN_SAMPLES: usize = 5;

fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[rank.min(sorted.len() - 1)])
}

fn summarize(arm: Arm, version: u64, samples: &ArmSamples) -> ArmSummary {
    let successful = samples.runs.iter().filter(|(ok, _)| *ok).count() as u64;
    let runs = samples.runs.len() as u64;
    let mut durations: Vec<u64> = samples.runs.iter().map(|(_, ms)| *ms).collect();
    durations.sort_unstable();
    ArmSummary {
        arm,
        version,
        runs,
        successful,
        failed: runs - successful,
        success_rate: (runs > 0).then(|| successful as f64 / runs as f64),
        duration_p50_ms: quantile(&durations, 0.5),
        duration_p95_ms: quantile(&durations, 0.95),
        tasks: samples
            .tasks
            .iter()
            .map(|(task_id, executions)| {
                let mut durations: Vec<u64> = executions.iter().map(|(_, ms)| *ms).collect();
                durations.sort_unstable();
                TaskSummary {
                    task_id: task_id.clone(),
                    executions: executions.len() as u64,
                    failures: executions.iter().filter(|(ok, _)| !ok).count() as u64,
                    duration_p50_ms: quantile(&durations, 0.5),
                }
            })
            .collect(),
    }
}

/// Compares arm `first` (version A or stable) with `second` (B or canary).
pub fn compare(
    (first_arm, first_version, first): (Arm, u64, &ArmSamples),
    (second_arm, second_version, second): (Arm, u64, &ArmSamples),
) -> Comparison {
    let (label_a, label_b) = (
        format!("{} (v{first_version})", first_arm.as_str()),
        format!("{} (v{second_version})", second_arm.as_str()),
    );
    let success_rate = proportions(
        first.runs.iter().filter(|(ok, _)| *ok).count(),
        first.runs.len(),
        second.runs.iter().filter(|(ok, _)| *ok).count(),
        second.runs.len(),
        (&label_a, &label_b),
    );
    let durations = |samples: &ArmSamples| -> Vec<f64> {
        samples.runs.iter().map(|(_, ms)| *ms as f64).collect()
    };
    let duration = mann_whitney(&durations(first), &durations(second), (&label_a, &label_b));
    let tasks = first
        .tasks
        .iter()
        .filter_map(|(task_id, a)| {
            let b = second.tasks.get(task_id)?;
            let times = |executions: &Vec<(bool, u64)>| -> Vec<f64> {
                executions.iter().map(|(_, ms)| *ms as f64).collect()
            };
            Some(TaskComparison {
                task_id: task_id.clone(),
                duration: mann_whitney(&times(a), &times(b), (&label_a, &label_b)),
            })
        })
        .collect();
    let summary = format!(
        "success rate: {}; duration: {}",
        success_rate.says, duration.says
    );
    Comparison {
        arms: vec![
            summarize(first_arm, first_version, first),
            summarize(second_arm, second_version, second),
        ],
        success_rate,
        duration,
        tasks,
        summary,
    }
}

fn too_few(test: &str) -> Verdict {
    Verdict {
        test: test.into(),
        p_value: None,
        significant: false,
        says: format!("too few runs to tell (at least {MIN_SAMPLES} per version)"),
    }
}

/// Two-proportion z-test of success rates (pooled), two-sided.
fn proportions(
    successes_a: usize,
    n_a: usize,
    successes_b: usize,
    n_b: usize,
    (label_a, label_b): (&str, &str),
) -> Verdict {
    const TEST: &str = "two-proportion z-test";
    if n_a < MIN_SAMPLES || n_b < MIN_SAMPLES {
        return too_few(TEST);
    }
    let (p_a, p_b) = (
        successes_a as f64 / n_a as f64,
        successes_b as f64 / n_b as f64,
    );
    let pooled = (successes_a + successes_b) as f64 / (n_a + n_b) as f64;
    let spread = (pooled * (1.0 - pooled) * (1.0 / n_a as f64 + 1.0 / n_b as f64)).sqrt();
    let p_value = if spread == 0.0 {
        1.0
    } else {
        two_sided((p_a - p_b) / spread)
    };
    let significant = p_value < ALPHA;
    let says = if significant {
        let (better, worse) = if p_a > p_b {
            (label_a, label_b)
        } else {
            (label_b, label_a)
        };
        format!(
            "{better} succeeds more often than {worse}: {} vs {} (p = {})",
            percent(p_a.max(p_b)),
            percent(p_a.min(p_b)),
            p_text(p_value)
        )
    } else {
        format!(
            "no significant difference: {} vs {} (p = {})",
            percent(p_a),
            percent(p_b),
            p_text(p_value)
        )
    };
    Verdict {
        test: TEST.into(),
        p_value: Some(p_value),
        significant,
        says,
    }
}

/// Mann–Whitney U test (normal approximation with tie correction), two-sided.
fn mann_whitney(a: &[f64], b: &[f64], (label_a, label_b): (&str, &str)) -> Verdict {
    const TEST: &str = "Mann-Whitney U test";
    if a.len() < MIN_SAMPLES || b.len() < MIN_SAMPLES {
        return too_few(TEST);
    }
    let (n_a, n_b) = (a.len() as f64, b.len() as f64);
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|value| (*value, true))
        .chain(b.iter().map(|value| (*value, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Average ranks over ties; sum of t^3 - t over tie groups for the correction.
    let (mut rank_sum_a, mut ties, mut index) = (0.0, 0.0, 0);
    while index < all.len() {
        let mut end = index;
        while end + 1 < all.len() && all[end + 1].0 == all[index].0 {
            end += 1;
        }
        let rank = (index + end) as f64 / 2.0 + 1.0;
        let group = (end - index + 1) as f64;
        ties += group * group * group - group;
        rank_sum_a += all[index..=end].iter().filter(|(_, in_a)| *in_a).count() as f64 * rank;
        index = end + 1;
    }
    let u_a = rank_sum_a - n_a * (n_a + 1.0) / 2.0;
    let mean = n_a * n_b / 2.0;
    let n = n_a + n_b;
    let variance = n_a * n_b / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let p_value = if variance <= 0.0 {
        1.0
    } else {
        two_sided((u_a - mean) / variance.sqrt())
    };
    let significant = p_value < ALPHA;
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let (median_a, median_b) = (median(a), median(b));
    let says = if significant {
        let (slower, faster, slow, fast) = if median_a > median_b {
            (label_a, label_b, median_a, median_b)
        } else {
            (label_b, label_a, median_b, median_a)
        };
        format!(
            "{slower} is slower than {faster}: median {} vs {} (p = {})",
            millis_text(slow),
            millis_text(fast),
            p_text(p_value)
        )
    } else {
        format!(
            "no significant difference: median {} vs {} (p = {})",
            millis_text(median_a),
            millis_text(median_b),
            p_text(p_value)
        )
    };
    Verdict {
        test: TEST.into(),
        p_value: Some(p_value),
        significant,
        says,
    }
}

fn millis_text(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

fn p_text(p: f64) -> String {
    if p < 0.0001 {
        "< 0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

/// The two-sided p-value of a standard normal statistic.
fn two_sided(z: f64) -> f64 {
    (1.0 - erf(z.abs() / std::f64::consts::SQRT_2)).clamp(0.0, 1.0)
}

/// The error function (Abramowitz and Stegun 7.1.26; absolute error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(weight: u8, steps: &[u8]) -> Rollout {
        Rollout {
            weight,
            steps: steps.to_vec(),
            step: 0,
            step_started: 0,
            promote_after: 10,
            rollback_after_failures: 3,
            tolerance: 0.05,
            min_success_rate: None,
            sticky_variable: None,
            tallies: Vec::new(),
        }
    }

    fn tally(arm: Arm, failed: u64, step: (u64, u64)) -> ArmTally {
        ArmTally {
            arm,
            version: if arm == Arm::Stable { 1 } else { 2 },
            runs: step.0 + failed,
            successful: step.1,
            failed,
            step_complete: step.0,
            step_successful: step.1,
        }
    }

    #[test]
    fn steps_must_rise_to_100() {
        assert_eq!(canary_steps(Some(10), &[]), Ok(vec![10, 100]));
        assert_eq!(canary_steps(None, &[10, 50, 100]), Ok(vec![10, 50, 100]));
        assert!(canary_steps(None, &[50, 10, 100]).is_err());
        assert!(canary_steps(None, &[10, 50]).is_err());
        assert!(canary_steps(None, &[0, 100]).is_err());
        assert!(canary_steps(Some(20), &[10, 100]).is_err());
        assert_eq!(canary_steps(Some(100), &[]), Err(RolloutError::Weight(100)));
        assert_eq!(canary_steps(Some(0), &[]), Err(RolloutError::Weight(0)));
    }

    #[test]
    fn routing_by_weight_and_sticky_values() {
        let half = rollout(50, &[50, 100]);
        let none = BTreeMap::new();
        assert!(route(&half, 1, &none, 4_999).0);
        assert!(!route(&half, 1, &none, 5_000).0);
        assert_eq!(route(&half, 1, &none, 0).1, "weight 50%");

        let mut sticky = rollout(30, &[30, 100]);
        sticky.sticky_variable = Some("BRANCH".into());
        let branch = |value: &str| BTreeMap::from([("BRANCH".to_string(), value.to_string())]);
        let mut new_side = 0;
        for index in 0..1000 {
            let value = format!("b{index}");
            let (first, reason) = route(&sticky, 7, &branch(&value), 0);
            assert_eq!(reason, format!("sticky BRANCH={value}"));
            // The same value, any random number: the same side.
            assert_eq!(route(&sticky, 7, &branch(&value), 9_999).0, first);
            // A value on the new side stays there as the weight rises.
            let mut wider = sticky.clone();
            wider.weight = 60;
            if first {
                assert!(route(&wider, 7, &branch(&value), 0).0);
                new_side += 1;
            }
        }
        assert!((230..370).contains(&new_side), "{new_side} of 1000 at 30%");
    }

    #[test]
    fn a_canary_is_judged_by_its_failures_and_its_rate_against_stable() {
        let plan = rollout(10, &[10, 50, 100]);
        let stable = tally(Arm::Stable, 0, (40, 40));
        assert_eq!(
            judge(&plan, &stable, &tally(Arm::Canary, 0, (9, 9))),
            Judgement::Hold
        );
        assert!(matches!(
            judge(&plan, &stable, &tally(Arm::Canary, 0, (10, 10))),
            Judgement::NextStep { weight: 50, .. }
        ));
        assert!(matches!(
            judge(&plan, &stable, &tally(Arm::Canary, 3, (5, 2))),
            Judgement::RollBack { .. }
        ));
        // 8 of 10 against 100%: below stable minus 5%.
        let Judgement::RollBack { why } = judge(&plan, &stable, &tally(Arm::Canary, 2, (10, 8)))
        else {
            panic!("not rolled back")
        };
        assert!(why.contains("80%") && why.contains("100%"), "{why}");
        // The last step: promoted.
        let mut last = plan.clone();
        last.step = 2;
        last.weight = 100;
        assert!(matches!(
            judge(
                &last,
                &tally(Arm::Stable, 0, (0, 0)),
                &tally(Arm::Canary, 0, (10, 10))
            ),
            Judgement::Promote { .. }
        ));
        // The minimum rate applies even without a stable run.
        last.min_success_rate = Some(0.95);
        last.rollback_after_failures = 0;
        assert!(matches!(
            judge(
                &last,
                &tally(Arm::Stable, 0, (0, 0)),
                &tally(Arm::Canary, 1, (10, 9))
            ),
            Judgement::RollBack { .. }
        ));
    }

    #[test]
    fn comparisons_find_real_differences_and_not_noise() {
        let arm = |durations: &[u64], failures: usize| ArmSamples {
            runs: durations
                .iter()
                .enumerate()
                .map(|(index, ms)| (index >= failures, *ms))
                .collect(),
            tasks: BTreeMap::from([(
                "work".to_string(),
                durations.iter().map(|ms| (true, *ms)).collect(),
            )]),
        };
        let fast = arm(&[300, 310, 290, 305, 320, 298, 301, 315], 0);
        let slow = arm(&[1300, 1310, 1290, 1305, 1320, 1298, 1301, 1315], 0);
        let result = compare((Arm::A, 1, &fast), (Arm::B, 2, &slow));
        assert!(result.duration.significant, "{result:?}");
        assert!(result.duration.p_value.unwrap() < 0.01);
        assert!(
            result.duration.says.starts_with("b (v2) is slower"),
            "{}",
            result.duration.says
        );
        assert!(!result.success_rate.significant);
        assert!(result.tasks[0].duration.significant);
        assert_eq!(result.arms[1].duration_p50_ms, Some(1305));

        let same = arm(&[300, 1310, 290, 1305, 320, 1298, 301, 1315], 0);
        let other = arm(&[1300, 310, 1290, 305, 1320, 298, 1301, 315], 0);
        assert!(
            !compare((Arm::A, 1, &same), (Arm::B, 2, &other))
                .duration
                .significant
        );

        let failing = arm(&[300; 20], 12);
        let passing = arm(&[300; 20], 0);
        let rates = compare((Arm::A, 1, &passing), (Arm::B, 2, &failing)).success_rate;
        assert!(rates.significant && rates.says.starts_with("a (v1) succeeds more often"));

        let few = compare((Arm::A, 1, &arm(&[1, 2], 0)), (Arm::B, 2, &slow));
        assert_eq!(few.duration.p_value, None);
        assert!(few.duration.says.contains("too few runs"));
    }

    #[test]
    fn erf_is_close_enough() {
        assert!((erf(0.0)).abs() < 1e-7);
        assert!((erf(1.0) - 0.842_700_79).abs() < 1e-6);
        assert!((two_sided(1.959_964) - 0.05).abs() < 1e-4);
    }
}
