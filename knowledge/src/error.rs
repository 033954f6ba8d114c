//! The crate's error type: every variant names the file, line or value at fault and says what to do.
//!
//! All errors are permanent (bad input or a full disk): retrying the same command gives the same error, so
//! there is no retryable/permanent split here, unlike the worker's.

use std::path::PathBuf;

/// Everything that can go wrong loading a graph, checking settings, training or writing results.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}; check that the file exists and is readable", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error(
        "{}:{line}: {problem}; each line must be head<TAB>relation<TAB>tail (blank lines and lines starting \
         with # are skipped)",
        path.display()
    )]
    Malformed { path: PathBuf, line: usize, problem: LineProblem },

    #[error("{} holds no triples; give a file with at least one head<TAB>relation<TAB>tail line", path.display())]
    EmptyGraph { path: PathBuf },

    #[error("the training split holds no triples; give training triples")]
    EmptyTraining,

    #[error(
        "the graph has {entities} entit{}; TransE needs at least 2 to draw negative triples, so add triples \
         with more entities",
        if *entities == 1 { "y" } else { "ies" }
    )]
    TooFewEntities { entities: usize },

    #[error("invalid {name} {value:?}: {expected}")]
    InvalidSetting { name: &'static str, value: String, expected: &'static str },

    #[error("{} already exists; remove it, choose another --out, or pass --overwrite", path.display())]
    OutputExists { path: PathBuf },

    #[error("cannot write {}: {source}; check free disk space and permissions", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("cannot write {}: {source}; check free disk space and permissions", path.display())]
    WriteNpy { path: PathBuf, source: ndarray_npy::WriteNpyError },
}

/// What is wrong with one line of a triples file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("expected 3 tab-separated columns (head, relation, tail), found {0}")]
    ColumnCount(usize),
    #[error("the {0} field is empty")]
    EmptyField(&'static str),
    #[error("the line is not valid UTF-8; save the file as UTF-8")]
    NotUtf8,
}
