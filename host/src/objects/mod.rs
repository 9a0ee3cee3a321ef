//! Object contents, behind the [`ObjectStore`] trait, and its two stores: the default, files under
//! `<data_dir>/objects` written to a temporary file and renamed into place, and an S3-compatible
//! bucket ([`s3`]). Either way a reader never sees half an object: one is replaced only by a
//! complete upload.
//!
//! Owns the bytes and where they are kept ([`ObjectKey`], [`relative_location`]). Must not know
//! which objects exist, their limits or expiry: that metadata lives in the main database
//! (`storage`).

pub mod s3;

use std::path::PathBuf;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::io::AsyncWriteExt;

/// A stream of object bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Why an object could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("the object is larger than the limit of {0} bytes (objects.max_object_size_mb)")]
    TooLarge(u64),
    #[error("the object store failed at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the upload failed: {0}")]
    Upload(std::io::Error),
    #[error("'{0}' cannot name an object's owner: use letters, digits, '-', '_' and '.'")]
    InvalidScope(String),
    #[error("the object store failed at {location}: {source}")]
    Remote {
        location: String,
        source: object_store::Error,
    },
    #[error("objects.s3: {0}")]
    S3Settings(String),
}

/// Checks an object key: 1 to 256 printable characters.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
        return Err(format!(
            "invalid object key {key:?}: use 1 to 256 printable characters"
        ));
    }
    Ok(())
}

/// Where an object is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKey {
    Pipeline {
        namespace: String,
        pipeline: String,
        key: String,
    },
    Run {
        namespace: String,
        pipeline: String,
        run: u64,
        key: String,
    },
    Plugin {
        plugin: String,
        key: String,
    },
}

impl ObjectKey {
    /// Another object of the same scope.
    pub fn sibling(&self, key: String) -> Self {
        let mut sibling = self.clone();
        match &mut sibling {
            Self::Pipeline { key: own, .. }
            | Self::Run { key: own, .. }
            | Self::Plugin { key: own, .. } => *own = key,
        }
        sibling
    }
}

/// Where object contents live.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// Stores (or replaces) an object from a stream, refusing more than `max_bytes`; returns its
    /// size.
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        max_bytes: u64,
    ) -> Result<u64, ObjectError>;
    /// The object's bytes as a stream, if it exists.
    async fn get(&self, key: &ObjectKey) -> Result<Option<ByteStream>, ObjectError>;
    /// Removes an object; a missing one is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError>;
    /// Removes every object of a pipeline and of its runs (it is being deleted).
    async fn delete_pipeline(&self, namespace: &str, pipeline: &str) -> Result<(), ObjectError>;
}

/// The default store: one file per object.
#[derive(Debug, Clone)]
pub struct FsObjectStore {
    root: PathBuf,
}

impl FsObjectStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The object's file: `<root>/` and its [`relative_location`], checked to lie under the
    /// root whatever the inputs.
    fn path(&self, key: &ObjectKey) -> Result<PathBuf, ObjectError> {
        let parts = relative_location(key)?;
        let path = parts
            .iter()
            .fold(self.root.clone(), |path, part| path.join(part));
        if !path.starts_with(&self.root)
            || path.components().count() != self.root.components().count() + parts.len()
        {
            return Err(ObjectError::InvalidScope(parts.join("/")));
        }
        Ok(path)
    }
}

