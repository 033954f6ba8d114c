//! Writes trained vectors, their names and the run's metrics to a new directory, atomically.
//!
//! Everything goes into a hidden temporary directory beside the destination, renamed into place only when
//! complete: a failure (full disk, permissions, a crash) never leaves a half-written result under the
//! destination's name, so a consumer that finds `entity_vectors.npy` can trust `entities.txt` beside it.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::Error;
use crate::eval::RankMetrics;
use crate::model::{Table, TransE};
use crate::train::TrainConfig;

/// The contents of `metrics.json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Filtered link prediction on the test split; `null` without a test split.
    pub test: Option<Metrics>,
    /// Filtered link prediction on the validation split, every `eval_every` epochs.
    pub validation: Vec<EpochMetrics>,
    /// Mean margin loss of the last epoch.
    pub final_loss: f64,
    /// Wall-clock seconds of the training loop, including validation with `--eval-every` (excluding loading and
    /// the test evaluation).
    pub training_seconds: f64,
    pub evaluation_seconds: f64,
    pub settings: Settings,
    pub data: DataSummary,
}

#[derive(Debug, Serialize)]
pub struct Metrics {
    pub mrr: f64,
    pub hits_at_1: f64,
    pub hits_at_3: f64,
    pub hits_at_10: f64,
    /// Ranks averaged: head and tail prediction for each evaluated triple.
    pub ranks: usize,
    /// How ties are ranked.
    pub rank_type: &'static str,
}

