//! `gofer plugin check FILE`: what a plugin file is (runtime, interface version, world, name,
//! kind, settings) or why a server would refuse it, found without a server: a `.wasm` component
//! is compiled and its `info` called as loading it would; a `.toml` manifest's process is
//! started, handshaken, asked for its `Info` and stopped.
//!
//! Uses the same loaders as the registry, with the operator's `[plugins]` limits; must not
//! touch a server's data directory (its compile cache is a temporary folder).

use std::path::Path;

use super::grpc::{self, GrpcSettings};
use super::logs::PluginLogs;
use super::wasm::{Limits, WasmRuntime};
use super::{BUILTIN_PLUGINS, PluginDescription, PluginError, Runtime};
use crate::config::PluginsSection;

/// What a plugin file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// `wasm` or `grpc`.
    pub runtime: &'static str,
    /// `gofer:plugin@0.2.0` (WebAssembly) or `gofer.plugin.v1` (gRPC).
    pub interface: String,
    pub description: PluginDescription,
    /// Worth knowing: e.g. that it replaces a built-in plugin.
    pub notes: Vec<String>,
}

/// Checks one plugin file as the registry would load it.
pub async fn check(path: &Path, plugins: &PluginsSection) -> Result<CheckReport, PluginError> {
    let runtime = Runtime::of(path).ok_or_else(|| {
        PluginError::Load(format!(
            "{} is neither a .wasm component nor a .toml manifest; the plugins folder ignores it",
            path.display()
        ))
    })?;
    let (interface, description) = match runtime {
        Runtime::Wasm => check_component(path, plugins).await?,
        Runtime::Grpc => {
            let description =
                grpc::describe_manifest(path, GrpcSettings::from_config(plugins)).await?;
            ("gofer.plugin.v1".to_string(), description)
        }
    };
    let mut notes = Vec::new();
    if BUILTIN_PLUGINS
        .iter()
        .any(|(name, _)| *name == description.name)
    {
        notes.push(format!(
            "it replaces the built-in plugin '{}' while it is in the plugins folder",
            description.name
        ));
    }
    Ok(CheckReport {
        runtime: runtime.name(),
        interface,
        description,
        notes,
    })
}

async fn check_component(
    path: &Path,
    plugins: &PluginsSection,
) -> Result<(String, PluginDescription), PluginError> {
    let bytes = std::fs::read(path).map_err(|error| {
        PluginError::Load(format!("could not read {}: {error}", path.display()))
    })?;
    let scratch = tempfile::tempdir().map_err(|error| {
        PluginError::Load(format!("could not make a temporary folder: {error}"))
    })?;
    let runtime = WasmRuntime::new(
        scratch.path().join("cache"),
        Limits::from_config(plugins),
        None,
        PluginLogs::new(scratch.path().join("logs"), 1 << 20),
    )?;
    let (interface, _) = runtime.interface_of(bytes.clone()).await?;
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().to_string())
        .unwrap_or_default();
    let (description, _) = runtime.load(&stem, bytes).await?;
    Ok((interface, description))
}
