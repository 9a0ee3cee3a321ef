//! Task logs on disk: one file per task execution under `<data_dir>/logs`, written while the task
//! runs and followed live by readers.
//!
//! Owns file layout, the end marker (`GOFER_EOF`, as Gofer v0 wrote it), live notification of
//! appended bytes, and removal. Must not know about containers or runs beyond their ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::io::Read;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::masks::Masks;

/// Written after a task's last output; readers stop at the line that contains it.
pub const EOF_MARKER: &str = "GOFER_EOF";

/// How long a follower waits for news before looking at the file again.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// The most a follower reads at once before handing the lines on (a long log replays in parts).
const FOLLOW_READ_LIMIT: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("could not write task log {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not read task log {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Identifies one task execution's log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogKey {
    pub namespace_id: String,
    pub pipeline_id: String,
    pub run_id: u64,
    pub task_id: String,
}

/// The log directory and the live writers in it.
#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
    live: Arc<Mutex<HashMap<PathBuf, watch::Sender<u64>>>>,
}

impl LogStore {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            live: Arc::default(),
        }
    }

    pub fn path(&self, key: &LogKey) -> PathBuf {
        self.dir
            .join(&key.namespace_id)
            .join(&key.pipeline_id)
            .join(key.run_id.to_string())
            .join(format!("{}.log", key.task_id))
    }

    /// Opens the log for writing: `truncate` starts it afresh, otherwise output is appended.
    pub async fn writer(&self, key: &LogKey, truncate: bool) -> Result<LogWriter, LogError> {
        let path = self.path(key);
        let write_error = |source| LogError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(write_error)?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(!truncate)
            .truncate(truncate)
            .open(&path)
            .await
            .map_err(write_error)?;
        let written = file.metadata().await.map_err(write_error)?.len();
        let sender = {
            let mut live = self
                .live
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            live.entry(path.clone())
                .or_insert_with(|| watch::channel(written).0)
                .clone()
        };
        Ok(LogWriter {
            store: self.clone(),
            path,
            file,
            written,
            sender,
            masks: Masks::default(),
            pending: Vec::new(),
        })
    }

    /// Follows a log: yields the lines (newline included) written since the last batch, as they
    /// are written, until the end marker. Stops early when the receiver is dropped.
    ///
    /// Lines come in batches, one per wake-up, so that a fast task with many followers costs one
    /// read and one message per follower per write, not one per line.
    pub fn follow(&self, key: &LogKey) -> mpsc::Receiver<Result<Vec<String>, LogError>> {
        let (sender, receiver) = mpsc::channel(16);
        let store = self.clone();
        let path = self.path(key);
        tokio::spawn(async move {
            if let Err(error) = store.follow_into(&path, &sender).await {
                let _ = sender.send(Err(error)).await;
            }
        });
        receiver
    }

    async fn follow_into(
        &self,
        path: &Path,
        batches: &mpsc::Sender<Result<Vec<String>, LogError>>,
    ) -> Result<(), LogError> {
        let read_error = |source| LogError::Read {
            path: path.to_path_buf(),
            source,
        };
        // Plain reads: what a follower reads was just written, so it comes from the page cache
        // in microseconds; a blocking-pool hop per read cost more than the read.
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let updates = self
                .live
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(path)
                .map(watch::Sender::subscribe);
            let before = pending.len();
            let read = (&mut file)
                .take(FOLLOW_READ_LIMIT)
                .read_to_end(&mut pending)
                .map_err(read_error)?;
            // The marker may straddle the previous read's tail, which is still in `pending`.
            let search_from = before.saturating_sub(EOF_MARKER.len());
            if let Some(position) = find(&pending[search_from..], EOF_MARKER.as_bytes()) {
                pending.truncate(search_from + position);
                let lines = split_lines(&mut pending, true);
                if !lines.is_empty() {
                    let _ = batches.send(Ok(lines)).await;
                }
                return Ok(());
            }
            let lines = split_lines(&mut pending, false);
            if !lines.is_empty() && batches.send(Ok(lines)).await.is_err() {
                return Ok(());
            }
            if read as u64 == FOLLOW_READ_LIMIT {
                continue;
            }
            match updates {
                Some(mut updates) => {
                    let _ = tokio::time::timeout(FOLLOW_POLL, updates.changed()).await;
                }
                // No writer and no marker: the log will not grow any more.
                None if read == 0 => {
                    let lines = split_lines(&mut pending, true);
                    if !lines.is_empty() {
                        let _ = batches.send(Ok(lines)).await;
                    }
                    return Ok(());
                }
                None => {}
            }
        }
    }

    /// The whole log as it is now, without the end marker.
    pub async fn read_all(&self, key: &LogKey) -> Result<String, LogError> {
        let path = self.path(key);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|source| LogError::Read { path, source })?;
        let text = String::from_utf8_lossy(&bytes);
        Ok(match text.find(EOF_MARKER) {
            Some(position) => text[..position].to_string(),
            None => text.into_owned(),
        })
    }

    pub fn exists(&self, key: &LogKey) -> bool {
        self.path(key).exists()
    }

    /// Removes every log of a pipeline (it is being deleted). Ids are plain names; one that is
    /// not (`..`, a separator) removes nothing.
    pub async fn remove_pipeline(&self, namespace: &str, pipeline: &str) -> Result<(), LogError> {
        let plain = |id: &str| !id.is_empty() && !id.starts_with('.') && !id.contains(['/', '\\']);
        if !plain(namespace) || !plain(pipeline) {
            return Ok(());
        }
        let path = self.dir.join(namespace).join(pipeline);
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LogError::Write { path, source }),
        }
    }

    /// Deletes a log file (missing is fine), and its run's folder once it holds no other log.
    pub async fn remove(&self, key: &LogKey) -> Result<(), LogError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LogError::Write { path, source }),
        }
        if let Some(run_folder) = path.parent() {
            // Fails while other logs of the run are there: that is the point.
            let _ = tokio::fs::remove_dir(run_folder).await;
        }
        Ok(())
    }
}

