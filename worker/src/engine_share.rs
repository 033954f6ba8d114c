//! TensorRT engines shared through the object store, so that a new replica on a GPU kind the fleet
//! already runs starts with built engines instead of spending minutes building its own.
//!
//! The store holds `tensorrt-engines/<gpu model>/<part>-<key>/<file>`, the same layout as the local
//! engine cache (`rapid_engine::runtime::tensorrt::engine_folder`), whose folder names already
//! carry everything an engine depends on. A worker pulls its GPU kind's folders before loading its
//! models and pushes what it built after; only files missing on the other side (or of another
//! size) move. A file arrives whole (written beside its name and renamed), so a worker that dies
//! half-way through a pull leaves nothing ONNX Runtime would read as an engine.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use rapid_fleet::storage::{LocalStore, ObjectStore, StorageError};

/// Where shared engines live in the bucket.
const PREFIX: &str = "tensorrt-engines";

/// What a pull or push moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub files: usize,
    pub bytes: u64,
}

/// Copies the engines of GPU kind `gpu` (a `BuildTarget::gpu_slug`) that `cache` lacks from the store.
pub async fn pull(store: &ObjectStore, cache: &Path, gpu: &str) -> Result<Moved, StorageError> {
    let mut moved = Moved::default();
    for object in store.list(&format!("{PREFIX}/{gpu}/")).await? {
        let Some(local) = local_path(cache, &object.key) else {
            tracing::warn!(key = %object.key, "a shared engine's key leaves the cache folder; skipped");
            continue;
        };
        if std::fs::metadata(&local).is_ok_and(|meta| meta.len() == object.size) {
            continue;
        }
        store.get_file(&object.key, &local).await?;
        moved.files += 1;
        moved.bytes += object.size;
    }
    Ok(moved)
}

/// Copies the engines of GPU kind `gpu` in `cache` that the store lacks to the store.
pub async fn push(store: &ObjectStore, cache: &Path, gpu: &str) -> Result<Moved, StorageError> {
    let remote: HashMap<String, u64> =
        store.list(&format!("{PREFIX}/{gpu}/")).await?.into_iter().map(|object| (object.key, object.size)).collect();
    let mut moved = Moved::default();
    // The cache is laid out as the bucket is, so the local store lists it (unfinished writes left out).
    let local = ObjectStore::Local(LocalStore::new(cache)).list(&format!("{gpu}/")).await?;
    for file in local {
        let key = format!("{PREFIX}/{}", file.key);
        if remote.get(&key) == Some(&file.size) {
            continue;
        }
        store.put_file(&key, &cache.join(&file.key)).await?;
        moved.files += 1;
        moved.bytes += file.size;
    }
    Ok(moved)
}

/// The local path of a shared key, or `None` when the key would lead outside `cache`.
fn local_path(cache: &Path, key: &str) -> Option<PathBuf> {
    let relative = Path::new(key.strip_prefix(&format!("{PREFIX}/"))?);
    relative.components().all(|c| matches!(c, Component::Normal(_))).then(|| cache.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_never_leads_outside_the_cache() {
        let cache = Path::new("/var/cache/trt");
        assert_eq!(
            local_path(cache, "tensorrt-engines/nvidia-h100/unet-0123/model.engine"),
            Some(PathBuf::from("/var/cache/trt/nvidia-h100/unet-0123/model.engine"))
        );
        assert_eq!(local_path(cache, "tensorrt-engines/nvidia-h100/../../etc/passwd"), None);
        assert_eq!(local_path(cache, "tensorrt-engines//etc/passwd"), None, "an absolute path is not below the cache");
        assert_eq!(local_path(cache, "images/a.png"), None);
    }
}
