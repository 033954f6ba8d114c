//! Graphs as ONNX Runtime optimized them, kept on disk so that a worker's next start skips the
//! optimization.
//!
//! Building the CPU provider's session for the Table 6 U-Net takes about 6.5 s, nearly all of it
//! graph optimization (NCHWc layout rewrites, weight reordering, fusions); loading the graph
//! ONNX Runtime saved after optimizing takes a fraction of that, with the same output and speed
//! (deploy/bench/session/SESSION.md). That matters when replicas scale up from zero.
//!
//! A saved graph is only valid for the files it came from, the library that optimized it and the
//! CPU it ran on (NCHWc block sizes follow the vector width), so an entry's key covers all three.
//! An entry is written into a temporary folder and renamed into place: a crash or a full disk never
//! leaves a half-written graph that a later start would load. Writing a new entry for a model
//! removes that model's older entries for the same CPU kind, so the folder holds one copy of each
//! model's weights per CPU kind that uses it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

/// The optimized graph's file name inside an entry; its weights go beside it.
const GRAPH: &str = "model.onnx";
/// ONNX Runtime's config value for the weights file, relative to the graph.
pub(crate) const WEIGHTS: &str = "model.onnx.data";
/// Bumped when what the engine asks ONNX Runtime to save changes, to retire every older entry.
const FORMAT: u32 = 1;

/// A folder of optimized graphs (`worker.session_cache_dir`, `generate --session-cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCache {
    dir: PathBuf,
}

impl SessionCache {
    /// Creates the folder if needed; an unusable folder is a configuration error, not a silent
    /// "no cache".
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| {
            EngineError::bad_file(dir, format!("cannot create the session cache folder: {e}; choose a writable one"))
        })?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry for `model` as `library` optimizes it on this CPU.
    pub(crate) fn entry(&self, model: &Path, library: &Path) -> io::Result<Entry> {
        let model = fs::canonicalize(model)?;
        let mut key = Sha256::new();
        key.update(format!("format {FORMAT}\nengine {}\n", env!("CARGO_PKG_VERSION")));
        key.update(format!("model {}\n", model.display()));
        // Every file beside the graph: its external weights live there, and a re-export changes them.
        let folder = model.parent().unwrap_or(Path::new("/"));
        let mut files: Vec<_> = fs::read_dir(folder)?.collect::<io::Result<_>>()?;
        files.sort_by_key(fs::DirEntry::file_name);
        for file in files.iter().filter(|f| f.file_type().is_ok_and(|t| t.is_file())) {
            key.update(format!("file {:?} {}\n", file.file_name(), stamp(&file.path())?));
        }
        key.update(format!("library {} {}\n", fs::canonicalize(library)?.display(), stamp(library)?));
        let cpu = cpu_identity()?;
        key.update(format!("cpu {cpu}\n"));
        // The prefix that eviction goes by: one model on one CPU kind. Workers of several kinds
        // sharing a folder then each keep their own entry instead of replacing each other's.
        let model_id = hex(&Sha256::digest(format!("{}\n{cpu}", model.display())))[..16].to_owned();
        let name = format!("{model_id}-{}", &hex(&key.finalize())[..16]);
        Ok(Entry { dir: self.dir.join(name), cache: self.dir.clone(), model_id })
    }
}

/// One source graph's place in the cache, present or not yet.
pub(crate) struct Entry {
    dir: PathBuf,
    cache: PathBuf,
    /// The prefix every entry of the same source graph on the same CPU kind shares.
    model_id: String,
}

impl Entry {
    /// The saved graph, when a complete entry exists (entries appear only by rename, whole).
    pub fn graph(&self) -> Option<PathBuf> {
        let graph = self.dir.join(GRAPH);
        graph.is_file().then_some(graph)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes an entry that exists but does not load.
    pub fn discard(&self) -> io::Result<()> {
        fs::remove_dir_all(&self.dir)
    }

    /// A temporary folder in the cache for ONNX Runtime to write the graph into.
    pub fn stage(&self) -> io::Result<Staged> {
        let dir = tempfile::Builder::new().prefix(".partial-").tempdir_in(&self.cache)?;
        Ok(Staged { dir })
    }

    /// Moves a written graph into place and removes the older entries of the same model on the
    /// same CPU kind (re-exported weights, another library). Another
    /// process may have committed the same entry first; then its copy stays and ours is dropped.
    pub fn commit(&self, staged: Staged) -> io::Result<()> {
        if !staged.graph().is_file() {
            return Err(io::Error::other("ONNX Runtime wrote no optimized graph"));
        }
        let written = staged.dir.keep();
        if let Err(e) = fs::rename(&written, &self.dir) {
            let _ = fs::remove_dir_all(&written);
            if self.graph().is_none() {
                return Err(e);
            }
        }
        for sibling in fs::read_dir(&self.cache)?.flatten() {
            let name = sibling.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{}-", self.model_id)) && sibling.path() != self.dir {
                fs::remove_dir_all(sibling.path())?;
            }
        }
        Ok(())
    }
}

