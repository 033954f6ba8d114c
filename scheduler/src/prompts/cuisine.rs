//! Cuisine prompts (paper §5.1): one food-photography prompt per dish of a menu, in menu order.
//!
//! Design decision: each dish gets a seeded sentence/frame variant, and falls through to the next variant
//! if that text was already produced, so dishes whose names or keywords differ never share a prompt even
//! when their texts happen to concatenate alike; only identical dishes are rejected.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::template::{Frame, Grammar, NonEmpty, Slot, Template};
use super::values::{check_count, distinct_keywords, keyword};
use super::{PromptError, MAX_DISHES, MAX_DISH_KEYWORDS};

/// A dish of a menu: its name and optional food-related keywords ("spicy", "crispy").
#[derive(Debug, Clone, Default)]
pub struct Dish {
    pub name: String,
    pub keywords: Vec<String>,
}

/// The grammar of cuisine sentences.
#[derive(Debug)]
pub(super) struct Cuisine;

impl Grammar for Cuisine {
    const ALWAYS: &'static [Slot] = &[Slot::Dish];
    const OPTIONAL: &'static [Slot] = &[Slot::Keywords];
}

/// The `[cuisine]` table of a language's template file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CuisineTemplates {
    /// Joins a dish's keywords into the `{keywords}` slot.
    pub(super) keyword_separator: String,
    /// Sentences over `{dish}` and `{keywords}`.
    pub(super) sentences: NonEmpty<Template<Cuisine>>,
}

/// A dish after validation: trimmed name, trimmed and de-duplicated keywords.
#[derive(PartialEq, Eq)]
struct ValidDish<'a> {
    name: &'a str,
    keywords: Vec<&'a str>,
}

/// A language's cuisine sentences and the frames around them.
pub(super) type Wording<'a> = (&'a CuisineTemplates, &'a [Template<Frame>]);

/// Generates one prompt per dish, in the order given; `wording` gives each dish's sentences and frames
/// from its (trimmed) name, so a menu may mix languages.
pub(super) fn generate<'a>(
    wording: impl Fn(&str) -> Wording<'a>,
    dishes: &[Dish],
    seed: u64,
) -> Result<Vec<String>, PromptError> {
    check_count("dishes", dishes.len(), 1, MAX_DISHES)?;
    let dishes = validate(dishes)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut owners: HashMap<String, usize> = HashMap::new();
    let mut prompts = Vec::with_capacity(dishes.len());
    for (index, dish) in dishes.iter().enumerate() {
        let (templates, frames) = wording(dish.name);
        let variants: Vec<_> =
            templates.sentences.iter().flat_map(|sentence| frames.iter().map(move |frame| (sentence, frame))).collect();
        let keywords = dish.keywords.join(&templates.keyword_separator);
        let value = |slot: Slot| match slot {
            Slot::Dish => Some(dish.name),
            Slot::Keywords => Some(keywords.as_str()).filter(|keywords| !keywords.is_empty()),
            _ => None,
        };
        let start = rng.random_range(0..variants.len());
        let candidates: Vec<String> = (0..variants.len())
            .map(|offset| {
                let (sentence, frame) = variants[(start + offset) % variants.len()];
                frame.wrap(&sentence.render(value))
            })
            .collect();
        let Some(prompt) = candidates.iter().find(|prompt| !owners.contains_key(*prompt)) else {
            return Err(PromptError::DuplicateDish { index, first: owners[&candidates[0]] });
        };
        owners.insert(prompt.clone(), index);
        prompts.push(prompt.clone());
    }
    Ok(prompts)
}