/// Takes the complete lines out of `pending` (and, with `all`, the unterminated rest too).
fn split_lines(pending: &mut Vec<u8>, all: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(end) = pending[start..].iter().position(|byte| *byte == b'\n') {
        let end = start + end + 1;
        lines.push(String::from_utf8_lossy(&pending[start..end]).into_owned());
        start = end;
    }
    if all && start < pending.len() {
        lines.push(String::from_utf8_lossy(&pending[start..]).into_owned());
        start = pending.len();
    }
    pending.drain(..start);
    lines
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Appends to one log and tells followers.
pub struct LogWriter {
    store: LogStore,
    path: PathBuf,
    file: tokio::fs::File,
    written: u64,
    sender: watch::Sender<u64>,
    /// Values never written as they are (secrets).
    masks: Masks,
    /// With masks: the end of the output after its last newline, held back so that a value split
    /// between two writes is still masked.
    pending: Vec<u8>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the masks: they are secrets.
        f.debug_struct("LogWriter")
            .field("path", &self.path)
            .field("masks", &self.masks)
            .finish()
    }
}

impl LogWriter {
    /// From now on, the masked values are written as [`crate::masks::MASK`].
    pub fn mask(&mut self, masks: Masks) {
        self.masks = masks;
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        if self.masks.is_empty() {
            return self.write_raw(bytes).await;
        }
        self.pending.extend_from_slice(bytes);
        let Some(end) = self.pending.iter().rposition(|byte| *byte == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = self.pending.drain(..=end).collect();
        let masked = self.masks.apply(&complete);
        self.write_raw(&masked).await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        self.file
            .write_all(bytes)
            .await
            .map_err(|source| LogError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.written += bytes.len() as u64;
        self.sender.send_replace(self.written);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the end marker and closes the log.
    pub async fn finish(mut self) -> Result<(), LogError> {
        let rest = std::mem::take(&mut self.pending);
        let rest = self.masks.apply(&rest);
        let outcome = match self.write_raw(&rest).await {
            Ok(()) => self.write_raw(EOF_MARKER.as_bytes()).await,
            Err(error) => Err(error),
        };
        let flushed = self.file.flush().await;
        self.store
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.path);
        self.sender.send_replace(self.written);
        outcome?;
        flushed.map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LogKey {
        LogKey {
            namespace_id: "default".into(),
            pipeline_id: "p".into(),
            run_id: 1,
            task_id: "t".into(),
        }
    }

    #[tokio::test]
    async fn a_follower_sees_lines_as_they_are_written_and_stops_at_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf());
        let mut writer = store.writer(&key(), true).await.unwrap();
        writer.write(b"first\nsec").await.unwrap();
        let mut follower = store.follow(&key());
        let follower = tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(batch) = follower.recv().await {
                lines.extend(batch.unwrap());
            }
            lines
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.write(b"ond\nlast without newline").await.unwrap();
        writer.finish().await.unwrap();
        let lines = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lines, ["first\n", "second\n", "last without newline"]);
        assert_eq!(
            store.read_all(&key()).await.unwrap(),
            "first\nsecond\nlast without newline"
        );
    }

    #[tokio::test]
    async fn secret_values_are_masked_even_when_split_between_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf());
        let mut writer = store.writer(&key(), true).await.unwrap();
        writer.mask(Masks::of([
            "hunter2".to_string(),
            "multi\nline".to_string(),
            String::new(),
        ]));
        writer.write(b"token=hun").await.unwrap();
        writer
            .write(b"ter2 ok\nmulti and line\nlast hunter2")
            .await
            .unwrap();
        writer.finish().await.unwrap();
        let log = store.read_all(&key()).await.unwrap();
        assert_eq!(
            log,
            "token=******** ok\n******** and ********\nlast ********"
        );
        let raw = std::fs::read_to_string(store.path(&key())).unwrap();
        assert!(!raw.contains("hunter2"), "{raw}");
    }
}
