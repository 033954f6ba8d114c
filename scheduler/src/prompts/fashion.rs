//! Fashion prompts (paper §5.1): keywords for category, trend, fabric, color and style become
//! natural-language prompts that cover the keyword combinations evenly and never repeat.
//!
//! Design decision: prompts are drawn lazily from one deterministic candidate sequence (every combination
//! in the balanced order, then again with the next sentence/frame variant, and so on) and de-duplicated
//! by their rendered text, so "how many distinct prompts exist" is exactly what the sequence yields.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::template::{Frame, Grammar, NonEmpty, Slot, Template};
use super::values::{check_count, distinct_keywords};
use super::{coverage, PromptError, MAX_PROMPTS, MAX_VALUES_PER_FIELD};

/// Keywords of a fashion design request. Each field: zero or more values (the HTTP layer turns "a string
/// or a list" into a `Vec`).
#[derive(Debug, Clone, Default)]
pub struct FashionKeywords {
    pub category: Vec<String>,
    pub trend: Vec<String>,
    pub fabric: Vec<String>,
    pub color: Vec<String>,
    pub style: Vec<String>,
}

/// The grammar of fashion sentences.
#[derive(Debug)]
pub(super) struct Fashion;

impl Grammar for Fashion {
    /// Filled with `default_category` when the request names none.
    const ALWAYS: &'static [Slot] = &[Slot::Category];
    const OPTIONAL: &'static [Slot] = &[Slot::Trend, Slot::Fabric, Slot::Color, Slot::Style];
}

/// The `[fashion]` table of a language's template file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FashionTemplates {
    /// Head noun for requests that name no category, so every sentence keeps a subject.
    default_category: String,
    /// Sentences over the keyword slots.
    pub(super) sentences: NonEmpty<Template<Fashion>>,
}

/// Generates `count` distinct prompts for `keywords`, framed by one of `frames`.
pub(super) fn generate(
    templates: &FashionTemplates,
    frames: &[Template<Frame>],
    keywords: &FashionKeywords,
    count: usize,
    seed: u64,
) -> Result<Vec<String>, PromptError> {
    check_count("prompts", count, 1, MAX_PROMPTS)?;
    let mut fields = present_fields(keywords)?;
    if fields.is_empty() {
        return Err(PromptError::NoKeywords);
    }
    // The seed decides which values pair up first and which sentence/frame each combination gets; the
    // balanced order itself is fixed.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (_, values) in &mut fields {
        values.shuffle(&mut rng);
    }
    let mut variants: Vec<_> =
        templates.sentences.iter().flat_map(|sentence| frames.iter().map(move |frame| (sentence, frame))).collect();
    variants.shuffle(&mut rng);

    let sizes: Vec<usize> = fields.iter().map(|(_, values)| values.len()).collect();
    let combinations = coverage::count(&sizes);
    let mut seen = HashSet::new();
    let prompts: Vec<String> = (0..variants.len())
        .flat_map(|round| (0..combinations).map(move |index| (round, index)))
        .map(|(round, index)| {
            let (sentence, frame) = variants[(index + round) % variants.len()];
            let picks = coverage::combination(index, &sizes);
            let value = |slot: Slot| {
                let picked = fields.iter().zip(&picks).find(|((field, _), _)| *field == slot);
                let picked = picked.map(|((_, values), &pick)| values[pick]);
                picked.or((slot == Slot::Category).then_some(templates.default_category.as_str()))
            };
            frame.wrap(&sentence.render(value))
        })
        .filter(|prompt| seen.insert(prompt.clone()))
        .take(count)
        .collect();
    if prompts.len() < count {
        return Err(PromptError::NotEnoughVariety { requested: count, max: prompts.len() });
    }
    Ok(prompts)
}

