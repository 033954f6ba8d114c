//! A balanced order over keyword combinations: the first `n` combinations are distinct and use every
//! value of every field as evenly as possible (counts differ by at most one), for every `n`.
//!
//! Design decision: the order is computed from the index (a Latin-square walk), not by materialising and
//! sampling the cartesian product, so a request costs O(prompts) however many combinations exist.
//!
//! Field `j` with `n` values takes value `(i + shift) mod n` at index `i`, where `shift` is constant over
//! each aligned block of `n` indices, so every such block is a permutation of the values (evenness). The
//! fields before `j` repeat with period `p` (the product of their sizes). Over `lcm(p, n)` indices the
//! pair (earlier fields, field `j`) is injective by the Chinese remainder theorem and hits one residue
//! class of `(earlier - value) mod gcd(p, n)`; bumping `shift` by one per `lcm` block walks the
//! `gcd` classes, so the first `p * n` indices give every combination exactly once (distinctness).

/// The number of combinations of fields with these sizes.
pub(super) fn count(sizes: &[usize]) -> usize {
    sizes.iter().product()
}

/// The value index per field of combination `index` (< `count(sizes)`) in the balanced order.
pub(super) fn combination(index: usize, sizes: &[usize]) -> Vec<usize> {
    let mut period = 1;
    sizes
        .iter()
        .map(|&size| {
            let classes = gcd(period, size);
            let block = period / classes * size;
            let shift = (index / block) % classes;
            period *= size;
            (index + shift) % size
        })
        .collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const SIZES: &[&[usize]] = &[
        &[1],
        &[5],
        &[2, 2],
        &[2, 3],
        &[4, 6],
        &[6, 4],
        &[3, 3, 3],
        &[2, 2, 2, 2, 2],
        &[4, 2, 6],
        &[3, 6, 4, 2],
        &[5, 1, 5, 2, 3],
        &[20, 20],
    ];

    #[test]
    fn the_full_order_lists_every_combination_once() {
        for sizes in SIZES {
            let all: HashSet<Vec<usize>> = (0..count(sizes)).map(|i| combination(i, sizes)).collect();
            assert_eq!(all.len(), count(sizes), "sizes {sizes:?}");
            assert!(all.iter().flatten().zip(sizes.iter().cycle()).all(|(value, size)| value < size));
        }
    }

    #[test]
    fn every_prefix_uses_each_value_evenly() {
        for sizes in SIZES {
            let mut uses: Vec<Vec<usize>> = sizes.iter().map(|&size| vec![0; size]).collect();
            for i in 0..count(sizes) {
                for (field, value) in combination(i, sizes).into_iter().enumerate() {
                    uses[field][value] += 1;
                }
                for field_uses in &uses {
                    let (min, max) = (field_uses.iter().min().unwrap(), field_uses.iter().max().unwrap());
                    assert!(max - min <= 1, "sizes {sizes:?}, first {} combinations: {field_uses:?}", i + 1);
                }
            }
        }
    }

    #[test]
    fn the_order_is_not_plain_lexicographic() {
        // A plain `i mod n` walk per field would repeat [0, 0] at index 2.
        assert_eq!((0..4).map(|i| combination(i, &[2, 2])).collect::<Vec<_>>(), [[0, 0], [1, 1], [0, 1], [1, 0]]);
    }
}
