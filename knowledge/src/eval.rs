//! Filtered rank-based link prediction: for each held-out triple, rank the true head among all entities
//! and the true tail among all entities, ignoring candidates that form other known true triples.
//!
//! Ties get the "realistic" rank, the mean of the optimistic and pessimistic ranks (PyKEEN's default),
//! i.e. the expected rank under random tie-breaking. Taking the optimistic rank instead would let a
//! collapsed model, which scores everything equal, report a perfect MRR.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::graph::Triple;
use crate::model::{Norm, TransE};

/// Mean reciprocal rank and Hits@k over head and tail predictions together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankMetrics {
    pub mrr: f64,
    pub hits_at_1: f64,
    pub hits_at_3: f64,
    pub hits_at_10: f64,
    /// The number of ranks averaged: two per evaluated triple.
    pub ranks: usize,
}

/// The known true triples, indexed by the two query shapes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    tails: HashMap<(u32, u32), Vec<u32>>,
    heads: HashMap<(u32, u32), Vec<u32>>,
}

impl Filter {
    pub fn new<'a>(known: impl IntoIterator<Item = &'a Triple>) -> Self {
        let mut filter = Self::default();
        for t in known {
            filter.tails.entry((t.head, t.relation)).or_default().push(t.tail);
            filter.heads.entry((t.relation, t.tail)).or_default().push(t.head);
        }
        // A triple listed twice must be discounted once.
        for answers in filter.tails.values_mut().chain(filter.heads.values_mut()) {
            answers.sort_unstable();
            answers.dedup();
        }
        filter
    }

    fn true_tails(&self, head: u32, relation: u32) -> &[u32] {
        self.tails.get(&(head, relation)).map_or(&[], Vec::as_slice)
    }

    fn true_heads(&self, relation: u32, tail: u32) -> &[u32] {
        self.heads.get(&(relation, tail)).map_or(&[], Vec::as_slice)
    }
}

/// Filtered head and tail ranks of every triple, in parallel over triples; `None` for no triples.
pub fn evaluate(model: &TransE, triples: &[Triple], filter: &Filter) -> Option<RankMetrics> {
    if triples.is_empty() {
        return None;
    }
    let entities = &model.entities;
    let ranks: Vec<[f64; 2]> = triples
        .par_iter()
        .map_init(
            || (vec![0.0f32; entities.rows()], vec![0.0f32; entities.dim]),
            |(distances, query), t| {
                let (h, r, tail) = (entities.row(t.head), model.relations.row(t.relation), entities.row(t.tail));
                // Tail prediction: score(h, r, e) = -||(h + r) - e||.
                query.iter_mut().zip(h).zip(r).for_each(|((q, h), r)| *q = h + r);
                fill_distances(model, query, distances);
                let tail_rank = realistic_rank(distances, t.tail, filter.true_tails(t.head, t.relation));
                // Head prediction: score(e, r, t) = -||e + r - t|| = -||(t - r) - e||.
                query.iter_mut().zip(tail).zip(r).for_each(|((q, t), r)| *q = t - r);
                fill_distances(model, query, distances);
                let head_rank = realistic_rank(distances, t.head, filter.true_heads(t.relation, t.tail));
                [head_rank, tail_rank]
            },
        )
        .collect();
    Some(metrics(ranks.iter().flatten().copied()))
}

fn fill_distances(model: &TransE, query: &[f32], distances: &mut [f32]) {
    let rows = model.entities.values.chunks_exact(model.dim());
    for (distance, entity) in distances.iter_mut().zip(rows) {
        let difference = query.iter().zip(entity).map(|(q, e)| q - e);
        *distance = match model.norm {
            Norm::L1 => difference.map(f32::abs).sum(),
            Norm::L2 => difference.map(|x| x * x).sum::<f32>().sqrt(),
        };
    }
}

