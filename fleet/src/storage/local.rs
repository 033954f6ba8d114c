//! A local folder standing in for the bucket (standalone mode). Writes go to a temporary file that
//! is renamed into place, so a reader never sees half an image.

use std::path::{Path, PathBuf};

use super::{Listed, Object, StorageError};

#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub(super) async fn put(&self, object: Object<'_>) -> Result<(), StorageError> {
        let path = self.path_of(object.key);
        let bytes = object.bytes.to_vec();
        let target = path.clone();
        blocking(&path, move || write_atomically(&target, bytes.as_slice())).await
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        blocking(&self.root, move || {
            let mut listed = Vec::new();
            walk(&root, &root, &prefix, &mut listed)?;
            listed.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(listed)
        })
        .await
    }

    pub(super) async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let target = self.path_of(key);
        let (from, to) = (path.to_path_buf(), target.clone());
        blocking(&target, move || write_atomically(&to, std::fs::File::open(from)?)).await
    }

    pub(super) async fn get_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let (from, to) = (self.path_of(key), path.to_path_buf());
        blocking(path, move || write_atomically(&to, std::fs::File::open(from)?)).await
    }

    pub(super) fn file_url(&self, key: &str) -> String {
        let path = self.path_of(key);
        let absolute = std::path::absolute(&path).unwrap_or(path);
        format!("file://{}", absolute.display())
    }
}

/// File I/O off the async runtime; a failure names `path`.
async fn blocking<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    let error = |source| StorageError::Local { path: path.display().to_string(), source };
    tokio::task::spawn_blocking(work).await.map_err(|e| error(std::io::Error::other(e)))?.map_err(error)
}

/// Writes `content` to a temporary file beside `path` and renames it into place.
fn write_atomically(path: &Path, mut content: impl std::io::Read) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut staged = tempfile::NamedTempFile::new_in(dir)?;
    std::io::copy(&mut content, &mut staged)?;
    staged.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Every file under `dir` whose key (its path below `root`, `/`-separated) starts with `prefix`.
fn walk(root: &Path, dir: &Path, prefix: &str, listed: &mut Vec<Listed>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let key = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        if entry.file_type()?.is_dir() {
            // Only folders that can hold a matching key are entered.
            if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                walk(root, &path, prefix, listed)?;
            }
        } else if key.starts_with(prefix) && !entry.file_name().to_string_lossy().starts_with(".tmp") {
            listed.push(Listed { key, size: entry.metadata()?.len() });
        }
    }
    Ok(())
}
