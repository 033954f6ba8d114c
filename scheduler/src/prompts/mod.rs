//! The automatic prompt generator (paper §5.1): fashion keywords and cuisine menus become
//! natural-language prompts, each wrapped in one of the paper's style prefixes ("the photo of …").
//!
//! Design decision: the wording lives in `scheduler/templates/{en,zh}.toml`, parsed into typed,
//! grammar-checked templates at load and embedded with `include_str!`, so copy editors change prompts
//! without touching code and the binary needs no files at run time.

mod coverage;
mod cuisine;
mod error;
mod fashion;
mod template;
mod values;

use serde::Deserialize;

pub use cuisine::Dish;
pub use error::PromptError;
pub use fashion::FashionKeywords;

use cuisine::CuisineTemplates;
use fashion::FashionTemplates;
use template::{Frame, NonEmpty, Template};

/// The most prompts one fashion request may ask for.
pub const MAX_PROMPTS: usize = 100;
/// The most values one fashion keyword field may have (bounds the number of combinations).
pub const MAX_VALUES_PER_FIELD: usize = 20;
/// The most dishes one menu may have.
pub const MAX_DISHES: usize = 200;
/// The most keywords one dish may have.
pub const MAX_DISH_KEYWORDS: usize = 10;
/// The longest keyword or dish name, in characters.
pub const MAX_KEYWORD_CHARS: usize = 64;

/// The language prompts are written in. `ToSchema`: the HTTP API documents it in `/openapi.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Zh,
    En,
}

/// Turns request keywords into prompts, using the templates bundled with the binary.
#[derive(Debug)]
pub struct PromptGenerator {
    zh: LanguageTemplates,
    en: LanguageTemplates,
}

/// One language's template file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LanguageTemplates {
    /// The paper's style prefixes, as frames around the sentence: `the photo of {subject}`.
    frames: NonEmpty<Template<Frame>>,
    fashion: FashionTemplates,
    cuisine: CuisineTemplates,
}

impl PromptGenerator {
    /// The generator with the bundled `templates/*.toml`.
    pub fn bundled() -> Self {
        PromptGenerator {
            zh: parse_bundled("zh.toml", include_str!("../../templates/zh.toml")),
            en: parse_bundled("en.toml", include_str!("../../templates/en.toml")),
        }
    }

    /// `count` distinct prompts covering the combinations of `keywords` evenly; the same arguments give
    /// the same prompts.
    pub fn fashion(
        &self,
        keywords: &FashionKeywords,
        count: usize,
        language: Language,
        seed: u64,
    ) -> Result<Vec<String>, PromptError> {
        let templates = self.templates(language);
        fashion::generate(&templates.fashion, &templates.frames, keywords, count, seed)
    }

    /// One prompt per dish, in the order given; the same arguments give the same prompts. A dish whose
    /// name is written in Chinese gets a Chinese prompt whatever `language` says, because an English
    /// sentence around a Chinese name ("the picture of 宫保鸡丁") is neither language's prompt.
    pub fn cuisine(&self, dishes: &[Dish], language: Language, seed: u64) -> Result<Vec<String>, PromptError> {
        let wording = |name: &str| {
            let templates = self.templates(if is_chinese(name) { Language::Zh } else { language });
            (&templates.cuisine, &templates.frames[..])
        };
        cuisine::generate(wording, dishes, seed)
    }

    fn templates(&self, language: Language) -> &LanguageTemplates {
        match language {
            Language::Zh => &self.zh,
            Language::En => &self.en,
        }
    }
}

/// Whether `text` contains CJK ideographs (the Unified block and its extension A), the script of
/// Chinese dish names.
fn is_chinese(text: &str) -> bool {
    text.chars().any(|c| matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}'))
}

