//! `gofer plugin new NAME --kind trigger|task --lang rust|go`: writes a plugin project that
//! builds, whose tests pass, and whose output drops into a server's plugins folder. The templates
//! are files under `templates/`, embedded in the binary.
//!
//! Owns the templates and where the SDK is found; must not touch an existing file (it refuses a
//! folder that is not empty) or talk to a server.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Language {
    /// A WebAssembly component built with the Rust SDK (`gofer-sdk`).
    Rust,
    /// A process over gRPC built with the Go SDK (`gofer.dev/sdk/plugin`).
    Go,
}

/// The kind of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Kind {
    Trigger,
    Task,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Task => "task",
        }
    }
}

/// One file of a template: where it goes (with placeholders) and what it holds.
type TemplateFile = (&'static str, &'static str);

/// The built-in plugins' lockfile: a new Rust project starts from the versions of the SDK's
/// dependencies that Gofer builds and tests with (Cargo drops the entries it does not use), so
/// it builds the same today and next year, and offline once they are fetched.
const RUST_LOCKFILE: &str = include_str!("../../../plugins/Cargo.lock");

const RUST_TRIGGER: &[TemplateFile] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    ("Cargo.lock", RUST_LOCKFILE),
    ("README.md", include_str!("templates/rust/README.md")),
    (".gitignore", include_str!("templates/rust/gitignore")),
    ("src/lib.rs", include_str!("templates/rust/trigger.rs")),
];

const RUST_TASK: &[TemplateFile] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    ("Cargo.lock", RUST_LOCKFILE),
    ("README.md", include_str!("templates/rust/README.md")),
    (".gitignore", include_str!("templates/rust/gitignore")),
    ("src/lib.rs", include_str!("templates/rust/task.rs")),
];

const GO_TRIGGER: &[TemplateFile] = &[
    ("go.mod", include_str!("templates/go/go.mod")),
    ("README.md", include_str!("templates/go/README.md")),
    (".gitignore", include_str!("templates/go/gitignore")),
    ("{{name}}.toml", include_str!("templates/go/manifest.toml")),
    ("main.go", include_str!("templates/go/trigger.go")),
    ("main_test.go", include_str!("templates/go/trigger_test.go")),
];

const GO_TASK: &[TemplateFile] = &[
    ("go.mod", include_str!("templates/go/go.mod")),
    ("README.md", include_str!("templates/go/README.md")),
    (".gitignore", include_str!("templates/go/gitignore")),
    ("{{name}}.toml", include_str!("templates/go/manifest.toml")),
    ("main.go", include_str!("templates/go/task.go")),
    ("main_test.go", include_str!("templates/go/task_test.go")),
];

/// The version of `gofer-sdk` a project from outside a checkout asks crates.io for.
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The SDK in the checkout this binary was built from, if it is still there.
fn checkout_sdk(language: Language) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let sdk = match language {
        Language::Rust => root.join("sdk-rust"),
        Language::Go => root.join("sdk-go/plugin"),
    };
    sdk.is_dir().then_some(sdk)
}

/// What `gofer plugin new` was asked for.
#[derive(Debug)]
pub(super) struct NewPlugin {
    pub name: String,
    pub kind: Kind,
    pub language: Language,
    /// Where to write it (default: `./NAME`).
    pub dir: Option<PathBuf>,
    /// The SDK to build against (default: the checkout this binary came from, if any).
    pub sdk: Option<PathBuf>,
}