/// Where an object is kept, relative to its store's root: its kind (`pipeline`, `run`,
/// `plugin`), its scope (namespace, pipeline, run or plugin: plain names only) and its key as a
/// file name ([`file_name`]), e.g. `["run", "default", "build", "7", "6e6f7465"]`.
pub fn relative_location(key: &ObjectKey) -> Result<Vec<String>, ObjectError> {
    let (kind, scope, name): (&str, Vec<String>, &str) = match key {
        ObjectKey::Pipeline {
            namespace,
            pipeline,
            key,
        } => ("pipeline", vec![namespace.clone(), pipeline.clone()], key),
        ObjectKey::Run {
            namespace,
            pipeline,
            run,
            key,
        } => (
            "run",
            vec![namespace.clone(), pipeline.clone(), run.to_string()],
            key,
        ),
        ObjectKey::Plugin { plugin, key } => ("plugin", vec![plugin.clone()], key),
    };
    if let Some(component) = scope.iter().find(|component| !is_plain_name(component)) {
        return Err(ObjectError::InvalidScope(component.clone()));
    }
    let mut parts = Vec::with_capacity(scope.len() + 2);
    parts.push(kind.to_string());
    parts.extend(scope);
    parts.push(file_name(name));
    Ok(parts)
}

/// Where every object of a pipeline and of its runs is kept, relative to the store's root:
/// `pipeline/<namespace>/<pipeline>` and `run/<namespace>/<pipeline>`.
pub fn pipeline_locations(
    namespace: &str,
    pipeline: &str,
) -> Result<[[String; 3]; 2], ObjectError> {
    for component in [namespace, pipeline] {
        if !is_plain_name(component) {
            return Err(ObjectError::InvalidScope(component.to_string()));
        }
    }
    Ok(["pipeline", "run"].map(|kind| {
        [
            kind.to_string(),
            namespace.to_string(),
            pipeline.to_string(),
        ]
    }))
}

/// Whether a scope component is a plain file name: 1 to 64 characters of `[A-Za-z0-9_.-]`, not
/// starting with a dot (so never `.` or `..`), no separator.
fn is_plain_name(component: &str) -> bool {
    (1..=64).contains(&component.len())
        && !component.starts_with('.')
        && component
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// How much of an object file one read takes while it streams out.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Keys up to this many bytes are kept as their hex spelling (readable on disk); longer ones by
/// hash, so that the name plus an upload's `.partial-<uuid>` suffix stays under the 255 bytes a
/// file name may have.
const MOST_HEX_KEY_BYTES: usize = 100;

/// The file name of a key: its bytes in hex, or for long keys `sha256-` and the hex SHA-256 of
/// the key (the two spellings cannot collide: hex has no `-`).
fn file_name(key: &str) -> String {
    use sha2::Digest;
    let hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    if key.len() <= MOST_HEX_KEY_BYTES {
        hex(key.as_bytes())
    } else {
        format!("sha256-{}", hex(&sha2::Sha256::digest(key.as_bytes())))
    }
}

#[async_trait::async_trait]
impl ObjectStore for FsObjectStore {
    async fn put(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
        max_bytes: u64,
    ) -> Result<u64, ObjectError> {
        let path = self.path(key)?;
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| ObjectError::Io { path, source }
        };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io(&path))?;
        }
        let partial = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(io(&partial))?;
        let mut size = 0u64;
        let written: Result<(), ObjectError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = counted(chunk, &mut size, max_bytes)?;
                file.write_all(&chunk).await.map_err(io(&partial))?;
            }
            file.flush().await.map_err(io(&partial))?;
            file.sync_all().await.map_err(io(&partial))
        }
        .await;
        drop(file);
        if let Err(error) = written {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error);
        }
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(io(&path))?;
        Ok(size)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<ByteStream>, ObjectError> {
        let path = self.path(key)?;
        match tokio::fs::File::open(&path).await {
            // 256 KiB reads: the default 4 KiB made a 32 MiB download 5x slower than from S3.
            Ok(file) => Ok(Some(
                tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK_BYTES).boxed(),
            )),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ObjectError::Io { path, source }),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ObjectError::Io { path, source }),
        }
    }

    async fn delete_pipeline(&self, namespace: &str, pipeline: &str) -> Result<(), ObjectError> {
        for parts in pipeline_locations(namespace, pipeline)? {
            let path = parts
                .iter()
                .fold(self.root.clone(), |path, part| path.join(part));
            match tokio::fs::remove_dir_all(&path).await {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ObjectError::Io { path, source }),
            }
        }
        Ok(())
    }
}

