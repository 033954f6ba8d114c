//! The train/validation/test dataset: separate split files, or one file split with a seeded
//! shuffle, over one vocabulary.
//!
//! Held-out triples that name an entity or relation the training split lacks are dropped and counted,
//! as PyKEEN does: TransE learns no vector for them, so they cannot be ranked.

use std::path::Path;

use crate::error::Error;
use crate::graph::{read_triples, Triple, Vocab};
use crate::split::{self, SplitRatios};

/// How held-out triples naming something absent from training were handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unseen {
    /// Validation triples dropped (separate files).
    pub dropped_valid: usize,
    /// Test triples dropped (separate files).
    pub dropped_test: usize,
    /// Held-out triples moved into training (`--split`, as PyKEEN's `TriplesFactory.split` does).
    pub moved_to_train: usize,
}

/// A training split with optional validation and test splits over one shared vocabulary.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub entities: Vocab,
    pub relations: Vocab,
    pub train: Vec<Triple>,
    pub valid: Vec<Triple>,
    pub test: Vec<Triple>,
    pub unseen: Unseen,
}

impl Dataset {
    /// Loads separate split files. The vocabulary is the training file's; held-out triples naming anything
    /// else are dropped and counted in `unseen`.
    pub fn from_files(train: &Path, valid: Option<&Path>, test: Option<&Path>) -> Result<Self, Error> {
        let mut entities = Vocab::default();
        let mut relations = Vocab::default();
        let train = read_triples(train, &mut entities, &mut relations)?;
        let (known_entities, known_relations) = (entities.len(), relations.len());
        let mut held_out = |path: Option<&Path>| -> Result<(Vec<Triple>, usize), Error> {
            let Some(path) = path else { return Ok((Vec::new(), 0)) };
            let all = read_triples(path, &mut entities, &mut relations)?;
            let total = all.len();
            // Names first seen here got ids past the training vocabulary.
            let kept: Vec<Triple> = all
                .into_iter()
                .filter(|t| {
                    (t.head as usize) < known_entities
                        && (t.tail as usize) < known_entities
                        && (t.relation as usize) < known_relations
                })
                .collect();
            let dropped = total - kept.len();
            Ok((kept, dropped))
        };
        let (valid, dropped_valid) = held_out(valid)?;
        let (test, dropped_test) = held_out(test)?;
        entities.truncate(known_entities);
        relations.truncate(known_relations);
        let unseen = Unseen { dropped_valid, dropped_test, moved_to_train: 0 };
        Self::checked(Self { entities, relations, train, valid, test, unseen })
    }

    /// Loads one file and splits it with a seeded shuffle (see [`split::split`]).
    pub fn from_split(path: &Path, ratios: SplitRatios, seed: u64) -> Result<Self, Error> {
        let mut entities = Vocab::default();
        let mut relations = Vocab::default();
        let triples = read_triples(path, &mut entities, &mut relations)?;
        // After the split moves held-out triples with unseen names into training, every name is in training:
        // the file's vocabulary is the training vocabulary.
        let parts = split::split(triples, ratios, seed);
        let unseen = Unseen { dropped_valid: 0, dropped_test: 0, moved_to_train: parts.moved_to_train };
        Self::checked(Self { entities, relations, train: parts.train, valid: parts.valid, test: parts.test, unseen })
    }

    fn checked(self) -> Result<Self, Error> {
        self.check()?;
        Ok(self)
    }

    /// What training needs: some training triples and at least two entities to draw negatives from. The
    /// loaders guarantee both; this catches datasets assembled by hand.
    pub fn check(&self) -> Result<(), Error> {
        if self.train.is_empty() {
            return Err(Error::EmptyTraining);
        }
        if self.entities.len() < 2 {
            return Err(Error::TooFewEntities { entities: self.entities.len() });
        }
        Ok(())
    }

    /// Every known true triple (training, validation and test): the filter of filtered ranking.
    pub fn known_triples(&self) -> impl Iterator<Item = &Triple> {
        self.train.iter().chain(&self.valid).chain(&self.test)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::file;

    #[test]
    fn a_missing_file_says_which() {
        let error = Dataset::from_files(Path::new("/nonexistent/train.tsv"), None, None).unwrap_err();
        assert!(error.to_string().starts_with("cannot read /nonexistent/train.tsv"), "{error}");
    }

    #[test]
    fn held_out_triples_with_unseen_names_are_dropped_and_counted() {
        let train = file("a\tr\tb\nb\tr\tc\n");
        let valid = file("a\tr\tc\na\tnew_relation\tb\n");
        let test = file("c\tr\ta\nnew_entity\tr\ta\na\tr\tnew_entity\n");
        let dataset = Dataset::from_files(train.path(), Some(valid.path()), Some(test.path())).unwrap();
        assert_eq!(dataset.entities.names(), ["a", "b", "c"]);
        assert_eq!(dataset.relations.names(), ["r"]);
        assert_eq!(dataset.valid, [Triple { head: 0, relation: 0, tail: 2 }]);
        assert_eq!(dataset.test, [Triple { head: 2, relation: 0, tail: 0 }]);
        assert_eq!(dataset.unseen, Unseen { dropped_valid: 1, dropped_test: 2, moved_to_train: 0 });
        assert_eq!(dataset.entities.id("new_entity"), None);
    }

    #[test]
    fn a_single_entity_graph_is_refused() {
        let error = Dataset::from_files(file("a\tr\ta\n").path(), None, None).unwrap_err();
        assert!(matches!(error, Error::TooFewEntities { entities: 1 }), "{error:?}");
    }
}
