//! Plugins' own logs: what each plugin writes (its WIT `log` calls, a trigger's stdout and stderr,
//! a gRPC process's stdout and stderr), one file per plugin under `<data_dir>/plugin-logs`,
//! bounded (past the bound the file is kept as `.1` and a new one started, so at most twice the
//! bound is kept), readable whole and followable live.
//!
//! Owns the files and the live followers. Must not know HTTP or what a plugin is beyond its name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

/// Where plugins' lines are kept; cheap to clone.
#[derive(Clone)]
pub struct PluginLogs {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Largest file before it is rotated.
    max_bytes: u64,
    /// Writes take turns per process (lines of different plugins may interleave in time, never
    /// within a file).
    writing: tokio::sync::Mutex<()>,
    live: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl std::fmt::Debug for PluginLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLogs")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// Whether a plugin name may name a file (built-ins and loaded plugins' names are plain).
fn plain(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl PluginLogs {
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir,
                max_bytes: max_bytes.max(1024),
                writing: tokio::sync::Mutex::new(()),
                live: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn path(&self, plugin: &str) -> PathBuf {
        self.inner.dir.join(format!("{plugin}.log"))
    }

    /// Appends one line (`source` says where it came from: `info`, `stderr`...), with the time.
    pub async fn append(&self, plugin: &str, source: &str, message: &str) {
        if !plain(plugin) {
            return;
        }
        let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let mut line = String::with_capacity(message.len() + 40);
        for (index, part) in message.lines().enumerate() {
            if index > 0 {
                line.push('\n');
            }
            line.push_str(&format!("{stamp} {source:<6} {part}"));
        }
        if line.is_empty() {
            line = format!("{stamp} {source:<6}");
        }
        line.push('\n');
        let written = self.write(plugin, &line).await;
        if let Err(error) = written {
            tracing::warn!(plugin, %error, "could not keep a plugin's log line");
        }
        if let Some(sender) = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(plugin)
        {
            let _ = sender.send(line);
        }
    }

    async fn write(&self, plugin: &str, line: &str) -> std::io::Result<()> {
        let _turn = self.inner.writing.lock().await;
        tokio::fs::create_dir_all(&self.inner.dir).await?;
        let path = self.path(plugin);
        let size = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if size + line.len() as u64 > self.inner.max_bytes {
            tokio::fs::rename(&path, path.with_extension("log.1"))
                .await
                .ok();
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        file.write_all(line.as_bytes()).await
    }

    /// What is kept of a plugin's log, oldest first (the rotated file, then the current one).
    pub async fn read(&self, plugin: &str) -> String {
        if !plain(plugin) {
            return String::new();
        }
        let path = self.path(plugin);
        let older = tokio::fs::read_to_string(path.with_extension("log.1"))
            .await
            .unwrap_or_default();
        let current = tokio::fs::read_to_string(&path).await.unwrap_or_default();
        older + &current
    }

    /// The lines a plugin writes from now on.
    pub fn follow(&self, plugin: &str) -> broadcast::Receiver<String> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(plugin.to_string())
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_kept_bounded_and_followed() {
        let dir = tempfile::tempdir().unwrap();
        let logs = PluginLogs::new(dir.path().to_path_buf(), 2048);
        let mut live = logs.follow("poller");
        logs.append("poller", "info", "first").await;
        assert!(live.recv().await.unwrap().ends_with("info   first\n"));
        for index in 0..200 {
            logs.append("poller", "stderr", &format!("line {index}"))
                .await;
        }
        let kept = logs.read("poller").await;
        assert!(
            kept.contains("line 199") && !kept.contains("first"),
            "{kept}"
        );
        assert!(kept.len() <= 2 * 2048 + 100, "{}", kept.len());
        // A name that is not plain writes nothing anywhere.
        logs.append("../escape", "info", "x").await;
        assert!(!dir.path().parent().unwrap().join("escape.log").exists());
        assert_eq!(logs.read("../escape").await, "");
    }
}
