//! The training loop: mini-batches of true triples with corrupted negatives, margin ranking loss
//! max(0, margin + d(pos) - d(neg)) averaged over the batch's pairs (PyKEEN's reduction), lazy Adam, and
//! entity vectors put back on the unit sphere after every step.
//!
//! Not Hogwild: a batch is scored in parallel against fixed parameters, its per-triple gradients are
//! stored, then summed row by row in batch order and applied, also in parallel but over disjoint rows.
//! Work units are fixed chunks of `CHUNK` positives with their own random streams, so neither the thread
//! count nor scheduling can change a single bit of the result.

use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::dataset::Dataset;
use crate::error::Error;
use crate::eval::{self, Filter, RankMetrics};
use crate::graph::Triple;
use crate::model::{self, Norm, Table, TransE};
use crate::optim::{Adam, Moments, Step};
use crate::rng::{self, Purpose};
use crate::sampling::{Corruption, Sampler};

/// Positives per work unit. Fixed, not derived from the thread count, so results do not depend on it; 64
/// positives amortise a random stream's setup and still give 4 units to a batch of 256.
const CHUNK: usize = 64;

/// Hyper-parameters of one training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Embedding dimension k.
    pub dim: usize,
    pub epochs: usize,
    /// Positive triples per mini-batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Adam's step size.
    pub learning_rate: f32,
    /// γ in max(0, γ + d(pos) - d(neg)).
    pub margin: f32,
    /// Negatives drawn per positive.
    pub negatives: usize,
    pub norm: Norm,
    pub corruption: Corruption,
    pub seed: u64,
    /// Evaluate on the validation split after every this many epochs.
    pub eval_every: Option<usize>,
}

impl TrainConfig {
    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |name, value: String, expected| Err(Error::InvalidSetting { name, value, expected });
        let positive = "expected a whole number of at least 1";
        if self.dim == 0 {
            return invalid("dim", self.dim.to_string(), positive);
        }
        if self.epochs == 0 {
            return invalid("epochs", self.epochs.to_string(), positive);
        }
        if self.batch_size == 0 {
            return invalid("batch-size", self.batch_size.to_string(), positive);
        }
        if self.negatives == 0 {
            return invalid("negatives", self.negatives.to_string(), positive);
        }
        if self.eval_every == Some(0) {
            return invalid("eval-every", "0".into(), positive);
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return invalid("lr", self.learning_rate.to_string(), "expected a positive number such as 0.01");
        }
        if !(self.margin.is_finite() && self.margin > 0.0) {
            return invalid("margin", self.margin.to_string(), "expected a positive number such as 1.0");
        }
        Ok(())
    }
}

/// What the caller hears after each epoch.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// Mean margin loss over the epoch's positive-negative pairs.
    pub loss: f64,
    /// Filtered validation metrics, on epochs that are multiples of `eval_every`.
    pub validation: Option<RankMetrics>,
}

/// One scored triple's share of a row's gradient: `sign` times the stored residual gradient of `slot`.
#[derive(Debug, Clone, Copy)]
struct Contribution {
    row: u32,
    slot: u32,
    sign: f32,
}