/// Writes the project and says what was written and what to do next.
pub(super) fn new_plugin(request: NewPlugin) -> anyhow::Result<String> {
    if let Some(problem) = gofer_sdk::rules::identifier_problem(&request.name) {
        bail!(
            "invalid plugin name '{}': {problem} (3 to 32 of a-z, A-Z, 0-9 and '-')",
            request.name
        );
    }
    if request.language == Language::Rust
        && !request.name.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        bail!(
            "invalid plugin name '{}': a Rust package name starts with a letter",
            request.name
        );
    }
    let dir = request
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&request.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("could not read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; give a new folder with --dir (nothing was written)",
            dir.display()
        );
    }
    let sdk = match &request.sdk {
        Some(sdk) => Some(
            std::fs::canonicalize(sdk)
                .with_context(|| format!("--sdk {}: no such folder", sdk.display()))?,
        ),
        None => checkout_sdk(request.language),
    };
    let marker = match request.language {
        Language::Rust => "Cargo.toml",
        Language::Go => "go.mod",
    };
    if let Some(sdk) = &sdk
        && !sdk.join(marker).is_file()
    {
        bail!(
            "--sdk {}: it has no {marker}; give the SDK's folder (sdk-rust for Rust, sdk-go/plugin for Go)",
            sdk.display()
        );
    }
    let sdk_dependency = match &sdk {
        Some(path) => format!(
            "gofer-sdk = {{ path = {}, default-features = false, features = [\"plugin\"] }}",
            toml_string(path)
        ),
        None => format!(
            "gofer-sdk = {{ version = \"{SDK_VERSION}\", default-features = false, features = [\"plugin\"] }}"
        ),
    };
    let go_sdk = sdk.as_ref().map_or_else(
        || "../path/to/gofer/sdk-go/plugin".to_string(),
        |path| path.display().to_string(),
    );
    let fill = |text: &str| {
        text.replace("{{name}}", &request.name)
            .replace("{{crate}}", &request.name.replace('-', "_"))
            .replace(
                "{{env}}",
                &request.name.replace('-', "_").to_ascii_uppercase(),
            )
            .replace("{{kind}}", request.kind.as_str())
            .replace("{{sdk_dependency}}", &sdk_dependency)
            .replace("{{go_sdk}}", &go_sdk)
    };
    let files = match (request.language, request.kind) {
        (Language::Rust, Kind::Trigger) => RUST_TRIGGER,
        (Language::Rust, Kind::Task) => RUST_TASK,
        (Language::Go, Kind::Trigger) => GO_TRIGGER,
        (Language::Go, Kind::Task) => GO_TASK,
    };
    let mut written = Vec::new();
    for (path, contents) in files {
        let path = dir.join(fill(path));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("could not create {}", parent.display()))?;
        }
        std::fs::write(&path, fill(contents))
            .with_context(|| format!("could not write {}", path.display()))?;
        written.push(path);
    }
    let mut report = format!(
        "✓ Wrote the {} plugin '{}' ({}) in {}:\n",
        request.kind.as_str(),
        request.name,
        match request.language {
            Language::Rust => "Rust, a WebAssembly component",
            Language::Go => "Go, a gRPC process",
        },
        dir.display()
    );
    for path in &written {
        report.push_str(&format!("  {}\n", path.display()));
    }
    let crate_name = request.name.replace('-', "_");
    report.push_str(&match request.language {
        Language::Rust => format!(
            "Next: cd {} && cargo test && cargo build --release --target wasm32-wasip2\n\
             then copy target/wasm32-wasip2/release/{crate_name}.wasm into the server's plugins folder.\n",
            dir.display()
        ),
        Language::Go => format!(
            "Next: cd {} && go mod tidy && go test ./... && go build -o {name} .\n\
             then copy {name} and {name}.toml into the server's plugins folder.\n",
            dir.display(),
            name = request.name
        ),
    });
    if sdk.is_none() {
        report.push_str(&match request.language {
            Language::Rust => format!(
                "Note: it asks crates.io for gofer-sdk {SDK_VERSION}; to build against a Gofer \
                 checkout instead, give --sdk path/to/gofer/sdk-rust.\n"
            ),
            Language::Go => "Note: edit the replace line in go.mod to point at sdk-go/plugin in a \
                             Gofer checkout (or give --sdk).\n"
                .to_string(),
        });
    }
    Ok(report)
}

/// A path as a TOML basic string.
fn toml_string(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, language: Language, dir: &Path) -> NewPlugin {
        NewPlugin {
            name: name.into(),
            kind: Kind::Trigger,
            language,
            dir: Some(dir.to_path_buf()),
            sdk: None,
        }
    }

    #[test]
    fn names_are_checked_before_anything_is_written() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("p");
        let error = new_plugin(request("a b", Language::Go, &dir)).unwrap_err();
        assert!(
            error.to_string().contains("invalid plugin name 'a b'"),
            "{error}"
        );
        let error = new_plugin(request("1st", Language::Rust, &dir)).unwrap_err();
        assert!(
            error.to_string().contains("starts with a letter"),
            "{error}"
        );
        assert!(!dir.exists());
    }

    #[test]
    fn a_folder_with_files_is_left_alone() {
        let scratch = tempfile::tempdir().unwrap();
        std::fs::write(scratch.path().join("keep.txt"), "mine").unwrap();
        let error = new_plugin(request("my-trigger", Language::Rust, scratch.path())).unwrap_err();
        assert!(error.to_string().contains("is not empty"), "{error}");
        assert_eq!(
            std::fs::read_dir(scratch.path()).unwrap().count(),
            1,
            "nothing was written"
        );
    }

    #[test]
    fn placeholders_are_filled_in() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("p");
        new_plugin(request("my-trigger", Language::Go, &dir)).unwrap();
        let manifest = std::fs::read_to_string(dir.join("my-trigger.toml")).unwrap();
        assert!(manifest.contains("command = \"my-trigger\""));
        let main = std::fs::read_to_string(dir.join("main.go")).unwrap();
        assert!(main.contains("MY_TRIGGER_DUE"));
        for placeholder in ["{{name}}", "{{crate}}", "{{env}}", "{{kind}}", "{{go_sdk}}"] {
            assert!(!main.contains(placeholder), "{placeholder} left in main.go");
        }
    }
}
