//! Longest-match dictionary linking of entity names and aliases with Aho-Corasick, in Chinese and
//! English alike: leftmost-longest matching, so "kung pao chicken" wins over "chicken" and
//! "麻婆豆腐" over "豆腐". English matching ignores ASCII case and must fall on word boundaries
//! ("silk" in "silky" is no mention); Chinese has no spaces, so any position counts.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// One entity named in a text: byte range and entity index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mention {
    pub start: usize,
    pub end: usize,
    pub entity: usize,
}

pub struct EntityLinker {
    automaton: AhoCorasick,
    /// Entity index of each pattern.
    targets: Vec<usize>,
}

impl EntityLinker {
    /// Patterns: every entity's own name plus its aliases.
    pub fn new(entities: &[String], aliases: &[(String, usize)]) -> Self {
        let mut patterns: Vec<&str> = Vec::new();
        let mut targets = Vec::new();
        for (entity, name) in entities.iter().enumerate() {
            patterns.push(name);
            targets.push(entity);
        }
        for (alias, entity) in aliases {
            patterns.push(alias);
            targets.push(*entity);
        }
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .build(&patterns)
            .expect("a few thousand literal patterns always build");
        Self { automaton, targets }
    }

    pub fn find(&self, text: &str) -> Vec<Mention> {
        self.automaton
            .find_iter(text)
            .filter(|m| on_word_boundaries(text, m.start(), m.end()))
            .map(|m| Mention { start: m.start(), end: m.end(), entity: self.targets[m.pattern().as_usize()] })
            .collect()
    }
}

/// A match that starts or ends with an ASCII letter or digit must not continue a word there.
fn on_word_boundaries(text: &str, start: usize, end: usize) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let first = text[start..end].chars().next();
    let last = text[start..end].chars().next_back();
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    let continues_before = word(first) && word(before);
    let continues_after = word(last) && word(after);
    !continues_before && !continues_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linker() -> EntityLinker {
        let entities: Vec<String> =
            ["chicken", "kung pao chicken", "silk", "tofu", "mapo tofu"].iter().map(|s| s.to_string()).collect();
        let aliases = vec![
            ("宫保鸡丁".to_owned(), 1),
            ("豆腐".to_owned(), 3),
            ("麻婆豆腐".to_owned(), 4),
            ("丝绸".to_owned(), 2),
        ];
        EntityLinker::new(&entities, &aliases)
    }

    fn found(text: &str) -> Vec<(&str, usize)> {
        linker().find(text).into_iter().map(|m| (&text[m.start..m.end], m.entity)).collect()
    }

    #[test]
    fn longest_match_wins_in_both_languages() {
        assert_eq!(found("Kung Pao Chicken with rice"), vec![("Kung Pao Chicken", 1)]);
        assert_eq!(found("一盘麻婆豆腐和宫保鸡丁"), vec![("麻婆豆腐", 4), ("宫保鸡丁", 1)]);
        assert_eq!(found("豆腐 and chicken"), vec![("豆腐", 3), ("chicken", 0)]);
    }

    #[test]
    fn english_matches_respect_word_boundaries() {
        assert!(found("a silky scarf").is_empty());
        assert_eq!(found("silk, 丝绸连衣裙"), vec![("silk", 2), ("丝绸", 2)]);
        assert_eq!(found("(silk)"), vec![("silk", 2)]);
    }
}