/// Trains TransE on `dataset.train` in the current rayon pool, calling `on_epoch` after every epoch.
pub fn train(dataset: &Dataset, config: &TrainConfig, mut on_epoch: impl FnMut(&EpochReport)) -> Result<TransE, Error> {
    config.validate()?;
    dataset.check()?;
    let validation_filter = match config.eval_every {
        Some(every) if dataset.valid.is_empty() => {
            return Err(Error::InvalidSetting {
                name: "eval-every",
                value: every.to_string(),
                expected: "validation needs a validation split: pass --valid, or a --split with a validation \
                           fraction above 0",
            });
        }
        Some(_) => Some(Filter::new(dataset.known_triples())),
        None => None,
    };
    let train = &dataset.train;
    let dim = config.dim;
    let mut model = TransE::new(dataset.entities.len(), dataset.relations.len(), dim, config.norm, config.seed);
    let sampler = Sampler::new(config.corruption, train, dataset.entities.len(), dataset.relations.len());
    let mut adam = Adam::new(config.learning_rate);
    let mut entity_moments = Moments::zeros(model.entities.values.len());
    let mut relation_moments = Moments::zeros(model.relations.values.len());

    let per_positive = 1 + config.negatives;
    let slots = config.batch_size.min(train.len()) * per_positive;
    let mut scored = vec![Triple { head: 0, relation: 0, tail: 0 }; slots];
    let mut gradients = vec![0.0f32; slots * dim];
    let mut entity_contributions = Vec::with_capacity(2 * slots);
    let mut relation_contributions = Vec::with_capacity(slots);
    let mut order: Vec<u32> = (0..u32::try_from(train.len()).expect("at most 2^32 training triples")).collect();

    for epoch in 1..=config.epochs {
        order.shuffle(&mut rng::stream(config.seed, Purpose::Shuffle, epoch as u64, 0));
        let mut loss = 0.0;
        for (batch_index, batch) in order.chunks(config.batch_size).enumerate() {
            let slots = batch.len() * per_positive;
            let (scored, gradients) = (&mut scored[..slots], &mut gradients[..slots * dim]);
            let scorer = Scorer { model: &model, sampler: &sampler, train, config, epoch, batch_index };
            loss += scorer.score_batch(batch, scored, gradients);

            entity_contributions.clear();
            relation_contributions.clear();
            for (slot, t) in (0u32..).zip(scored.iter()) {
                // ∂(h + r - t) is +1 for h and r, -1 for t.
                entity_contributions.push(Contribution { row: t.head, slot, sign: 1.0 });
                entity_contributions.push(Contribution { row: t.tail, slot, sign: -1.0 });
                relation_contributions.push(Contribution { row: t.relation, slot, sign: 1.0 });
            }
            let step = adam.next_step();
            apply(&mut model.entities, &mut entity_moments, &mut entity_contributions, gradients, step, true);
            apply(&mut model.relations, &mut relation_moments, &mut relation_contributions, gradients, step, false);
        }
        let validation = match (config.eval_every, &validation_filter) {
            (Some(every), Some(filter)) if epoch.is_multiple_of(every) => {
                eval::evaluate(&model, &dataset.valid, filter)
            }
            _ => None,
        };
        let pairs = (train.len() * config.negatives) as f64;
        on_epoch(&EpochReport { epoch, loss: loss / pairs, validation });
    }
    Ok(model)
}

/// What scoring a batch needs to know; the model is read-only while a batch is scored.
struct Scorer<'a> {
    model: &'a TransE,
    sampler: &'a Sampler,
    train: &'a [Triple],
    config: &'a TrainConfig,
    epoch: usize,
    batch_index: usize,
}

impl Scorer<'_> {
    /// Draws negatives for `batch` (indices into the training triples) and writes, per scored triple, the
    /// triple to `scored` and its loss gradient with respect to h + r - t to `gradients`. Slot layout per
    /// positive: the positive, then its negatives. Returns the batch's summed loss.
    fn score_batch(&self, batch: &[u32], scored: &mut [Triple], gradients: &mut [f32]) -> f64 {
        let (model, config) = (self.model, self.config);
        let dim = model.dim();
        let per_positive = 1 + config.negatives;
        // The mean over the batch's pairs, as PyKEEN's margin ranking loss reduces.
        let scale = 1.0 / (batch.len() * config.negatives) as f32;
        let chunk_losses: Vec<f64> = batch
            .par_chunks(CHUNK)
            .zip(scored.par_chunks_mut(CHUNK * per_positive))
            .zip(gradients.par_chunks_mut(CHUNK * per_positive * dim))
            .enumerate()
            .map(|(chunk, ((positives, scored), gradients))| {
                let stream = ((self.batch_index as u64) << 32) | chunk as u64;
                let mut rng = rng::stream(config.seed, Purpose::Negatives, self.epoch as u64, stream);
                let mut loss = 0.0f64;
                let per_slot = scored.chunks_mut(per_positive).zip(gradients.chunks_mut(per_positive * dim));
                for (&index, (scored, gradients)) in positives.iter().zip(per_slot) {
                    let positive = self.train[index as usize];
                    let positive_distance = model.distance(positive);
                    scored[0] = positive;
                    let (positive_gradient, negative_gradients) = gradients.split_at_mut(dim);
                    let mut violations = 0u32;
                    for (slot, gradient) in scored[1..].iter_mut().zip(negative_gradients.chunks_mut(dim)) {
                        let negative = self.sampler.corrupt(positive, &mut rng);
                        *slot = negative;
                        let violation = config.margin + positive_distance - model.distance(negative);
                        if violation > 0.0 {
                            loss += f64::from(violation);
                            violations += 1;
                            model.distance_gradient(negative, -scale, gradient);
                        } else {
                            gradient.fill(0.0);
                        }
                    }
                    model.distance_gradient(positive, scale * violations as f32, positive_gradient);
                }
                loss
            })
            .collect();
        // Summed in chunk order: a parallel float sum would depend on the split.
        chunk_losses.iter().sum()
    }
}