/// An entry being written; dropped unfinished, it removes itself.
pub(crate) struct Staged {
    dir: tempfile::TempDir,
}

impl Staged {
    pub fn graph(&self) -> PathBuf {
        self.dir.path().join(GRAPH)
    }
}

/// Size and modification time: cheap to read, and changed by any rewrite of the file (hashing
/// 3.4 GB of weights would cost more than the optimization it saves).
pub(crate) fn stamp(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    let modified = meta.modified()?.duration_since(UNIX_EPOCH).map_err(io::Error::other)?;
    Ok(format!("{} {}", meta.len(), modified.as_nanos()))
}

/// What identifies the CPU's instruction set: vendor, family, model and feature flags of the first
/// core. Without them the cache cannot know a graph fits, so it is not used.
pub(crate) fn cpu_identity() -> io::Result<String> {
    let info = fs::read_to_string("/proc/cpuinfo")?;
    let fields = ["vendor_id", "cpu family", "model", "model name", "flags"];
    let first_core = info.split("\n\n").next().unwrap_or_default();
    let identity: Vec<&str> = first_core
        .lines()
        .filter(|line| line.split(':').next().is_some_and(|field| fields.contains(&field.trim())))
        .collect();
    if identity.is_empty() {
        return Err(io::Error::other("/proc/cpuinfo names no CPU model or flags"));
    }
    Ok(identity.join("\n"))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("unet/model.onnx");
        fs::create_dir_all(model.parent().unwrap()).unwrap();
        fs::write(&model, b"graph").unwrap();
        fs::write(dir.path().join("unet/model.onnx_data"), b"weights").unwrap();
        let library = dir.path().join("libonnxruntime.so");
        fs::write(&library, b"library").unwrap();
        (dir, model, library)
    }

    #[test]
    fn the_key_follows_the_weights_and_the_library() {
        let (dir, model, library) = model_dir();
        let cache = SessionCache::open(&dir.path().join("cache")).unwrap();
        let first = cache.entry(&model, &library).unwrap().path().to_path_buf();
        assert_eq!(cache.entry(&model, &library).unwrap().path(), first, "the same inputs give the same entry");
        fs::write(model.with_file_name("model.onnx_data"), b"re-exported weights").unwrap();
        let reexported = cache.entry(&model, &library).unwrap().path().to_path_buf();
        assert_ne!(reexported, first, "new weights beside the graph must miss the old entry");
        fs::write(&library, b"another library version").unwrap();
        assert_ne!(cache.entry(&model, &library).unwrap().path(), reexported, "a new library must miss");
    }

    #[test]
    fn an_entry_appears_whole_and_replaces_the_models_older_one() {
        let (dir, model, library) = model_dir();
        let cache = SessionCache::open(&dir.path().join("cache")).unwrap();
        let old = cache.entry(&model, &library).unwrap();
        let staged = old.stage().unwrap();
        assert!(old.graph().is_none(), "a staged entry is invisible until committed");
        assert!(old.commit(staged).is_err(), "a folder without a graph is not an entry");
        let staged = old.stage().unwrap();
        fs::write(staged.graph(), b"optimized").unwrap();
        old.commit(staged).unwrap();
        assert!(old.graph().is_some());

        fs::write(model.with_file_name("model.onnx_data"), b"re-exported weights").unwrap();
        let new = cache.entry(&model, &library).unwrap();
        let staged = new.stage().unwrap();
        fs::write(staged.graph(), b"optimized again").unwrap();
        new.commit(staged).unwrap();
        assert!(new.graph().is_some() && old.graph().is_none(), "the older entry of the same model is removed");
        let left: Vec<_> = fs::read_dir(cache.dir()).unwrap().collect();
        assert_eq!(left.len(), 1, "no staging folder or old entry is left behind");
    }

    #[test]
    fn an_unwritable_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        fs::write(&file, b"").unwrap();
        let error = SessionCache::open(&file.join("cache")).unwrap_err().to_string();
        assert!(error.contains("not-a-folder/cache") && error.contains("writable"), "{error}");
    }
}
