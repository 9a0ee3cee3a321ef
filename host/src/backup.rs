//! Backup and restore of a server's state: `gofer service backup DIR` and `gofer service restore
//! DIR --data-dir NEW`.
//!
//! A backup is a folder: the two SQLite databases copied with SQLite's online backup API (a
//! consistent snapshot while the server keeps writing), then the rest of the data directory as
//! files (objects, task logs, plugin logs, the plugins folder; not the compiled-plugin cache), the
//! secrets key in `secrets.key` (to be moved somewhere safe), and `BACKUP.json` describing it.
//! Objects kept in an S3 bucket stay there: the manifest names the bucket.
//! Databases go first: an object or log written after the snapshot is an extra file, never a
//! missing one for a row the snapshot has (objects are replaced only by complete renames).
//!
//! Owns the layout of a backup folder and nothing else: it reads the data directory's paths from
//! [`ServerConfig`], goes through `storage` for SQLite, and must not talk to a running server.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ServerConfig;
use crate::storage::{Storage, StorageError};

/// The description of a backup, `BACKUP.json`.
pub const MANIFEST: &str = "BACKUP.json";
/// The secrets key, kept apart from the data.
pub const KEY_FILE: &str = "secrets.key";
const DATABASES: [&str; 2] = ["gofer.db", "secrets.db"];
/// Rebuilt at start; not worth saving.
const SKIPPED_DIRS: [&str; 1] = ["plugin-cache"];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0} is not a Gofer backup: it has no {MANIFEST}")]
    NotABackup(PathBuf),
    #[error("{path} is not a usable {MANIFEST}: {detail}")]
    BadManifest { path: PathBuf, detail: String },
    #[error("{0} already exists and is not empty: back up or restore into a new folder")]
    NotEmpty(PathBuf),
    #[error("{0} has no database (gofer.db): is it the server's data directory?")]
    NoDatabase(PathBuf),
    #[error(
        "the backup has schema version {found}, newer than the {supported} this Gofer knows: \
         restore it with the Gofer that made it ({made_by})"
    )]
    TooNew {
        found: usize,
        supported: usize,
        made_by: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `BACKUP.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The layout of the folder; 1.
    pub format: u32,
    /// The Gofer that made it.
    pub gofer_version: String,
    /// The database schema version (migrations applied).
    pub schema_version: usize,
    /// When (epoch ms).
    pub created: u64,
    /// The data directory it was taken from.
    pub source: PathBuf,
    /// Files copied besides the databases, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// With `objects.engine = "s3"`: the bucket and prefix the objects stay in
    /// (`s3://bucket/prefix`); their bytes are not copied: back the bucket up with its own tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects_bucket: Option<String>,
}

/// Fails unless `dir` is missing or an empty folder; then makes it.
fn fresh_folder(dir: &Path) -> Result<(), BackupError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(dir.to_path_buf()));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// Copies the files under `from` into `to` (made as needed), leaving out `skip` (names directly
/// under `from`). Files that vanish while copying (an object replaced, a log removed) are left
/// out. Returns (files, bytes).
fn copy_tree(
    from: &Path,
    to: &Path,
    skip: &dyn Fn(&str) -> bool,
) -> Result<(u64, u64), BackupError> {
    let mut totals = (0, 0);
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(totals),
        Err(error) => return Err(io(from)(error)),
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in entries {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name();
        if skip(&name.to_string_lossy()) {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(_) => continue,
        };
        if kind.is_dir() {
            let (files, bytes) = copy_tree(&source, &target, &|_| false)?;
            totals = (totals.0 + files, totals.1 + bytes);
        } else if kind.is_file() {
            match std::fs::copy(&source, &target) {
                Ok(bytes) => totals = (totals.0 + 1, totals.1 + bytes),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io(&source)(error)),
            }
        }
    }
    Ok(totals)
}

fn is_database_file(name: &str) -> bool {
    DATABASES
        .iter()
        .any(|database| name == *database || name.starts_with(&format!("{database}-")))
}

/// Backs up the server state `config` points at into `dir` (missing or empty).
pub fn backup(config: &ServerConfig, dir: &Path) -> Result<Manifest, BackupError> {
    let data_dir = &config.server.data_dir;
    if !config.database_path().exists() {
        return Err(BackupError::NoDatabase(data_dir.clone()));
    }
    fresh_folder(dir)?;
    Storage::backup_file(&config.database_path(), &dir.join("gofer.db"))?;
    if config.secrets_path().exists() {
        Storage::backup_file(&config.secrets_path(), &dir.join("secrets.db"))?;
    }
    let skip = |name: &str| is_database_file(name) || SKIPPED_DIRS.contains(&name);
    let (mut files, mut bytes) = copy_tree(data_dir, dir, &skip)?;
    let plugins = config.plugins_dir();
    if !plugins.starts_with(data_dir) {
        let (more_files, more_bytes) = copy_tree(&plugins, &dir.join("plugins"), &|_| false)?;
        files += more_files;
        bytes += more_bytes;
    }
    write_private(
        &dir.join(KEY_FILE),
        config.secrets.encryption_key.as_bytes(),
    )?;
    let manifest = Manifest {
        format: 1,
        gofer_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: Storage::schema_version(),
        created: crate::models::now_millis(),
        source: data_dir.clone(),
        files,
        bytes,
        objects_bucket: (config.objects.engine == crate::config::ObjectsEngine::S3).then(|| {
            let s3 = &config.objects.s3;
            format!("s3://{}/{}", s3.bucket, s3.prefix.trim_matches('/'))
        }),
    };
    let text = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
    let path = dir.join(MANIFEST);
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(manifest)
}

/// A file only its owner can read.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents).map_err(io(path))
}

/// Reads and checks a backup's manifest.
pub fn manifest(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NotABackup(dir.to_path_buf()));
        }
        Err(error) => return Err(io(&path)(error)),
    };
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|error| BackupError::BadManifest {
            path: path.clone(),
            detail: error.to_string(),
        })?;
    if manifest.schema_version > Storage::schema_version() {
        return Err(BackupError::TooNew {
            found: manifest.schema_version,
            supported: Storage::schema_version(),
            made_by: manifest.gofer_version,
        });
    }
    if !dir.join("gofer.db").exists() {
        return Err(BackupError::BadManifest {
            path,
            detail: "gofer.db is missing beside it".into(),
        });
    }
    Ok(manifest)
}

/// Restores the backup in `dir` into the data directory `data_dir` (missing or empty). The
/// secrets key is not copied: the restored server needs it as `secrets.encryption_key`.
pub fn restore(dir: &Path, data_dir: &Path) -> Result<Manifest, BackupError> {
    let manifest = manifest(dir)?;
    fresh_folder(data_dir)?;
    copy_tree(dir, data_dir, &|name| name == MANIFEST || name == KEY_FILE)?;
    Ok(manifest)
}
