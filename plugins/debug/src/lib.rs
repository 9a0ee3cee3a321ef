//! `debug`: a shared task that prints its settings and environment, then exits with the code in
//! the setting `exit_code` (default 0).

wit_bindgen::generate!({ world: "task", path: "../../wit" });

use gofer::plugin::types::{Parameter, PluginKind};

struct Debug;

impl Guest for Debug {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "debug".into(),
            kind: PluginKind::Task,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Prints its settings and environment; handy to see what a task receives.".into(),
            settings: vec![Parameter {
                key: "exit_code".into(),
                required: false,
                documentation: "The exit code to end with (default 0).".into(),
            }],
        }
    }

    fn run(settings: Vec<(String, String)>) -> Result<u8, String> {
        let mut exit_code = 0;
        println!("settings:");
        for (key, value) in &settings {
            println!("  {key}={value}");
            if key == "exit_code" {
                exit_code = value.parse().map_err(|_| format!("exit_code must be 0-255, got '{value}'"))?;
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

export!(Debug);
