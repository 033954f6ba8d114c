//! TransE's parameters and scoring (Bordes et al. 2013): score(h, r, t) = -||h + r - t||_p.
//!
//! Tables are flat row-major `Vec<f32>` rather than `ndarray::Array2`: training hands row slices and disjoint
//! blocks of rows to threads, which plain slices do without layout checks; ndarray views are made only to
//! write `.npy` files.

use std::str::FromStr;

use ndarray::ArrayView2;
use rand::Rng;

use crate::error::Error;
use crate::graph::Triple;
use crate::rng::{self, Purpose};

/// The distance of TransE's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    L1,
    L2,
}

impl Norm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
        }
    }
}

impl FromStr for Norm {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "l1" => Ok(Self::L1),
            "l2" => Ok(Self::L2),
            _ => Err(Error::InvalidSetting { name: "norm", value: text.to_owned(), expected: "expected l1 or l2" }),
        }
    }
}

/// A matrix of `rows` vectors of length `dim`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub dim: usize,
    pub values: Vec<f32>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.values.len() / self.dim
    }

    pub fn row(&self, index: u32) -> &[f32] {
        let start = index as usize * self.dim;
        &self.values[start..start + self.dim]
    }

    pub fn view(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.rows(), self.dim), &self.values).expect("values.len() is rows * dim")
    }
}

/// Entity and relation vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct TransE {
    pub norm: Norm,
    pub entities: Table,
    pub relations: Table,
}

impl TransE {
    /// The paper's initialisation: every coordinate uniform in ±6/√dim, then every vector scaled to unit L2
    /// norm. Relations are normalised only here; entities are kept on the unit sphere throughout training.
    /// (PyKEEN draws Xavier-uniform instead; after normalisation both are uniform directions.)
    pub fn new(num_entities: usize, num_relations: usize, dim: usize, norm: Norm, seed: u64) -> Self {
        let mut rng = rng::stream(seed, Purpose::Init, 0, 0);
        let bound = 6.0 / (dim as f32).sqrt();
        let mut table = |rows: usize| {
            let mut values: Vec<f32> = (0..rows * dim).map(|_| rng.random_range(-bound..bound)).collect();
            values.chunks_mut(dim).for_each(normalize);
            Table { dim, values }
        };
        let entities = table(num_entities);
        let relations = table(num_relations);
        Self { norm, entities, relations }
    }

    pub fn dim(&self) -> usize {
        self.entities.dim
    }

    /// ||h + r - t||_p for `triple`.
    pub fn distance(&self, triple: Triple) -> f32 {
        let (h, r, t) =
            (self.entities.row(triple.head), self.relations.row(triple.relation), self.entities.row(triple.tail));
        let residual = h.iter().zip(r).zip(t).map(|((h, r), t)| h + r - t);
        match self.norm {
            Norm::L1 => residual.map(f32::abs).sum(),
            Norm::L2 => residual.map(|x| x * x).sum::<f32>().sqrt(),
        }
    }

    /// Writes `scale` times the gradient of `distance(triple)` with respect to the residual h + r - t into
    /// `out`; the gradient for h and r is `out`, for t it is `-out`.
    pub fn distance_gradient(&self, triple: Triple, scale: f32, out: &mut [f32]) {
        let (h, r, t) =
            (self.entities.row(triple.head), self.relations.row(triple.relation), self.entities.row(triple.tail));
        let residual = h.iter().zip(r).zip(t).map(|((h, r), t)| h + r - t);
        match self.norm {
            // d|x|/dx = sign(x), taken as 0 at 0 like torch.
            Norm::L1 => out.iter_mut().zip(residual).for_each(|(o, x)| *o = scale * sign(x)),
            Norm::L2 => {
                let distance = self.distance(triple);
                // At distance 0 every direction is a subgradient; 0 keeps the step finite.
                let factor = if distance > 0.0 { scale / distance } else { 0.0 };
                out.iter_mut().zip(residual).for_each(|(o, x)| *o = factor * x);
            }
        }
    }
}

fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Scales `row` to unit L2 norm; a zero row is left as it is.
pub fn normalize(row: &mut [f32]) {
    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        row.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(norm: Norm) -> TransE {
        TransE {
            norm,
            entities: Table { dim: 2, values: vec![0.0, 0.0, 3.0, 4.0, 1.0, 1.0] },
            relations: Table { dim: 2, values: vec![1.0, 0.0] },
        }
    }

    #[test]
    fn distances_and_gradients() {
        // h = (3, 4), r = (1, 0), t = (1, 1): residual (3, 3).
        let triple = Triple { head: 1, relation: 0, tail: 2 };
        let mut gradient = [0.0; 2];
        assert_eq!(model(Norm::L1).distance(triple), 6.0);
        model(Norm::L1).distance_gradient(triple, 2.0, &mut gradient);
        assert_eq!(gradient, [2.0, 2.0]);
        let l2 = model(Norm::L2);
        assert!((l2.distance(triple) - 18f32.sqrt()).abs() < 1e-6);
        l2.distance_gradient(triple, 1.0, &mut gradient);
        assert!(gradient.iter().all(|g| (g - 0.5f32.sqrt()).abs() < 1e-6), "{gradient:?}");
        // Residual (0 + 1 - 1, 0 + 0 - 1) = (0, -1): L1 gradient is 0 where the residual is 0.
        model(Norm::L1).distance_gradient(Triple { head: 0, relation: 0, tail: 2 }, 1.0, &mut gradient);
        assert_eq!(gradient, [0.0, -1.0]);
    }

    #[test]
    fn initial_vectors_are_unit_and_seeded() {
        let a = TransE::new(10, 3, 8, Norm::L1, 5);
        for row in a.entities.values.chunks(8).chain(a.relations.values.chunks(8)) {
            assert!((row.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert_eq!(a, TransE::new(10, 3, 8, Norm::L1, 5));
        assert_ne!(a, TransE::new(10, 3, 8, Norm::L1, 6));
        assert_eq!(a.entities.view().shape(), [10, 8]);
    }
}
