//! End-to-end tests: a real `gofer` binary, real SQLite files, real HTTP over loopback.

mod api_conventions;
mod auth;
mod cli;
mod configs;
mod debugging;
mod deployments;
mod events;
mod grpc_plugins;
mod kit;
mod logs;
mod namespaces;
mod objects_s3;
mod openapi;
mod operations;
mod pipelines_as_code;
mod plugins;
mod podman;
mod recovery;
mod runs;
mod secrets_objects;
mod security;
mod startup;
mod support;
mod tls;
mod trust;
mod ui;