impl From<RankMetrics> for Metrics {
    fn from(m: RankMetrics) -> Self {
        let rank_type = "realistic (mean of optimistic and pessimistic), filtered by train+valid+test";
        Self {
            mrr: m.mrr,
            hits_at_1: m.hits_at_1,
            hits_at_3: m.hits_at_3,
            hits_at_10: m.hits_at_10,
            ranks: m.ranks,
            rank_type,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    #[serde(flatten)]
    pub metrics: Metrics,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub dim: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub optimizer: &'static str,
    pub loss: &'static str,
    pub margin: f32,
    pub negatives: usize,
    pub norm: &'static str,
    pub corruption: &'static str,
    pub seed: u64,
    pub threads: usize,
}

impl Settings {
    pub fn new(config: &TrainConfig, threads: usize) -> Self {
        Self {
            dim: config.dim,
            epochs: config.epochs,
            batch_size: config.batch_size,
            learning_rate: config.learning_rate,
            optimizer: "adam (lazy row-sparse, betas 0.9/0.999, eps 1e-8)",
            loss: "margin ranking, mean over positive-negative pairs",
            margin: config.margin,
            negatives: config.negatives,
            norm: config.norm.as_str(),
            corruption: config.corruption.as_str(),
            seed: config.seed,
            threads,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DataSummary {
    pub entities: usize,
    pub relations: usize,
    pub train_triples: usize,
    pub valid_triples: usize,
    pub test_triples: usize,
    pub dropped_valid: usize,
    pub dropped_test: usize,
    pub moved_to_train: usize,
}

impl DataSummary {
    pub fn new(dataset: &Dataset) -> Self {
        Self {
            entities: dataset.entities.len(),
            relations: dataset.relations.len(),
            train_triples: dataset.train.len(),
            valid_triples: dataset.valid.len(),
            test_triples: dataset.test.len(),
            dropped_valid: dataset.unseen.dropped_valid,
            dropped_test: dataset.unseen.dropped_test,
            moved_to_train: dataset.unseen.moved_to_train,
        }
    }
}

/// Fails early, before hours of training, if `out` cannot be written.
pub fn check_destination(out: &Path, overwrite: bool) -> Result<(), Error> {
    if !overwrite && fs::symlink_metadata(out).is_ok() {
        return Err(Error::OutputExists { path: out.to_owned() });
    }
    Ok(())
}

/// Writes `entities.txt`, `entity_vectors.npy`, `relations.txt`, `relation_vectors.npy` and `metrics.json`
/// into the directory `out`, replacing it if `overwrite`.
pub fn write(out: &Path, overwrite: bool, dataset: &Dataset, model: &TransE, report: &Report) -> Result<(), Error> {
    check_destination(out, overwrite)?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(write_error(parent))?;
    let staging = tempfile::Builder::new().prefix(".rapid-transe-").tempdir_in(parent).map_err(write_error(parent))?;
    let dir = staging.path();
    write_names(&dir.join("entities.txt"), dataset.entities.names())?;
    write_vectors(&dir.join("entity_vectors.npy"), &model.entities)?;
    write_names(&dir.join("relations.txt"), dataset.relations.names())?;
    write_vectors(&dir.join("relation_vectors.npy"), &model.relations)?;
    let json = serde_json::to_string_pretty(report).expect("the report holds only numbers and strings");
    let metrics = dir.join("metrics.json");
    fs::write(&metrics, json + "\n").map_err(write_error(&metrics))?;

    if fs::symlink_metadata(out).is_ok() {
        // Move the old result aside (into a temporary directory deleted on drop), then swap the new one in;
        // if the swap fails, put the old one back.
        let aside =
            tempfile::Builder::new().prefix(".rapid-transe-old-").tempdir_in(parent).map_err(write_error(parent))?;
        let previous = aside.path().join("previous");
        fs::rename(out, &previous).map_err(write_error(out))?;
        if let Err(error) = fs::rename(dir, out) {
            let _restored = fs::rename(&previous, out);
            return Err(Error::Write { path: out.to_owned(), source: error });
        }
    } else {
        fs::rename(dir, out).map_err(write_error(out))?;
    }
    // The staging directory now lives at `out`; stop its guard from deleting anything.
    let _renamed = staging.keep();
    Ok(())
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Write { path: path.to_owned(), source }
}

fn write_names(path: &Path, names: &[String]) -> Result<(), Error> {
    let file = fs::File::create(path).map_err(write_error(path))?;
    let mut writer = BufWriter::new(file);
    for name in names {
        writeln!(writer, "{name}").map_err(write_error(path))?;
    }
    writer.into_inner().map_err(|e| e.into_error()).and_then(|file| file.sync_all()).map_err(write_error(path))
}

fn write_vectors(path: &Path, table: &Table) -> Result<(), Error> {
    ndarray_npy::write_npy(path, &table.view()).map_err(|source| Error::WriteNpy { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Unseen;
    use crate::graph::{Triple, Vocab};
    use crate::model::Norm;
    use crate::sampling::Corruption;
    use ndarray::Array2;

    fn dataset() -> Dataset {
        let (mut entities, mut relations) = (Vocab::default(), Vocab::default());
        let (a, b, r) = (entities.intern("a"), entities.intern("b"), relations.intern("r"));
        let train = vec![Triple { head: a, relation: r, tail: b }];
        Dataset { entities, relations, train, valid: vec![], test: vec![], unseen: Unseen::default() }
    }

    fn report(dataset: &Dataset) -> Report {
        let config = TrainConfig {
            dim: 3,
            epochs: 1,
            batch_size: 1,
            learning_rate: 0.1,
            margin: 1.0,
            negatives: 1,
            norm: Norm::L2,
            corruption: Corruption::Uniform,
            seed: 0,
            eval_every: None,
        };
        Report {
            test: None,
            validation: vec![],
            final_loss: 0.5,
            training_seconds: 0.0,
            evaluation_seconds: 0.0,
            settings: Settings::new(&config, 1),
            data: DataSummary::new(dataset),
        }
    }

    #[test]
    fn writes_every_file_and_refuses_to_clobber_without_overwrite() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("nested/vectors");
        let dataset = dataset();
        let model = TransE::new(2, 1, 3, Norm::L2, 0);
        write(&out, false, &dataset, &model, &report(&dataset)).unwrap();
        assert_eq!(fs::read_to_string(out.join("entities.txt")).unwrap(), "a\nb\n");
        assert_eq!(fs::read_to_string(out.join("relations.txt")).unwrap(), "r\n");
        let vectors: Array2<f32> = ndarray_npy::read_npy(out.join("entity_vectors.npy")).unwrap();
        assert_eq!(vectors, model.entities.view());
        let metrics: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(metrics["settings"]["norm"], "l2");
        assert_eq!(metrics["test"], serde_json::Value::Null);

        let error = write(&out, false, &dataset, &model, &report(&dataset)).unwrap_err();
        assert!(error.to_string().contains("pass --overwrite"), "{error}");
        let other = TransE::new(2, 1, 3, Norm::L2, 1);
        write(&out, true, &dataset, &other, &report(&dataset)).unwrap();
        let vectors: Array2<f32> = ndarray_npy::read_npy(out.join("entity_vectors.npy")).unwrap();
        assert_eq!(vectors, other.entities.view());
        // Nothing but the result is left beside it.
        let leftovers: Vec<_> = fs::read_dir(out.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["vectors"]);
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        // The parent "directory" is a file, so the staging directory cannot be created.
        let blocker = root.path().join("file");
        fs::write(&blocker, "").unwrap();
        let dataset = dataset();
        let error = write(&blocker.join("out"), false, &dataset, &TransE::new(2, 1, 3, Norm::L2, 0), &report(&dataset));
        assert!(matches!(error, Err(Error::Write { .. })), "{error:?}");
        let entries: Vec<_> = fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, ["file"]);
    }
}
