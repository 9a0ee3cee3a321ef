//! Gofer's Rust SDK.
//!
//! With the `config` feature (default): describe a pipeline in a Rust program; see [`config`].
//!
//! With the `plugin` feature: write a trigger or a shared-task plugin as a plain trait
//! implementation, and export it with one macro. Build with
//! `cargo build --release --target wasm32-wasip2` and drop the `.wasm` into Gofer's plugins folder.
//! Test it natively with [`testing`] (a fake clock, objects, logs and HTTP): plain `cargo test`.
//!
//! ```text
//! use gofer_sdk::plugin::{Info, Kind, Task};
//!
//! struct Hello;
//!
//! impl Task for Hello {
//!     fn info() -> Info {
//!         Info::new("hello", Kind::Task, "1.0.0", "Says hello")
//!     }
//!     fn run(settings: Vec<(String, String)>) -> Result<u8, String> {
//!         println!("hello {settings:?}");
//!         Ok(0)
//!     }
//! }
//!
//! gofer_sdk::export_task!(Hello);
//! ```

#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "plugin")]
pub mod plugin;
pub mod rules;
#[cfg(all(feature = "plugin", not(target_arch = "wasm32")))]
pub mod testing;
