//! Pipelines as code: turns a pipeline program (a Go module or a Rust crate written with a Gofer
//! SDK) or a JSON file into the pipeline config it describes.
//!
//! Owns detecting what a path holds, building and running the program with the user's own
//! toolchain (`go run .` / `cargo run`; their build progress and compiler messages go straight
//! to the user's terminal as they come) and reading the JSON it prints. Must not talk to the
//! server (that is the caller's job).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Why a pipeline program gave no config.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("{0} does not exist")]
    NotFound(PathBuf),
    #[error(
        "{0} holds no pipeline program: expected a go.mod (Go) or a Cargo.toml (Rust) in it, or a .json file"
    )]
    Unknown(PathBuf),
    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not run `{tool}` for {path}: {source} (is {language} installed and on PATH?)")]
    ToolMissing {
        tool: &'static str,
        language: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the {language} pipeline program in {path} failed ({status}); the compiler's or program's messages are above"
    )]
    Failed {
        language: &'static str,
        path: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error("{source_name} did not give a pipeline config: {problem}")]
    NotAConfig {
        source_name: String,
        problem: String,
    },
}

/// What a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    Go,
    Rust,
    Json,
}

impl ProgramKind {
    /// Looks at a path: a directory with `go.mod` or `Cargo.toml`, or a `.json` file.
    pub fn detect(path: &Path) -> Result<Self, ProgramError> {
        if !path.exists() {
            return Err(ProgramError::NotFound(path.to_path_buf()));
        }
        if path.is_file() {
            return match path.file_name().and_then(|name| name.to_str()) {
                Some("go.mod") => Ok(Self::Go),
                Some("Cargo.toml") => Ok(Self::Rust),
                _ if path
                    .extension()
                    .is_some_and(|extension| extension == "json") =>
                {
                    Ok(Self::Json)
                }
                _ => Err(ProgramError::Unknown(path.to_path_buf())),
            };
        }
        if path.join("go.mod").is_file() {
            Ok(Self::Go)
        } else if path.join("Cargo.toml").is_file() {
            Ok(Self::Rust)
        } else {
            Err(ProgramError::Unknown(path.to_path_buf()))
        }
    }

    fn language(self) -> &'static str {
        match self {
            Self::Go => "Go",
            Self::Rust => "Rust",
            Self::Json => "JSON",
        }
    }
}

/// Builds and runs the program at `path` (or reads the JSON file) and returns the config.
/// `progress` is told what is happening, for a line on stderr.
pub fn config_from(path: &Path, progress: impl Fn(&str)) -> Result<Value, ProgramError> {
    let kind = ProgramKind::detect(path)?;
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    let (text, source_name) = match kind {
        ProgramKind::Json => {
            let text = std::fs::read_to_string(path).map_err(|source| ProgramError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            (text, path.display().to_string())
        }
        ProgramKind::Go => {
            let mut command = Command::new("go");
            command.args(["run", "."]).current_dir(&dir);
            progress(&format!(
                "Building and running the Go pipeline program in {} (go run .)",
                dir.display()
            ));
            (run(kind, "go", &dir, command)?, "the Go program".into())
        }
        ProgramKind::Rust => {
            let mut command = Command::new("cargo");
            command
                .args(["run", "--manifest-path"])
                .arg(dir.join("Cargo.toml"));
            progress(&format!(
                "Building and running the Rust pipeline program in {} (cargo run)",
                dir.display()
            ));
            (
                run(kind, "cargo", &dir, command)?,
                "the Rust program".into(),
            )
        }
    };
    parse_config(&text).map_err(|problem| ProgramError::NotAConfig {
        source_name,
        problem,
    })
}

/// Runs a toolchain command; its stderr (build progress, compiler errors) goes to ours.
fn run(
    kind: ProgramKind,
    tool: &'static str,
    dir: &Path,
    mut command: Command,
) -> Result<String, ProgramError> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| ProgramError::ToolMissing {
            tool,
            language: kind.language(),
            path: dir.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        return Err(ProgramError::Failed {
            language: kind.language(),
            path: dir.to_path_buf(),
            status: output.status,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The config in a program's output: all of it, or else its last line that is a JSON object
/// (a program may print other things first).
fn parse_config(text: &str) -> Result<Value, String> {
    let whole = serde_json::from_str::<Value>(text.trim());
    let value = match whole {
        Ok(value) => value,
        Err(error) => text
            .lines()
            .rev()
            .map(str::trim)
            .filter(|line| line.starts_with('{'))
            .find_map(|line| serde_json::from_str::<Value>(line).ok())
            .ok_or_else(|| {
                if text.trim().is_empty() {
                    "it printed nothing; a pipeline program prints its config (call finish())"
                        .to_string()
                } else {
                    let start: String = text.trim().chars().take(80).collect();
                    format!("its output is not JSON ({error}); it starts with {start:?}")
                }
            })?,
    };
    if !value.is_object() || value.get("id").and_then(Value::as_str).is_none() {
        return Err("the JSON is not a pipeline config (an object with a string \"id\")".into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_config_in_output() {
        assert_eq!(parse_config("{\"id\":\"abc\"}\n").unwrap()["id"], "abc");
        assert_eq!(
            parse_config("building...\n{\"id\":\"abc\"}\n").unwrap()["id"],
            "abc"
        );
        assert!(parse_config("").unwrap_err().contains("printed nothing"));
        assert!(
            parse_config("hello\n")
                .unwrap_err()
                .contains("starts with \"hello\"")
        );
        assert!(
            parse_config("[1, 2]")
                .unwrap_err()
                .contains("not a pipeline config")
        );
    }

    #[test]
    fn detects_programs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ProgramKind::detect(&dir.path().join("nope")),
            Err(ProgramError::NotFound(_))
        ));
        assert!(matches!(
            ProgramKind::detect(dir.path()),
            Err(ProgramError::Unknown(_))
        ));
        std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        assert_eq!(ProgramKind::detect(dir.path()).unwrap(), ProgramKind::Rust);
        std::fs::write(dir.path().join("go.mod"), "").unwrap();
        assert_eq!(ProgramKind::detect(dir.path()).unwrap(), ProgramKind::Go);
        std::fs::write(dir.path().join("p.json"), "").unwrap();
        assert_eq!(
            ProgramKind::detect(&dir.path().join("p.json")).unwrap(),
            ProgramKind::Json
        );
    }
}
