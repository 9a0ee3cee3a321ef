//! A pipeline written in Rust: `gofer pipeline create examples/pipeline-rust --deploy` builds and
//! runs this program and registers the JSON it prints. examples/pipeline-go is the same pipeline
//! in Go, and examples/sdk-example.json the same pipeline as plain JSON.

use std::time::Duration;

use gofer_sdk::config::{ConfigError, Pipeline, RequiredParentStatus, Task, Trigger};

fn main() -> Result<(), ConfigError> {
    Pipeline::new("sdk-example", "SDK example")
        .description("Greets, then reports; written with a Gofer SDK.")
        .timeout(Duration::from_secs(5 * 60))
        .triggers(vec![
            Trigger::new("interval", "hourly").setting("every", "1h"),
        ])
        .tasks(vec![
            Task::new("greet", "gofer-busybox:local")
                .description("Says hello")
                .variable("WHO", "gofer")
                .script(r#"echo "hello from $WHO""#)
                .retries(1),
            Task::shared("report", "debug")
                .setting("note", "greeted")
                .depends_on("greet", RequiredParentStatus::Success),
        ])
        .finish()
}