/// Sums each touched row's contributions in batch order and applies one Adam step to the row (and puts it
/// back on the unit sphere if `renormalize`). Rows touched by the batch with a zero gradient still take the
/// step, so their momentum carries on as in dense Adam.
fn apply(
    table: &mut Table,
    moments: &mut Moments,
    contributions: &mut [Contribution],
    gradients: &[f32],
    step: Step,
    renormalize: bool,
) {
    // Stable: within a row, contributions stay in batch order, which fixes the summation order.
    contributions.par_sort_by_key(|c| c.row);
    let dim = table.dim;
    // Disjoint blocks of rows let threads update in parallel without locks; the block size affects only
    // speed, as each row's update is independent of the others.
    let block_rows = table.rows().div_ceil(4 * rayon::current_num_threads()).max(1);
    let contributions = &*contributions;
    table
        .values
        .par_chunks_mut(block_rows * dim)
        .zip(moments.first.par_chunks_mut(block_rows * dim))
        .zip(moments.second.par_chunks_mut(block_rows * dim))
        .enumerate()
        .for_each(|(block, ((values, first), second))| {
            let first_row = block * block_rows;
            let start = contributions.partition_point(|c| (c.row as usize) < first_row);
            let end = contributions.partition_point(|c| (c.row as usize) < first_row + block_rows);
            let mut gradient = vec![0.0f32; dim];
            for group in contributions[start..end].chunk_by(|a, b| a.row == b.row) {
                gradient.fill(0.0);
                for c in group {
                    let source = &gradients[c.slot as usize * dim..][..dim];
                    gradient.iter_mut().zip(source).for_each(|(g, s)| *g += c.sign * s);
                }
                let offset = (group[0].row as usize - first_row) * dim;
                let range = offset..offset + dim;
                step.apply(
                    &mut values[range.clone()],
                    &mut first[range.clone()],
                    &mut second[range.clone()],
                    &gradient,
                );
                if renormalize {
                    model::normalize(&mut values[range]);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Unseen;
    use crate::graph::Vocab;

    /// 16 groups of three entities p_i, a_i, b_i with (p_i, r, a_i), (p_i, s, b_i), (a_i, q, b_i): 48 entities,
    /// 3 relations. A third of the q links are held out; TransE can recover them by composition (a_i = p_i + r,
    /// b_i = p_i + s, so q ≈ s - r). A chain or grid would be the obvious toy graph, but evenly spaced points on
    /// a line cannot all lie on the unit sphere where TransE keeps its entities, so those generalise poorly.
    fn groups() -> Dataset {
        let (mut entities, mut relations) = (Vocab::default(), Vocab::default());
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for i in 0..16 {
            let mut triple = |head: &str, relation: &str, tail: &str| Triple {
                head: entities.intern(&format!("{head}{i}")),
                relation: relations.intern(relation),
                tail: entities.intern(&format!("{tail}{i}")),
            };
            train.push(triple("p", "r", "a"));
            train.push(triple("p", "s", "b"));
            let q = triple("a", "q", "b");
            if i % 3 == 0 {
                test.push(q)
            } else {
                train.push(q)
            }
        }
        Dataset { entities, relations, train, valid: Vec::new(), test, unseen: Unseen::default() }
    }

    fn config(seed: u64) -> TrainConfig {
        TrainConfig {
            dim: 8,
            epochs: 200,
            batch_size: 32,
            learning_rate: 0.02,
            margin: 1.0,
            negatives: 4,
            norm: Norm::L1,
            corruption: Corruption::Bernoulli,
            seed,
            eval_every: None,
        }
    }

    fn bits(model: &TransE) -> Vec<u32> {
        model.entities.values.iter().chain(&model.relations.values).map(|x| x.to_bits()).collect()
    }

    fn train_in(threads: usize, dataset: &Dataset, config: &TrainConfig) -> TransE {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| train(dataset, config, |_| {})).unwrap()
    }

    #[test]
    fn trained_transe_ranks_held_out_links_far_above_random() {
        let dataset = groups();
        assert_eq!((dataset.entities.len(), dataset.train.len(), dataset.test.len()), (48, 42, 6));
        let filter = Filter::new(dataset.known_triples());
        // Random ranking of 48 candidates gives an MRR of about 0.09. Measured over seeds 0-7 with these
        // settings: L2 1.00 on every seed, L1 0.66-0.84.
        for (norm, threshold) in [(Norm::L2, 0.8), (Norm::L1, 0.5)] {
            let model = train_in(2, &dataset, &TrainConfig { norm, ..config(1) });
            let metrics = eval::evaluate(&model, &dataset.test, &filter).unwrap();
            assert!(metrics.mrr > threshold, "{norm:?}: {metrics:?}");
        }
    }

    #[test]
    fn same_seed_gives_identical_vectors_for_any_thread_count_and_other_seeds_differ() {
        let dataset = groups();
        let config = TrainConfig { epochs: 20, batch_size: 200, ..config(3) };
        let reference = bits(&train_in(2, &dataset, &config));
        assert_eq!(reference, bits(&train_in(2, &dataset, &config)));
        assert_eq!(reference, bits(&train_in(1, &dataset, &config)));
        assert_eq!(reference, bits(&train_in(3, &dataset, &config)));
        assert_ne!(reference, bits(&train_in(2, &dataset, &TrainConfig { seed: 4, ..config })));
    }

    #[test]
    fn entities_stay_on_the_unit_sphere_and_validation_is_reported_every_k_epochs() {
        let mut dataset = groups();
        dataset.valid = dataset.test.clone();
        let mut reports = Vec::new();
        let config = TrainConfig { epochs: 6, eval_every: Some(3), ..config(5) };
        let model = train(&dataset, &config, |report| reports.push(*report)).unwrap();
        for row in model.entities.values.chunks(8) {
            assert!((row.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let validated: Vec<usize> = reports.iter().filter(|r| r.validation.is_some()).map(|r| r.epoch).collect();
        assert_eq!(validated, [3, 6]);
        assert!(reports.last().unwrap().loss < reports[0].loss, "{reports:?}");
    }

    #[test]
    fn bad_settings_are_named() {
        let dataset = groups();
        let error = train(&dataset, &TrainConfig { eval_every: Some(2), ..config(0) }, |_| {}).unwrap_err();
        assert!(error.to_string().contains("pass --valid"), "{error}");
        let error = TrainConfig { learning_rate: -1.0, ..config(0) }.validate().unwrap_err();
        assert_eq!(error.to_string(), "invalid lr \"-1\": expected a positive number such as 0.01");
        let mut empty = groups();
        empty.train.clear();
        assert!(matches!(train(&empty, &config(0), |_| {}), Err(Error::EmptyTraining)));
        let error = TrainConfig { batch_size: 0, ..config(0) }.validate().unwrap_err();
        assert!(error.to_string().starts_with("invalid batch-size \"0\""), "{error}");
    }
}
