//! Gofer: runs short-lived jobs as DAGs of containers and WebAssembly plugins.
//!
//! The library behind the `gofer` binary (server and CLI). See `docs/ARCHITECTURE.md` for the map.

pub mod api;
pub mod cli;
pub mod config;
pub mod events;
pub mod models;
pub mod pipeline_config;
pub mod server;
pub mod storage;
pub mod scheduler;
pub mod logs;
pub mod orchestrator;