/// Validates every dish and rejects a dish identical to an earlier one.
fn validate(dishes: &[Dish]) -> Result<Vec<ValidDish<'_>>, PromptError> {
    let mut valid: Vec<ValidDish> = Vec::with_capacity(dishes.len());
    for (index, dish) in dishes.iter().enumerate() {
        let name = keyword(&dish.name, || format!("dishes[{index}].name"))?;
        let keywords = distinct_keywords(&dish.keywords, &format!("dishes[{index}].keywords"), MAX_DISH_KEYWORDS)?;
        let dish = ValidDish { name, keywords };
        // A quadratic scan is fine: a menu has at most MAX_DISHES dishes.
        if let Some(first) = valid.iter().position(|earlier| *earlier == dish) {
            return Err(PromptError::DuplicateDish { index, first });
        }
        valid.push(dish);
    }
    Ok(valid)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::{Language, PromptGenerator, MAX_KEYWORD_CHARS};
    use super::*;

    fn dish(name: &str, keywords: &[&str]) -> Dish {
        Dish { name: name.into(), keywords: keywords.iter().map(|&keyword| keyword.into()).collect() }
    }

    #[test]
    fn one_prompt_per_dish_in_menu_order() {
        let generator = PromptGenerator::bundled();
        let menu: Vec<Dish> = (0..MAX_DISHES).map(|i| dish(&format!("dish{i:03}"), &["crispy"])).collect();
        for language in [Language::Zh, Language::En] {
            let prompts = generator.cuisine(&menu, language, 1).unwrap();
            assert_eq!(prompts.len(), menu.len());
            for (prompt, dish) in prompts.iter().zip(&menu) {
                assert!(prompt.contains(&dish.name) && prompt.contains("crispy"), "{prompt:?}");
            }
        }
    }

    #[test]
    fn dishes_written_in_chinese_get_chinese_prompts() {
        let generator = PromptGenerator::bundled();
        let menu = [dish("宫保鸡丁", &["花生"]), dish("mapo tofu", &[]), dish(" 麻婆豆腐 ", &[])];
        for seed in 0..20 {
            let prompts = generator.cuisine(&menu, Language::En, seed).unwrap();
            for chinese in [&prompts[0], &prompts[2]] {
                super::super::tests::assert_natural(chinese, Language::Zh);
                assert!(!chinese.is_ascii() && !chinese.contains("the "), "seed {seed}: {chinese:?}");
            }
            super::super::tests::assert_natural(&prompts[1], Language::En);
        }
        // A Chinese menu keeps its language for names in other scripts.
        let prompts = generator.cuisine(&menu, Language::Zh, 0).unwrap();
        super::super::tests::assert_natural(&prompts[1], Language::Zh);
    }

    #[test]
    fn a_seed_fixes_the_prompts_and_other_seeds_vary_them() {
        let generator = PromptGenerator::bundled();
        let menu = [dish("mapo tofu", &["spicy"]), dish("fried rice", &[]), dish("wonton soup", &[])];
        let prompts = |seed| generator.cuisine(&menu, Language::En, seed).unwrap();
        assert_eq!(prompts(4), prompts(4));
        assert!((5..15).all(|seed| prompts(seed) != prompts(4)));
    }

    #[test]
    fn dishes_that_differ_never_share_a_prompt() {
        let generator = PromptGenerator::bundled();
        // Both would read "noodles, spicy, ..." in the same English sentence.
        let menu = [dish("noodles", &["spicy"]), dish("noodles, spicy", &[]), dish("noodles", &["mild"])];
        for seed in 0..50 {
            let prompts = generator.cuisine(&menu, Language::En, seed).unwrap();
            assert_eq!(prompts.iter().collect::<HashSet<_>>().len(), menu.len(), "seed {seed}: {prompts:?}");
        }
    }

    #[test]
    fn identical_dishes_are_rejected() {
        let generator = PromptGenerator::bundled();
        let menu = [dish("mapo tofu", &["spicy"]), dish("rice", &[]), dish(" mapo tofu ", &["spicy", "spicy "])];
        let error = generator.cuisine(&menu, Language::Zh, 0).unwrap_err();
        assert_eq!(error, PromptError::DuplicateDish { index: 2, first: 0 });
        assert_eq!(error.field(), "dishes[2]");
        assert!(error.to_string().starts_with("dishes[2]: gives the same prompt as dishes[0]"), "{error}");
    }

    #[test]
    fn bad_menus_name_their_field() {
        let generator = PromptGenerator::bundled();
        let long = "x".repeat(MAX_KEYWORD_CHARS + 1);
        let too_many = vec!["hot"; MAX_DISH_KEYWORDS + 1];
        let cases = [
            (vec![], "dishes"),
            (vec![dish("rice", &[]); MAX_DISHES + 1], "dishes"),
            (vec![dish("rice", &[]), dish(" ", &[])], "dishes[1].name"),
            (vec![dish(&long, &[])], "dishes[0].name"),
            (vec![dish("rice", &too_many)], "dishes[0].keywords"),
            (vec![dish("rice", &["hot", ""])], "dishes[0].keywords[1]"),
            (vec![dish("rice", &["hot", &long])], "dishes[0].keywords[1]"),
        ];
        for (menu, field) in cases {
            let error = generator.cuisine(&menu, Language::En, 0).unwrap_err();
            assert_eq!(error.field(), field, "{error}");
            assert!(error.to_string().starts_with(&format!("{field}: ")), "{error}");
        }
    }
}
