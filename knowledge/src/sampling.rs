//! Negative sampling: a true triple with its head or tail replaced by a random entity.
//!
//! The replacement is never the entity it replaces (as in PyKEEN's samplers): such a "negative" equals its
//! positive, so its loss term is a constant that teaches nothing. Negatives that happen to be other true
//! triples are kept, as in the paper and PyKEEN's default; filtering them costs a lookup per sample for little
//! gain on sparse graphs.

use std::collections::HashSet;
use std::str::FromStr;

use rand::Rng;

use crate::error::Error;
use crate::graph::Triple;

/// Which side of a triple to corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Head or tail with probability 1/2 (Bordes et al. 2013).
    Uniform,
    /// Head with probability tph / (tph + hpt) per relation (Wang et al. 2014, "bern"): one-to-many relations
    /// get their head replaced more often, which makes false negatives rarer.
    Bernoulli,
}

impl Corruption {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Bernoulli => "bernoulli",
        }
    }
}

impl FromStr for Corruption {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "uniform" => Ok(Self::Uniform),
            "bernoulli" => Ok(Self::Bernoulli),
            _ => Err(Error::InvalidSetting {
                name: "corruption",
                value: text.to_owned(),
                expected: "expected uniform or bernoulli",
            }),
        }
    }
}

/// Draws negatives for training triples.
#[derive(Debug, Clone)]
pub struct Sampler {
    num_entities: u32,
    /// Per relation: the probability of replacing the head rather than the tail.
    head_probability: Vec<f64>,
}

impl Sampler {
    /// A sampler over entities `0..num_entities`; Bernoulli statistics come from `train`.
    pub fn new(corruption: Corruption, train: &[Triple], num_entities: usize, num_relations: usize) -> Self {
        assert!(num_entities >= 2, "a replacement entity must differ from the original");
        let num_entities = u32::try_from(num_entities).expect("entity ids are u32");
        let head_probability = match corruption {
            Corruption::Uniform => vec![0.5; num_relations],
            Corruption::Bernoulli => bernoulli_head_probabilities(train, num_relations),
        };
        Self { num_entities, head_probability }
    }

    pub fn head_probability(&self, relation: u32) -> f64 {
        self.head_probability[relation as usize]
    }

    /// `positive` with its head or tail replaced by a different, uniformly drawn entity.
    pub fn corrupt(&self, positive: Triple, rng: &mut impl Rng) -> Triple {
        let corrupt_head = rng.random_bool(self.head_probability(positive.relation));
        let original = if corrupt_head { positive.head } else { positive.tail };
        // Draw from the other num_entities - 1 ids: skip over the original.
        let mut replacement = rng.random_range(0..self.num_entities - 1);
        if replacement >= original {
            replacement += 1;
        }
        if corrupt_head {
            Triple { head: replacement, ..positive }
        } else {
            Triple { tail: replacement, ..positive }
        }
    }
}

/// tph / (tph + hpt) per relation, where tph = triples / distinct heads and hpt = triples / distinct tails
/// (Wang et al. 2014; PyKEEN's `BernoulliNegativeSampler` computes the same). A relation without training
/// triples gets 1/2.
fn bernoulli_head_probabilities(train: &[Triple], num_relations: usize) -> Vec<f64> {
    let mut triples = vec![0usize; num_relations];
    let mut heads = vec![0usize; num_relations];
    let mut tails = vec![0usize; num_relations];
    let mut seen_heads = HashSet::new();
    let mut seen_tails = HashSet::new();
    for t in train {
        let r = t.relation as usize;
        triples[r] += 1;
        heads[r] += usize::from(seen_heads.insert((t.relation, t.head)));
        tails[r] += usize::from(seen_tails.insert((t.relation, t.tail)));
    }
    (0..num_relations)
        .map(|r| {
            if triples[r] == 0 {
                return 0.5;
            }
            let tails_per_head = triples[r] as f64 / heads[r] as f64;
            let heads_per_tail = triples[r] as f64 / tails[r] as f64;
            tails_per_head / (tails_per_head + heads_per_tail)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{self, Purpose};

    fn t(head: u32, relation: u32, tail: u32) -> Triple {
        Triple { head, relation, tail }
    }

    #[test]
    fn bernoulli_probabilities_on_a_hand_made_graph() {
        let train = [
            // Relation 0, one-to-many: head 0 has tails 1, 2, 3; head 4 has tail 5. tph = 4/2, hpt = 4/4.
            t(0, 0, 1),
            t(0, 0, 2),
            t(0, 0, 3),
            t(4, 0, 5),
            // Relation 1, many-to-one: heads 1, 2, 3 share tail 0. tph = 1, hpt = 3.
            t(1, 1, 0),
            t(2, 1, 0),
            t(3, 1, 0),
            // Relation 2, one-to-one: tph = hpt = 1.
            t(0, 2, 5),
        ];
        let sampler = Sampler::new(Corruption::Bernoulli, &train, 6, 4);
        assert!((sampler.head_probability(0) - 2.0 / 3.0).abs() < 1e-12);
        assert!((sampler.head_probability(1) - 0.25).abs() < 1e-12);
        assert!((sampler.head_probability(2) - 0.5).abs() < 1e-12);
        // Relation 3 has no training triples.
        assert_eq!(sampler.head_probability(3), 0.5);
        assert_eq!(Sampler::new(Corruption::Uniform, &train, 6, 4).head_probability(0), 0.5);
    }

    #[test]
    fn corruption_changes_exactly_one_side_to_a_different_entity_at_the_configured_rate() {
        let train = [t(0, 0, 1), t(0, 0, 2), t(0, 0, 3), t(4, 0, 5)];
        let sampler = Sampler::new(Corruption::Bernoulli, &train, 6, 1);
        let mut rng = rng::stream(1, Purpose::Negatives, 0, 0);
        let positive = t(0, 0, 1);
        let draws = 30_000;
        let mut heads = 0;
        let mut replacements = [0usize; 6];
        for _ in 0..draws {
            let negative = sampler.corrupt(positive, &mut rng);
            assert_eq!(negative.relation, 0);
            assert!((negative.head == 0) ^ (negative.tail == 1), "{negative:?}");
            if negative.head != 0 {
                heads += 1;
                replacements[negative.head as usize] += 1;
            }
        }
        let rate = heads as f64 / draws as f64;
        assert!((rate - 2.0 / 3.0).abs() < 0.02, "head corruption rate {rate}");
        // Heads 1..=5 are equally likely; head 0 (the original) never appears.
        assert_eq!(replacements[0], 0);
        assert!(replacements[1..].iter().all(|&n| (n as f64 - heads as f64 / 5.0).abs() < 0.1 * heads as f64 / 5.0));
    }

    #[test]
    fn unknown_corruption_lists_the_valid_ones() {
        let message = "bern".parse::<Corruption>().unwrap_err().to_string();
        assert_eq!(message, "invalid corruption \"bern\": expected uniform or bernoulli");
    }
}
