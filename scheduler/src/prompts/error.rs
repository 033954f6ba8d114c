//! Errors for prompt requests: each names the request field at fault and says what to change.
//!
//! Design decision: fields are named in the request's own JSON paths (`keywords.color[1]`,
//! `dishes[2].name`) so the HTTP layer can return them as they are.

/// A prompt request the generator rejects; nothing should be enqueued for it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// A number of items (prompts, dishes, values of a field) is outside its allowed range.
    #[error("{field}: got {got}, give {min} to {max}")]
    Count { field: String, got: usize, min: usize, max: usize },
    #[error("keywords: none given; set at least one of category, trend, fabric, color or style")]
    NoKeywords,
    #[error("{field}: empty; give a value or leave it out")]
    Empty { field: String },
    #[error("{field}: {chars} characters; shorten it to at most {max}")]
    TooLong { field: String, chars: usize, max: usize },
    /// Fewer distinct prompts exist than were requested.
    #[error("prompts: {requested} requested, but these keywords give at most {max} distinct prompts; ask for fewer or add keyword values")]
    NotEnoughVariety { requested: usize, max: usize },
    #[error("dishes[{index}]: gives the same prompt as dishes[{first}]; remove it or change its name or keywords")]
    DuplicateDish { index: usize, first: usize },
}

impl PromptError {
    /// The request field at fault, as a JSON path.
    pub fn field(&self) -> String {
        match self {
            PromptError::Count { field, .. } | PromptError::Empty { field } | PromptError::TooLong { field, .. } => {
                field.clone()
            }
            PromptError::NoKeywords => "keywords".to_owned(),
            PromptError::NotEnoughVariety { .. } => "prompts".to_owned(),
            PromptError::DuplicateDish { index, .. } => format!("dishes[{index}]"),
        }
    }
}
