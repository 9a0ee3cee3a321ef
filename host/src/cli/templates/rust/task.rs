//! A Gofer shared task. It greets `who` (a setting; default "world"), says which run of
//! which pipeline it is in, counts its runs in the plugin's objects, and exits with `exit_code`
//! (default 0). Start here: replace `run` with the task's work.

use std::collections::BTreeMap;

use gofer_sdk::plugin::{Info, Kind, LogLevel, Pairs, Task, log, objects};

/// The plugin's name: what tasks name, its objects' and grants' key.
const NAME: &str = "{{name}}";

struct Plugin;

impl Task for Plugin {
    fn info() -> Info {
        Info::new(
            NAME,
            Kind::Task,
            env!("CARGO_PKG_VERSION"),
            "Greets, and counts its runs.",
        )
        .setting("who", false, "Whom to greet; default \"world\"")
        .setting(
            "exit_code",
            false,
            "The exit code to end with, 0 to 255; default 0",
        )
    }

    fn run(settings: Pairs) -> Result<u8, String> {
        let settings: BTreeMap<String, String> = settings.into_iter().collect();
        if let Some(unknown) = settings
            .keys()
            .find(|key| !["who", "exit_code"].contains(&key.as_str()))
        {
            return Err(format!(
                "unknown setting '{unknown}'; {NAME} takes 'who' and 'exit_code'"
            ));
        }
        let exit_code = match settings.get("exit_code") {
            Some(code) => code
                .parse::<u8>()
                .map_err(|_| format!("'exit_code' must be 0 to 255, got '{code}'"))?,
            None => 0,
        };
        let runs = objects::get("runs")?
            .and_then(|bytes| String::from_utf8(bytes).ok()?.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        objects::put("runs", runs.to_string().as_bytes())?;
        let who = settings.get("who").map_or("world", String::as_str);
        // The task's variables (and Gofer's GOFER_* ones) are the environment; stdout is its log.
        let pipeline = std::env::var("GOFER_PIPELINE_ID").unwrap_or_default();
        let run = std::env::var("GOFER_RUN_ID").unwrap_or_default();
        println!("hello {who}, from run {run} of {pipeline} ({runs} runs of {NAME} so far)");
        log(LogLevel::Debug, &format!("greeted {who}"));
        Ok(exit_code)
    }
}

gofer_sdk::export_task!(Plugin);

#[cfg(test)]
mod tests {
    use gofer_sdk::testing::TaskHarness;

    use super::Plugin;

    #[test]
    fn greets_and_counts_its_runs() {
        let mut task = TaskHarness::<Plugin>::new();
        let variables = [("GOFER_PIPELINE_ID", "nightly"), ("GOFER_RUN_ID", "7")];
        assert_eq!(task.run(&[("who", "team")], &variables).result, Ok(0));
        assert_eq!(task.run(&[], &variables).result, Ok(0));
        assert_eq!(task.host().objects()["runs"], b"2");
        assert!(task.host().logged("greeted team"));
    }

    #[test]
    fn ends_with_the_exit_code_it_is_given() {
        let mut task = TaskHarness::<Plugin>::new();
        assert_eq!(task.run(&[("exit_code", "3")], &[]).result, Ok(3));
        let refused = task.run(&[("exit_code", "300")], &[]).result.unwrap_err();
        assert!(refused.contains("0 to 255"), "{refused}");
        let refused = task.run(&[("whom", "x")], &[]).result.unwrap_err();
        assert!(refused.contains("unknown setting 'whom'"), "{refused}");
    }
}
