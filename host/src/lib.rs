//! Gofer: runs short-lived jobs as DAGs of containers and WebAssembly plugins.
//!
//! The library behind the `gofer` binary (server and CLI). See `docs/ARCHITECTURE.md` for the map.

pub mod models;
pub mod pipeline_config;
pub mod storage;
pub mod api;
pub mod config;
pub mod events;
pub mod server;
pub mod cli;
