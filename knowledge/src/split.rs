//! A seeded train/validation/test split of one triples file.
//!
//! After the shuffle-and-cut, held-out triples that name an entity or relation absent from training are
//! moved into training (PyKEEN's `TriplesFactory.split` with its default deterministic cleanup) instead of
//! being dropped: the product of this crate is a vector for every entity, and an entity seen only in the test
//! split would get none.

use std::str::FromStr;

use rand::seq::SliceRandom;

use crate::error::Error;
use crate::graph::Triple;
use crate::rng::{self, Purpose};

/// Fractions of the triples for training, validation and test; they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitRatios {
    pub train: f64,
    pub valid: f64,
    pub test: f64,
}

impl FromStr for SplitRatios {
    type Err = Error;

    /// Parses `train,valid,test`, e.g. `0.8,0.1,0.1`.
    fn from_str(text: &str) -> Result<Self, Error> {
        let invalid = |expected| Error::InvalidSetting { name: "split", value: text.to_owned(), expected };
        let parts: Vec<f64> =
            text.split(',').map(|part| part.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|_| {
                invalid("expected three comma-separated fractions train,valid,test such as 0.8,0.1,0.1")
            })?;
        let [train, valid, test] = parts[..] else {
            return Err(invalid("expected three comma-separated fractions train,valid,test such as 0.8,0.1,0.1"));
        };
        if parts.iter().any(|p| !p.is_finite() || *p < 0.0) || train <= 0.0 {
            return Err(invalid("fractions must be non-negative and the training fraction above 0"));
        }
        if (train + valid + test - 1.0).abs() > 1e-6 {
            return Err(invalid("the three fractions must sum to 1"));
        }
        Ok(Self { train, valid, test })
    }
}

/// The three parts of a split and how many held-out triples were moved into training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    pub train: Vec<Triple>,
    pub valid: Vec<Triple>,
    pub test: Vec<Triple>,
    pub moved_to_train: usize,
}

/// Shuffles `triples` with `seed`, cuts them by `ratios`, then moves held-out triples naming anything
/// absent from training into training.
pub fn split(mut triples: Vec<Triple>, ratios: SplitRatios, seed: u64) -> Parts {
    triples.shuffle(&mut rng::stream(seed, Purpose::Split, 0, 0));
    let total = triples.len();
    let valid_len = (total as f64 * ratios.valid).round() as usize;
    let test_len = ((total as f64 * ratios.test).round() as usize).min(total - valid_len);
    let test = triples.split_off(total - test_len);
    let valid = triples.split_off(triples.len() - valid_len);
    let mut train = triples;

    let ids = |of: fn(&Triple) -> [u32; 2]| {
        let len = train.iter().chain(&valid).chain(&test).flat_map(of).max().map_or(0, |max| max as usize + 1);
        let mut seen = vec![false; len];
        train.iter().flat_map(of).for_each(|id| seen[id as usize] = true);
        seen
    };
    let seen_entities = ids(|t| [t.head, t.tail]);
    let seen_relations = ids(|t| [t.relation, t.relation]);
    let covered = |t: &Triple| {
        seen_entities[t.head as usize] && seen_entities[t.tail as usize] && seen_relations[t.relation as usize]
    };
    let (valid, moved_valid): (Vec<Triple>, Vec<Triple>) = valid.into_iter().partition(covered);
    let (test, moved_test): (Vec<Triple>, Vec<Triple>) = test.into_iter().partition(covered);
    let moved_to_train = moved_valid.len() + moved_test.len();
    train.extend(moved_valid);
    train.extend(moved_test);
    Parts { train, valid, test, moved_to_train }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(len: u32) -> Vec<Triple> {
        (0..len).map(|i| Triple { head: i, relation: i % 2, tail: i + 1 }).collect()
    }

    #[test]
    fn parses_ratios_and_names_bad_ones() {
        let ratios: SplitRatios = "0.8, 0.1,0.1".parse().unwrap();
        assert_eq!(ratios, SplitRatios { train: 0.8, valid: 0.1, test: 0.1 });
        for bad in ["0.8,0.2", "0.8,0.1,x", "0.5,0.1,0.1", "0,0.5,0.5", "1.2,-0.1,-0.1"] {
            let message = bad.parse::<SplitRatios>().unwrap_err().to_string();
            assert!(message.starts_with(&format!("invalid split \"{bad}\"")), "{message}");
        }
    }

    #[test]
    fn split_is_seeded_complete_and_covers_every_name_in_training() {
        let ratios = SplitRatios { train: 0.6, valid: 0.2, test: 0.2 };
        let parts = split(chain(100), ratios, 7);
        assert_eq!(parts, split(chain(100), ratios, 7));
        assert_ne!(parts.train, split(chain(100), ratios, 8).train);

        let mut all: Vec<Triple> = parts.train.iter().chain(&parts.valid).chain(&parts.test).copied().collect();
        all.sort_by_key(|t| t.head);
        assert_eq!(all, chain(100));
        // On a chain, an entity whose two links were both held out appears nowhere in training.
        assert!(parts.moved_to_train > 0);
        assert_eq!(parts.valid.len() + parts.test.len() + parts.moved_to_train, 40);
        let in_train = |e: u32| parts.train.iter().any(|t| t.head == e || t.tail == e);
        assert!(parts.valid.iter().chain(&parts.test).all(|t| in_train(t.head) && in_train(t.tail)));
    }
}
