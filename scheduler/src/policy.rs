//! The prompt policy: configured terms no prompt may contain (`scheduler.blocked_terms`), checked
//! before anything is enqueued.

use unicode_normalization::UnicodeNormalization;

use crate::config::BlockedTerms;

/// The configured terms, normalised once at start-up.
#[derive(Debug, Clone, Default)]
pub struct PromptPolicy {
    /// Matched as whole words.
    words: Vec<Term>,
    /// Matched anywhere.
    fragments: Vec<Term>,
}

#[derive(Debug, Clone)]
struct Term {
    /// As configured, for the error message.
    configured: String,
    normalised: String,
}

impl PromptPolicy {
    pub fn new(terms: &BlockedTerms) -> Self {
        let compile = |terms: &[String]| -> Vec<Term> {
            terms
                .iter()
                .map(|t| Term { configured: t.trim().to_owned(), normalised: normalise(t.trim()) })
                .filter(|t| !t.normalised.is_empty())
                .collect()
        };
        Self { words: compile(&terms.en), fragments: compile(&terms.zh) }
    }

    /// The first blocked term `prompt` contains, as configured.
    pub fn blocked_term(&self, prompt: &str) -> Option<&str> {
        let prompt = normalise(prompt);
        let word = self.words.iter().find(|t| contains_word(&prompt, &t.normalised));
        let fragment = || self.fragments.iter().find(|t| prompt.contains(&t.normalised));
        word.or_else(fragment).map(|t| t.configured.as_str())
    }
}

/// Compatibility decomposition folds full-width and other presentation forms (`Ｇ` → `G`,
/// `ﬁ` → `fi`); lower case then folds case.
fn normalise(text: &str) -> String {
    text.nfkc().collect::<String>().to_lowercase()
}

/// Whether `word` occurs in `text` with no letter or digit right before or after it.
fn contains_word(text: &str, word: &str) -> bool {
    let is_word_char = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !is_word_char(before) && !is_word_char(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PromptPolicy {
        PromptPolicy::new(&BlockedTerms { en: vec!["Gore".into(), "blood bath".into()], zh: vec!["血腥".into()] })
    }

    #[test]
    fn english_terms_match_whole_words_whatever_the_case_and_width() {
        let policy = policy();
        assert_eq!(policy.blocked_term("a dress with GORE"), Some("Gore"));
        assert_eq!(policy.blocked_term("ｇｏｒｅ-stained coat"), Some("Gore"), "full-width letters fold");
        assert_eq!(policy.blocked_term("a Blood Bath scene"), Some("blood bath"));
        assert_eq!(policy.blocked_term("a gored skirt"), None, "part of a longer word");
        assert_eq!(policy.blocked_term("a red dress"), None);
    }

    #[test]
    fn chinese_terms_match_anywhere() {
        let policy = policy();
        assert_eq!(policy.blocked_term("一张血腥的图片"), Some("血腥"));
        assert_eq!(policy.blocked_term("红色连衣裙"), None);
    }

    #[test]
    fn an_empty_policy_blocks_nothing() {
        let policy = PromptPolicy::new(&BlockedTerms { en: vec!["  ".into()], zh: Vec::new() });
        assert_eq!(policy.blocked_term("anything at all"), None);
    }
}