/// An upload's next chunk, added to `size`; refused once the upload passes `max_bytes` (both
/// stores count the same way).
pub(crate) fn counted(
    chunk: Result<Bytes, std::io::Error>,
    size: &mut u64,
    max_bytes: u64,
) -> Result<Bytes, ObjectError> {
    let chunk = chunk.map_err(ObjectError::Upload)?;
    *size += chunk.len() as u64;
    if *size > max_bytes {
        return Err(ObjectError::TooLarge(max_bytes));
    }
    Ok(chunk)
}

/// Reads a whole object, up to `max_bytes` (for interpolating it into a variable).
pub async fn read_to_vec(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    max_bytes: usize,
) -> Result<Option<Vec<u8>>, ObjectError> {
    let Some(mut stream) = store.get(key).await? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ObjectError::Upload)?;
        if bytes.len() + chunk.len() > max_bytes {
            return Err(ObjectError::TooLarge(max_bytes as u64));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|part| Ok(Bytes::from_static(part)))
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    #[tokio::test]
    async fn objects_round_trip_and_oversized_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsObjectStore::new(dir.path().to_path_buf());
        let key = ObjectKey::Run {
            namespace: "default".into(),
            pipeline: "p".into(),
            run: 3,
            key: "../../etc/passwd".into(),
        };
        assert_eq!(
            store
                .put(&key, body(&[b"hello ", b"world"]), 100)
                .await
                .unwrap(),
            11
        );
        assert_eq!(
            read_to_vec(&store, &key, 100).await.unwrap().unwrap(),
            b"hello world"
        );
        // The key is only a file name: nothing was written outside the store.
        assert!(store.path(&key).unwrap().starts_with(dir.path()));
        let error = store
            .put(&key, body(&[b"0123456789"]), 5)
            .await
            .unwrap_err();
        assert!(matches!(error, ObjectError::TooLarge(5)));
        // The refused upload did not replace (or damage) the stored object.
        assert_eq!(
            read_to_vec(&store, &key, 100).await.unwrap().unwrap(),
            b"hello world"
        );
        store.delete(&key).await.unwrap();
        assert!(store.get(&key).await.unwrap().is_none());
        store.delete(&key).await.unwrap();
    }

    #[tokio::test]
    async fn scopes_cannot_leave_the_store_and_long_keys_fit() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsObjectStore::new(dir.path().join("objects"));
        let escape = dir.path().join("escape");
        for plugin in [
            "../../escape",
            "..",
            ".",
            "",
            "/tmp/escape",
            "a/b",
            ".hidden",
        ] {
            let key = ObjectKey::Plugin {
                plugin: plugin.to_string(),
                key: "k".into(),
            };
            let error = store.put(&key, body(&[b"pwned"]), 100).await.unwrap_err();
            assert!(
                matches!(error, ObjectError::InvalidScope(_)),
                "{plugin}: {error}"
            );
            assert!(store.get(&key).await.is_err());
            assert!(store.delete(&key).await.is_err());
        }
        let namespace = ObjectKey::Pipeline {
            namespace: "..".into(),
            pipeline: "x".into(),
            key: "k".into(),
        };
        assert!(store.put(&namespace, body(&[b"x"]), 100).await.is_err());
        assert!(!escape.exists());
        // Keys of every documented length are stored and read back, each its own file.
        for length in [1, 100, 101, 106, 256] {
            let key = ObjectKey::Plugin {
                plugin: "interval".into(),
                key: "k".repeat(length),
            };
            let contents = format!("{length}").into_bytes();
            let stream = futures_util::stream::iter([Ok(Bytes::from(contents.clone()))]).boxed();
            store.put(&key, stream, 100).await.unwrap();
            assert_eq!(
                read_to_vec(&store, &key, 100).await.unwrap().unwrap(),
                contents
            );
        }
    }
}
