//! Builds the built-in plugins (`../plugins`, WebAssembly components for wasm32-wasip2) and embeds
//! them in the binary; also builds the test fixture plugins and tells the tests where they are,
//! and compiles the gRPC plugin protocol (`../proto`) with protox, so no `protoc` is needed.
//! With the `docs-site` feature it embeds the built documentation site (`../target/book`, from
//! `make docs`), served at `/docs`.

use std::path::{Path, PathBuf};
use std::process::Command;

const BUILTINS: &[&str] = &[
    "interval",
    "cron",
    "webhook",
    "debug",
    "http-request",
    "http-poll",
];
const FIXTURES: &[&str] = &["misbehave", "future", "forger", "legacy-tick"];

fn main() {
    compile_plugin_protocol();
    embed_book();
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let plugins = manifest_dir.join("../plugins");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in [
        "../wit",
        "../sdk-rust",
        "../plugins/Cargo.toml",
        "../plugins/Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={watched}");
    }
    for name in BUILTINS {
        println!("cargo:rerun-if-changed=../plugins/{name}");
    }
    for name in FIXTURES {
        println!("cargo:rerun-if-changed=../plugins/fixtures/{name}");
    }
    println!("cargo:rerun-if-env-changed=GOFER_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=GOFER_BUILD_DATE");
    // `gofer --version`: the version from Cargo.toml, and the commit and date `make release`
    // passes (a development build says so instead of guessing).
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let line = match (
        std::env::var("GOFER_BUILD_COMMIT"),
        std::env::var("GOFER_BUILD_DATE"),
    ) {
        (Ok(commit), Ok(date)) => format!("{version} (commit {commit}, built {date})"),
        (Ok(commit), Err(_)) => format!("{version} (commit {commit})"),
        _ => format!("{version} (development build)"),
    };
    println!("cargo:rustc-env=GOFER_VERSION_LINE={line}");

    // Share compiled plugin dependencies between builds when the user keeps a target dir outside.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| PathBuf::from(dir).join("plugins"))
        .unwrap_or_else(|| out_dir.join("plugins-target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir);
    // The host's flags (e.g. +crt-static for the release binary) must not reach the wasm build.
    for variable in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(variable);
    }
    let output = command
        .output()
        .expect("could not run cargo to build the plugins");
    if !output.status.success() {
        panic!(
            "building the built-in plugins failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2` or `make setup`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let built = target_dir.join("wasm32-wasip2/release");
    let mut table = String::from(
        "/// Built-in plugins: (name, component bytes).\npub static BUILTIN_PLUGINS: &[(&str, &[u8])] = &[\n",
    );
    for name in BUILTINS {
        let file = copy(&built, &out_dir, name);
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            file.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), table)
        .expect("could not write builtin_plugins.rs");
    let fixtures = out_dir.join("fixtures");
    std::fs::create_dir_all(&fixtures).expect("could not create the fixture dir");
    for name in FIXTURES {
        copy(&built, &fixtures, name);
    }
    println!(
        "cargo:rustc-env=GOFER_FIXTURE_PLUGINS_DIR={}",
        fixtures.display()
    );
}

/// Generates the gRPC client for `gofer.plugin.v1` (the host only calls plugins).
fn compile_plugin_protocol() {
    println!("cargo:rerun-if-changed=../proto");
    let descriptors = protox::compile(["gofer/plugin/v1/plugin.proto"], ["../proto"])
        .unwrap_or_else(|error| panic!("../proto/gofer/plugin/v1/plugin.proto: {error}"));
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)
        .unwrap_or_else(|error| panic!("could not generate the gRPC plugin client: {error}"));
}

fn copy(built: &Path, to: &Path, name: &str) -> PathBuf {
    let source = built.join(format!("gofer_plugin_{}.wasm", name.replace('-', "_")));
    let destination = to.join(format!("{name}.wasm"));
    std::fs::copy(&source, &destination)
        .unwrap_or_else(|error| panic!("could not copy {}: {error}", source.display()));
    destination
}

/// Writes `$OUT_DIR/book.rs`: the built book's files (path, bytes) when the `docs-site` feature is
/// on, else none.
fn embed_book() {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut entries = String::new();
    if std::env::var_os("CARGO_FEATURE_DOCS_SITE").is_some() {
        let manifest_dir = PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
        );
        let book = manifest_dir.join("../target/book");
        println!("cargo:rerun-if-changed={}", book.display());
        if !book.join("index.html").is_file() {
            panic!(
                "the docs-site feature embeds the documentation site, but {} has no index.html: run `make docs` first",
                book.display()
            );
        }
        let mut files = Vec::new();
        collect_files(&book, &mut files);
        files.sort();
        for file in files {
            let relative = file
                .strip_prefix(&book)
                .expect("under the book")
                .to_string_lossy()
                .replace('\\', "/");
            println!("cargo:rerun-if-changed={}", file.display());
            entries.push_str(&format!(
                "    ({relative:?}, include_bytes!({:?})),\n",
                file.display().to_string()
            ));
        }
    }
    std::fs::write(
        out_dir.join("book.rs"),
        format!("pub static BOOK: &[(&str, &[u8])] = &[\n{entries}];\n"),
    )
    .expect("OUT_DIR is writable");
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("the book is readable")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}
