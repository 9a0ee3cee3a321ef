//! Fail points for tests: a debug build stops dead at a named point when `GOFER_FAILPOINT` names
//! it, as a crash (`kill -9`) would there. Release builds have none.
//!
//! Owns nothing else; must never be reached in a release build.

/// Stops the process if `GOFER_FAILPOINT` names `point` (debug builds only).
pub fn reached(point: &str) {
    if cfg!(debug_assertions) && std::env::var("GOFER_FAILPOINT").is_ok_and(|name| name == point) {
        tracing::error!(point, "fail point reached: stopping the process");
        std::process::abort();
    }
}