/// The realistic rank of `target` (1 = best) when `distances` are candidate distances (lower is better) and
/// `known` lists the true answers to discount, which may include `target` itself.
pub fn realistic_rank(distances: &[f32], target: u32, known: &[u32]) -> f64 {
    let target_distance = distances[target as usize];
    if target_distance.is_nan() {
        // A diverged model: every comparison with NaN is false, which would count as a perfect rank.
        return (distances.len() - known.iter().filter(|&&k| k != target).count()) as f64;
    }
    let count = |candidates: &mut dyn Iterator<Item = (usize, f32)>| {
        let (mut better, mut tied) = (0usize, 0usize);
        for (entity, distance) in candidates {
            if entity == target as usize {
                continue;
            }
            if distance < target_distance {
                better += 1;
            } else if distance == target_distance {
                tied += 1;
            }
        }
        (better, tied)
    };
    let (better, tied) = count(&mut distances.iter().copied().enumerate());
    let (known_better, known_tied) = count(&mut known.iter().map(|&k| (k as usize, distances[k as usize])));
    let (better, tied) = (better - known_better, tied - known_tied);
    // Optimistic rank 1 + better, pessimistic 1 + better + tied; their mean:
    1.0 + better as f64 + tied as f64 / 2.0
}

fn metrics(ranks: impl Iterator<Item = f64>) -> RankMetrics {
    let (mut count, mut reciprocal, mut hits) = (0usize, 0.0f64, [0usize; 3]);
    for rank in ranks {
        count += 1;
        reciprocal += 1.0 / rank;
        for (hit, k) in hits.iter_mut().zip([1.0, 3.0, 10.0]) {
            *hit += usize::from(rank <= k);
        }
    }
    let mean = |total: f64| total / count as f64;
    RankMetrics {
        mrr: mean(reciprocal),
        hits_at_1: mean(hits[0] as f64),
        hits_at_3: mean(hits[1] as f64),
        hits_at_10: mean(hits[2] as f64),
        ranks: count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Table;

    fn t(head: u32, relation: u32, tail: u32) -> Triple {
        Triple { head, relation, tail }
    }

    #[test]
    fn ties_take_the_mean_of_optimistic_and_pessimistic_rank() {
        // Target 0 ties with 1 and 2 and loses to 3: optimistic 2, pessimistic 4.
        assert_eq!(realistic_rank(&[0.5, 0.5, 0.5, 0.1], 0, &[]), 3.0);
        // Discounting the known answers 1 and 3 leaves one tie: optimistic 1, pessimistic 2.
        assert_eq!(realistic_rank(&[0.5, 0.5, 0.5, 0.1], 0, &[0, 1, 3]), 1.5);
        // A collapsed model gets the mean rank, not rank 1.
        assert_eq!(realistic_rank(&[1.0; 5], 2, &[]), 3.0);
        assert_eq!(realistic_rank(&[f32::NAN; 5], 2, &[2, 4]), 4.0);
    }

    #[test]
    fn filtered_ranking_against_a_hand_computed_example() {
        // One dimension, L1: entities at 0, 1, 1, 2, 3 and one relation translating by +1.
        let model = TransE {
            norm: Norm::L1,
            entities: Table { dim: 1, values: vec![0.0, 1.0, 1.0, 2.0, 3.0] },
            relations: Table { dim: 1, values: vec![1.0] },
        };
        let test = [t(0, 0, 1), t(3, 0, 0)];
        let filter = Filter::new(&[t(0, 0, 1), t(3, 0, 0), t(1, 0, 0), t(3, 0, 0)]);
        // (0, r, ?): query 1, distances 1 0 0 1 2: the true tail 1 ties with entity 2 → 1.5.
        // (?, r, 1): query 0, distances 0 1 1 2 3 → 1.
        // (3, r, ?): query 3, distances 3 2 2 1 0: all four others are closer → 5.
        // (?, r, 0): query -1, distances 1 2 2 3 4: entities 0, 1, 2 are closer, but (1, r, 0) is known → 3.
        let metrics = evaluate(&model, &test, &filter).unwrap();
        let expected_mrr = (1.0 / 1.5 + 1.0 + 1.0 / 5.0 + 1.0 / 3.0) / 4.0;
        assert!((metrics.mrr - expected_mrr).abs() < 1e-12, "{metrics:?}");
        assert_eq!((metrics.hits_at_1, metrics.hits_at_3, metrics.hits_at_10, metrics.ranks), (0.25, 0.75, 1.0, 4));
        assert_eq!(evaluate(&model, &[], &filter), None);
    }
}
