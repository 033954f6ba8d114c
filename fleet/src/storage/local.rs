//! A local folder standing in for the bucket (standalone mode). Writes go to a temporary file that
//! is renamed into place, so a reader never sees half an image.

use std::path::{Path, PathBuf};

use super::{Object, StorageError};

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
        let error = |source| StorageError::Local { path: path.display().to_string(), source };
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&target, &bytes))
            .await
            .map_err(|e| error(std::io::Error::other(e)))?
            .map_err(error)
    }

    pub(super) fn file_url(&self, key: &str) -> String {
        let path = self.path_of(key);
        let absolute = std::path::absolute(&path).unwrap_or(path);
        format!("file://{}", absolute.display())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut staged = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut staged, bytes)?;
    staged.persist(path).map_err(|e| e.error)?;
    Ok(())
}
