//! Gofer: runs short-lived jobs as DAGs of containers and WebAssembly plugins.
//!
//! The library behind the `gofer` binary (server and CLI). See `docs/ARCHITECTURE.md` for the map.

pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod docs_site;
pub mod domain;
pub mod events;
pub mod failpoints;
pub mod logs;
pub mod masks;
pub mod metrics;
pub mod models;
pub mod object_service;
pub mod objects;
pub mod orchestrator;
pub mod pipeline_config;
pub mod plugins;
pub mod rollouts;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod ui;
