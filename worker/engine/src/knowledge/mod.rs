//! Knowledge-enhanced prompts (paper §3.1.1): an entity token's input representation is
//! e = e_txt + e_kg, where e_kg is the entity's TransE embedding. The engine links entities in the
//! prompt ([`linker`]), maps them onto token spans with the tokenizer's offsets, and feeds the
//! text encoder an `entity_embeds [B, L, H]` input that its export adds to the token embeddings.
//!
//! A model's `knowledge/` folder:
//! - `entities.txt` — one entity name per line, the row order of the vectors (what `rapid-transe`
//!   writes);
//! - `entity_vectors.npy` — float32 `[N, D]` TransE entity vectors;
//! - `aliases.tsv` — optional `alias<TAB>entity` lines (Chinese and English surface forms);
//! - `projection.npy` — float32 `[D, H]` mapping TransE space to the text encoder's width, required
//!   when D ≠ H.
//!
//! Everything is checked at load time against the text encoder's width, so a mismatched file names
//! itself when the worker starts rather than mid-job.

pub mod linker;

use std::path::Path;

use ndarray::{Array2, Array3, ArrayView1};

use self::linker::{EntityLinker, Mention};
use crate::error::{EngineError, Result};

/// An entity found in a prompt, as reported in outputs (`--explain`, job state, PNG text chunk).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LinkedEntity {
    /// The entity's name in the knowledge graph.
    pub entity: String,
    /// The prompt text that named it.
    pub text: String,
    /// Byte range of `text` in the prompt.
    pub start: usize,
    pub end: usize,
    /// Positions (in the text encoder's input) that received the entity's embedding.
    pub tokens: Vec<usize>,
}

pub struct KnowledgeBase {
    entities: Vec<String>,
    /// `[N, H]`: TransE vectors already projected to the text encoder's width.
    vectors: Array2<f32>,
    linker: EntityLinker,
}

impl KnowledgeBase {
    /// Loads `dir` for a text encoder of width `hidden`.
    pub fn load(dir: &Path, hidden: usize) -> Result<Self> {
        let names_path = dir.join("entities.txt");
        let names = std::fs::read_to_string(&names_path)
            .map_err(|e| EngineError::bad_file(&names_path, format!("cannot read: {e}")))?;
        let entities: Vec<String> = names.lines().map(|l| l.trim().to_owned()).collect();
        if entities.is_empty() || entities.iter().any(String::is_empty) {
            return Err(EngineError::bad_file(&names_path, "needs one non-empty entity name per line"));
        }
        let vectors_path = dir.join("entity_vectors.npy");
        let vectors: Array2<f32> = read_npy(&vectors_path, "float32 [entities, dim]")?;
        if vectors.nrows() != entities.len() {
            return Err(EngineError::bad_file(
                &vectors_path,
                format!(
                    "has {} rows but entities.txt names {} entities; they must come from the same training run",
                    vectors.nrows(),
                    entities.len()
                ),
            ));
        }
        let vectors = project(dir, vectors, hidden)?;
        let aliases = read_aliases(&dir.join("aliases.tsv"), &entities)?;
        let linker = EntityLinker::new(&entities, &aliases);
        Ok(Self { entities, vectors, linker })
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    pub fn mentions(&self, text: &str) -> Vec<Mention> {
        self.linker.find(text)
    }

    pub fn vector(&self, entity: usize) -> ArrayView1<'_, f32> {
        self.vectors.row(entity)
    }

    /// Adds e_kg to every token row of `embeds[row]` whose offsets overlap a mention in `text`, and
    /// says which entities it linked. `offsets[i]` is token i's byte range in `text` (`None` for
    /// special and padding tokens).
    pub fn inject(
        &self,
        text: &str,
        offsets: &[Option<(usize, usize)>],
        embeds: &mut Array3<f32>,
        row: usize,
    ) -> Vec<LinkedEntity> {
        let mut linked = Vec::new();
        for mention in self.mentions(text) {
            let tokens: Vec<usize> = offsets
                .iter()
                .enumerate()
                .filter_map(|(i, span)| span.filter(|&(s, e)| s < mention.end && e > mention.start).map(|_| i))
                .collect();
            // A mention cut off by truncation has no tokens left to carry it.
            if tokens.is_empty() {
                continue;
            }
            let vector = self.vector(mention.entity);
            for &token in &tokens {
                let mut target = embeds.slice_mut(ndarray::s![row, token, ..]);
                target += &vector;
            }
            linked.push(LinkedEntity {
                entity: self.entities[mention.entity].clone(),
                text: text[mention.start..mention.end].to_owned(),
                start: mention.start,
                end: mention.end,
                tokens,
            });
        }
        linked
    }
}

fn read_npy<D: ndarray::Dimension>(path: &Path, what: &str) -> Result<ndarray::Array<f32, D>> {
    let file = std::fs::File::open(path).map_err(|e| EngineError::bad_file(path, format!("cannot open: {e}")))?;
    ndarray_npy::ReadNpyExt::read_npy(file)
        .map_err(|e| EngineError::bad_file(path, format!("not a {what} .npy array: {e}")))
}

/// Maps `[N, D]` vectors to the encoder width `H` with `projection.npy` (`[D, H]`), which must be
/// there when D ≠ H and must fit when present.
fn project(dir: &Path, vectors: Array2<f32>, hidden: usize) -> Result<Array2<f32>> {
    let path = dir.join("projection.npy");
    let dim = vectors.ncols();
    if !path.exists() {
        if dim == hidden {
            return Ok(vectors);
        }
        return Err(EngineError::MissingFile {
            path,
            hint: "the entity vectors' width differs from the text encoder's; ship a float32 [dim, hidden] projection",
        });
    }
    let projection: Array2<f32> = read_npy(&path, "float32 [dim, hidden]")?;
    if projection.dim() != (dim, hidden) {
        return Err(EngineError::bad_file(
            &path,
            format!(
                "has shape {:?} but must be [{dim}, {hidden}] (entity vector width × text encoder width)",
                projection.shape()
            ),
        ));
    }
    Ok(vectors.dot(&projection))
}

/// `alias<TAB>entity` pairs; every entity must be one `entities.txt` names.
fn read_aliases(path: &Path, entities: &[String]) -> Result<Vec<(String, usize)>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::bad_file(path, format!("cannot read: {e}")))?;
    let index: std::collections::HashMap<&str, usize> =
        entities.iter().enumerate().map(|(i, name)| (name.as_str(), i)).collect();
    let mut aliases = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |message: String| EngineError::bad_file(path, format!("line {}: {message}", number + 1));
        let (alias, entity) = line.split_once('\t').ok_or_else(|| at("expected `alias<TAB>entity`".into()))?;
        let entity = *index.get(entity.trim()).ok_or_else(|| at(format!("`{entity}` is not in entities.txt")))?;
        if alias.trim().is_empty() {
            return Err(at("empty alias".into()));
        }
        aliases.push((alias.trim().to_owned(), entity));
    }
    Ok(aliases)
}
