//! `debug`: a shared task that prints its settings and environment, then exits with the code in
//! the setting `exit_code` (default 0).

use gofer_sdk::plugin::{Info, Kind, Pairs, Parameter, Task};

struct Debug;

impl Task for Debug {
    fn info() -> Info {
        Info {
            name: "debug".into(),
            kind: Kind::Task,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Prints its settings and environment; handy to see what a task receives."
                .into(),
            settings: vec![Parameter {
                key: "exit_code".into(),
                required: false,
                documentation: "The exit code to end with (default 0).".into(),
            }],
        }
    }

    fn run(settings: Pairs) -> Result<u8, String> {
        let mut exit_code = 0;
        println!("settings:");
        for (key, value) in &settings {
            println!("  {key}={value}");
            if key == "exit_code" {
                exit_code = value
                    .parse()
                    .map_err(|_| format!("exit_code must be 0-255, got '{value}'"))?;
            }
        }
        let mut variables: Vec<(String, String)> = std::env::vars().collect();
        variables.sort();
        println!("environment:");
        for (key, value) in variables {
            println!("  {key}={value}");
        }
        Ok(exit_code)
    }
}

gofer_sdk::export_task!(Debug);
