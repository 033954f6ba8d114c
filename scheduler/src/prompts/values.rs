//! Validation of user-supplied keyword values, shared by fashion and cuisine requests.
//!
//! Design decision: lengths count characters, not bytes, so a Chinese keyword gets the same limit as an
//! English one.

use super::{PromptError, MAX_KEYWORD_CHARS};

/// Checks that `count` items of `field` lie in `min..=max`.
pub(super) fn check_count(field: &str, count: usize, min: usize, max: usize) -> Result<(), PromptError> {
    if (min..=max).contains(&count) {
        return Ok(());
    }
    Err(PromptError::Count { field: field.to_owned(), got: count, min, max })
}

/// The trimmed `value`, which must be non-empty and at most `MAX_KEYWORD_CHARS` characters.
pub(super) fn keyword(value: &str, field: impl FnOnce() -> String) -> Result<&str, PromptError> {
    let value = value.trim();
    match value.chars().count() {
        0 => Err(PromptError::Empty { field: field() }),
        chars if chars > MAX_KEYWORD_CHARS => {
            Err(PromptError::TooLong { field: field(), chars, max: MAX_KEYWORD_CHARS })
        }
        _ => Ok(value),
    }
}

/// The values of list `field`, at most `max` of them, each a valid keyword; repeats collapse to the first.
pub(super) fn distinct_keywords<'a>(
    values: &'a [String],
    field: &str,
    max: usize,
) -> Result<Vec<&'a str>, PromptError> {
    check_count(field, values.len(), 0, max)?;
    let mut distinct = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let value = keyword(value, || format!("{field}[{i}]"))?;
        if !distinct.contains(&value) {
            distinct.push(value);
        }
    }
    Ok(distinct)
}