fn parse_bundled(name: &str, text: &str) -> LanguageTemplates {
    toml::from_str(text).unwrap_or_else(|error| panic!("bundled templates/{name} is invalid (tests check it): {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when a prompt lacks the paper's style prefix or shows a rendering artifact.
    pub(super) fn assert_natural(prompt: &str, language: Language) {
        let prefixed = match language {
            Language::En => prompt.starts_with("the photo of ") || prompt.starts_with("the picture of "),
            Language::Zh => (prompt.starts_with("一张") && prompt.ends_with("的照片")) || prompt.ends_with("的图片"),
        };
        assert!(prefixed, "no style prefix: {prompt:?}");
        for artifact in ["  ", " ,", ",,", ", ,", "，，", "、、", "的的", "{", "}", "[", "]", "()", "of ,"] {
            assert!(!prompt.contains(artifact), "{artifact:?} in {prompt:?}");
        }
        assert_eq!(prompt.trim(), prompt, "untrimmed: {prompt:?}");
        assert!(!prompt.ends_with(',') && !prompt.ends_with('，'), "dangling comma: {prompt:?}");
    }

    const LANGUAGES: [Language; 2] = [Language::Zh, Language::En];

    #[test]
    fn bundled_templates_parse_with_known_placeholders_only() {
        let generator = PromptGenerator::bundled();
        for language in LANGUAGES {
            let templates = generator.templates(language);
            assert!(templates.frames.len() >= 2, "{language:?}: the paper's prefixes");
            assert!(templates.fashion.sentences.len() >= 3, "{language:?}: fashion sentences");
            assert!(templates.cuisine.sentences.len() >= 3, "{language:?}: cuisine sentences");
        }
    }

    #[test]
    fn an_unknown_placeholder_fails_at_load() {
        let misspelt = include_str!("../../templates/en.toml").replacen("made of {fabric}]", "made of {fabrik}]", 1);
        let error = toml::from_str::<LanguageTemplates>(&misspelt).unwrap_err().to_string();
        assert!(error.contains("unknown placeholder {fabrik}"), "{error}");
    }

    #[test]
    fn an_unknown_table_field_fails_at_load() {
        let extra = format!("{}\nsentense = []\n", include_str!("../../templates/en.toml"));
        let error = toml::from_str::<LanguageTemplates>(&extra).unwrap_err().to_string();
        assert!(error.contains("unknown field `sentense`"), "{error}");
    }

    #[test]
    fn every_subset_of_fashion_keywords_reads_naturally_in_every_variant() {
        let generator = PromptGenerator::bundled();
        for language in LANGUAGES {
            for subset in 1..32u32 {
                let value =
                    |bit: u32, text: &str| if subset & (1 << bit) != 0 { vec![text.to_owned()] } else { vec![] };
                let keywords = FashionKeywords {
                    category: value(0, "slip dress"),
                    trend: value(1, "Y2K"),
                    fabric: value(2, "satin"),
                    color: value(3, "sage green"),
                    style: value(4, "minimalist"),
                };
                // Ask for the most the generator says exist, so every sentence and frame gets rendered.
                let max = match generator.fashion(&keywords, MAX_PROMPTS, language, 7) {
                    Err(PromptError::NotEnoughVariety { max, .. }) => max,
                    other => panic!("one value per field cannot give {MAX_PROMPTS} prompts: {other:?}"),
                };
                let prompts = generator.fashion(&keywords, max, language, 7).unwrap();
                let variants = generator.templates(language).frames.len();
                assert!(prompts.len() >= variants, "{language:?} {subset:#b}: {prompts:?}");
                for prompt in &prompts {
                    assert_natural(prompt, language);
                    for values in
                        [&keywords.category, &keywords.trend, &keywords.fabric, &keywords.color, &keywords.style]
                    {
                        assert!(
                            values.iter().all(|value| prompt.contains(value.as_str())),
                            "{prompt:?} lacks {values:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn cuisine_prompts_read_naturally_in_every_variant() {
        let generator = PromptGenerator::bundled();
        let dishes = [
            Dish { name: "braised pork belly".into(), keywords: vec![] },
            Dish { name: "mapo tofu".into(), keywords: vec!["spicy".into()] },
            Dish { name: "dumplings".into(), keywords: vec!["steamed".into(), "juicy".into()] },
        ];
        for language in LANGUAGES {
            let templates = generator.templates(language);
            let variants = templates.cuisine.sentences.len() * templates.frames.len();
            for dish in &dishes {
                // Enough seeds to draw every sentence and frame; the set size proves it.
                let prompts: std::collections::HashSet<String> = (0..200)
                    .flat_map(|seed| generator.cuisine(std::slice::from_ref(dish), language, seed).unwrap())
                    .collect();
                assert_eq!(prompts.len(), variants, "{language:?} {dish:?}: {prompts:?}");
                for prompt in &prompts {
                    assert_natural(prompt, language);
                    assert!(prompt.contains(&dish.name), "{prompt:?}");
                    assert!(dish.keywords.iter().all(|keyword| prompt.contains(keyword.as_str())), "{prompt:?}");
                }
            }
        }
    }
}