/// The validated, de-duplicated values of each field that has any.
fn present_fields(keywords: &FashionKeywords) -> Result<Vec<(Slot, Vec<&str>)>, PromptError> {
    let all = [
        (Slot::Category, &keywords.category),
        (Slot::Trend, &keywords.trend),
        (Slot::Fabric, &keywords.fabric),
        (Slot::Color, &keywords.color),
        (Slot::Style, &keywords.style),
    ];
    let mut present = Vec::new();
    for (slot, values) in all {
        let values = distinct_keywords(values, &format!("keywords.{}", slot.name()), MAX_VALUES_PER_FIELD)?;
        if !values.is_empty() {
            present.push((slot, values));
        }
    }
    Ok(present)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::{Language, PromptGenerator, MAX_KEYWORD_CHARS};
    use super::*;

    /// Keywords with `sizes[f]` values in field `f`; values are tokens like "co2" that no template contains
    /// and no other value contains, so a prompt's combination can be read back from its text.
    fn tokens(sizes: [usize; 5]) -> FashionKeywords {
        let field = |prefix: &str, size| (0..size).map(|i| format!("{prefix}{i}")).collect();
        FashionKeywords {
            category: field("ca", sizes[0]),
            trend: field("tr", sizes[1]),
            fabric: field("fa", sizes[2]),
            color: field("co", sizes[3]),
            style: field("st", sizes[4]),
        }
    }

    fn fields(keywords: &FashionKeywords) -> [&Vec<String>; 5] {
        [&keywords.category, &keywords.trend, &keywords.fabric, &keywords.color, &keywords.style]
    }

    /// Per field, how many prompts use each value.
    fn value_uses(keywords: &FashionKeywords, prompts: &[String]) -> Vec<Vec<usize>> {
        let uses = |value: &String| prompts.iter().filter(|prompt| prompt.contains(value.as_str())).count();
        fields(keywords).iter().map(|values| values.iter().map(uses).collect()).collect()
    }

    fn assert_even(uses: &[Vec<usize>], context: &str) {
        for field_uses in uses.iter().filter(|uses| !uses.is_empty()) {
            let (min, max) = (field_uses.iter().min().unwrap(), field_uses.iter().max().unwrap());
            assert!(max - min <= 1, "{context}: uneven value uses {field_uses:?}");
        }
    }

    #[test]
    fn prompts_cover_distinct_combinations_evenly() {
        let generator = PromptGenerator::bundled();
        let sizes =
            [[3, 0, 0, 2, 0], [2, 2, 2, 0, 0], [4, 0, 6, 0, 0], [1, 3, 2, 4, 5], [0, 0, 0, 7, 0], [9, 9, 0, 0, 0]];
        for language in [Language::Zh, Language::En] {
            for sizes in sizes {
                let keywords = tokens(sizes);
                let combinations: usize = sizes.iter().filter(|&&size| size > 0).product();
                for count in (1..=combinations.min(MAX_PROMPTS)).step_by(3) {
                    let prompts = generator.fashion(&keywords, count, language, 42).unwrap();
                    let context = format!("{language:?} sizes {sizes:?} count {count}");
                    assert_eq!(prompts.len(), count, "{context}");
                    assert_even(&value_uses(&keywords, &prompts), &context);
                    let picked: HashSet<Vec<&String>> = prompts
                        .iter()
                        .map(|prompt| {
                            fields(&keywords).into_iter().flatten().filter(|v| prompt.contains(v.as_str())).collect()
                        })
                        .collect();
                    assert_eq!(picked.len(), count, "{context}: a combination repeats");
                }
            }
        }
    }

    #[test]
    fn more_prompts_than_combinations_cycle_evenly_without_duplicates() {
        let generator = PromptGenerator::bundled();
        let keywords = tokens([2, 1, 1, 3, 1]);
        for count in [7, 12, 25, 48] {
            let prompts = generator.fashion(&keywords, count, Language::En, 3).unwrap();
            assert_eq!(prompts.iter().collect::<HashSet<_>>().len(), count, "{prompts:?}");
            assert_even(&value_uses(&keywords, &prompts), &format!("count {count}"));
        }
    }

    #[test]
    fn asking_for_more_than_the_distinct_prompts_says_the_maximum() {
        let generator = PromptGenerator::bundled();
        // Every English sentence renders a lone category alike, so only the two frames differ.
        let keywords = FashionKeywords { category: vec!["slip dress".into()], ..Default::default() };
        let error = generator.fashion(&keywords, 3, Language::En, 0).unwrap_err();
        assert_eq!(error, PromptError::NotEnoughVariety { requested: 3, max: 2 });
        assert_eq!(error.field(), "prompts");
        assert!(error.to_string().contains("at most 2"), "{error}");
        assert_eq!(
            generator.fashion(&keywords, 2, Language::En, 0).unwrap().into_iter().collect::<HashSet<_>>(),
            HashSet::from(["the photo of slip dress".to_owned(), "the picture of slip dress".to_owned()])
        );
    }

    #[test]
    fn a_seed_fixes_the_prompts_and_other_seeds_vary_them() {
        let generator = PromptGenerator::bundled();
        let keywords = tokens([3, 2, 2, 3, 2]);
        let prompts = |seed| generator.fashion(&keywords, 10, Language::Zh, seed).unwrap();
        assert_eq!(prompts(9), prompts(9));
        assert!((10..20).all(|seed| prompts(seed) != prompts(9)));
    }

    #[test]
    fn the_seed_picks_which_combinations_come_first() {
        let generator = PromptGenerator::bundled();
        let keywords = tokens([3, 3, 0, 0, 0]);
        let first_three = |seed| {
            let prompts = generator.fashion(&keywords, 3, Language::En, seed).unwrap();
            let picked = |prompt: &String| {
                keywords
                    .category
                    .iter()
                    .chain(&keywords.trend)
                    .filter(|v| prompt.contains(v.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            prompts.iter().map(picked).collect::<HashSet<_>>()
        };
        assert!((10..20).any(|seed| first_three(seed) != first_three(9)));
    }

    #[test]
    fn wording_varies_within_a_request_and_across_seeds() {
        let generator = PromptGenerator::bundled();
        let prompts = generator.fashion(&tokens([2, 0, 0, 4, 0]), 8, Language::En, 0).unwrap();
        for prefix in ["the photo of ", "the picture of "] {
            assert!(prompts.iter().any(|prompt| prompt.starts_with(prefix)), "no {prefix:?} in {prompts:?}");
        }
        let one_combination = tokens([1, 1, 1, 1, 1]);
        let firsts: HashSet<String> =
            (0..20).map(|seed| generator.fashion(&one_combination, 1, Language::En, seed).unwrap().remove(0)).collect();
        assert!(firsts.len() > 2, "{firsts:?}");
    }

    #[test]
    fn missing_category_uses_the_default_head_noun() {
        let generator = PromptGenerator::bundled();
        let keywords = FashionKeywords { color: vec!["red".into()], ..Default::default() };
        for prompt in generator.fashion(&keywords, 2, Language::En, 0).unwrap() {
            assert!(prompt.contains("outfit") && prompt.contains("red"), "{prompt:?}");
        }
    }

    #[test]
    fn values_are_trimmed_and_repeats_collapse() {
        let generator = PromptGenerator::bundled();
        let repeated = FashionKeywords {
            category: vec![" dress ".into(), "dress".into()],
            color: vec!["red".into(), "red ".into()],
            ..Default::default()
        };
        let single =
            FashionKeywords { category: vec!["dress".into()], color: vec!["red".into()], ..Default::default() };
        assert_eq!(generator.fashion(&repeated, 4, Language::En, 5), generator.fashion(&single, 4, Language::En, 5));
    }

    #[test]
    fn bad_requests_name_their_field() {
        let generator = PromptGenerator::bundled();
        let dress = || FashionKeywords { category: vec!["dress".into()], ..Default::default() };
        let with = |edit: fn(&mut FashionKeywords)| {
            let mut keywords = dress();
            edit(&mut keywords);
            keywords
        };
        let cases = [
            (dress(), 0, "prompts"),
            (dress(), MAX_PROMPTS + 1, "prompts"),
            (FashionKeywords::default(), 1, "keywords"),
            (with(|k| k.color = vec!["red".into(), "  ".into()]), 1, "keywords.color[1]"),
            (with(|k| k.fabric = vec!["x".repeat(MAX_KEYWORD_CHARS + 1)]), 1, "keywords.fabric[0]"),
            (with(|k| k.style = vec!["chic".into(); MAX_VALUES_PER_FIELD + 1]), 1, "keywords.style"),
        ];
        for (keywords, count, field) in cases {
            let error = generator.fashion(&keywords, count, Language::En, 0).unwrap_err();
            assert_eq!(error.field(), field, "{error}");
            assert!(error.to_string().starts_with(&format!("{field}: ")), "{error}");
        }
    }

    #[test]
    fn length_limits_count_characters_not_bytes() {
        let generator = PromptGenerator::bundled();
        let keywords = FashionKeywords { fabric: vec!["丝".repeat(MAX_KEYWORD_CHARS)], ..Default::default() };
        assert!(generator.fashion(&keywords, 1, Language::Zh, 0).is_ok());
    }
}
