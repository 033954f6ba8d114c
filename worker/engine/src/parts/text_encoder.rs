//! The text encoder: token ids `[B, L]` → hidden states `[B, L, H]`.
//!
//! The prompt and the negative prompt go through in one call as a batch of two; BERT and CLIP
//! encode each row independently, so this equals two separate calls while paying the per-call
//! overhead once.

use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3};
use ort::session::Session;
use ort::value::{Tensor, TensorElementType};

use super::{expect, input, optional_input, output};
use crate::error::{EngineError, Result};
use crate::runtime::{Part, Runtime};

pub struct TextEncoder {
    session: Session,
    path: PathBuf,
    ids_element: TensorElementType,
    output_name: String,
    /// Context length when the graph fixes it; `None` when dynamic.
    context_length: Option<usize>,
    /// Set when the graph takes knowledge-graph entity embeddings (`knowledge` module).
    entity_embeds: Option<String>,
}

impl TextEncoder {
    pub fn load(runtime: &Runtime, path: &Path) -> Result<Self> {
        let session = runtime.session(path, Part::TextEncoder)?;
        let ids = input(&session, path, "input_ids")?;
        expect(path, &ids, &[TensorElementType::Int64, TensorElementType::Int32], 2)?;
        let out = output(&session, path, "last_hidden_state")?;
        expect(path, &out, &[TensorElementType::Float32], 3)?;
        let entity_embeds = optional_input(&session, path, "entity_embeds")?;
        if let Some(spec) = &entity_embeds {
            expect(path, spec, &[TensorElementType::Float32], 3)?;
        }
        let context_length = usize::try_from(ids.shape[1]).ok();
        Ok(Self {
            session,
            path: path.to_path_buf(),
            ids_element: ids.element,
            output_name: out.name,
            context_length,
            entity_embeds: entity_embeds.map(|s| s.name),
        })
    }

    pub fn context_length(&self) -> Option<usize> {
        self.context_length
    }

    /// Whether the graph takes `entity_embeds` (a knowledge-enabled export).
    pub fn takes_entity_embeds(&self) -> bool {
        self.entity_embeds.is_some()
    }

    /// Encodes a batch of equally long id rows. `entity_embeds` (`[B, L, H]`) is added to the token
    /// embeddings by graphs that take it; such a graph gets zeros when none is given, which the
    /// export makes identical to the plain encoder.
    pub fn encode(&mut self, ids: &Array2<i64>, entity_embeds: Option<Array3<f32>>) -> Result<Array3<f32>> {
        let fail = |e: ort::Error| EngineError::inference("text encoder", e);
        let ids_value = match self.ids_element {
            TensorElementType::Int32 => Tensor::from_array(ids.mapv(|id| id as i32)).map_err(fail)?.into_dyn(),
            _ => Tensor::from_array(ids.clone()).map_err(fail)?.into_dyn(),
        };
        let mut inputs = ort::inputs!["input_ids" => ids_value];
        if let Some(name) = &self.entity_embeds {
            let embeds = match entity_embeds {
                Some(embeds) => embeds,
                None => Array3::<f32>::zeros((ids.nrows(), ids.ncols(), self.hidden_size()?)),
            };
            inputs.push((name.clone().into(), Tensor::from_array(embeds).map_err(fail)?.into_dyn().into()));
        }
        let outputs = self.session.run(inputs).map_err(fail)?;
        let hidden = outputs[self.output_name.as_str()].try_extract_array::<f32>().map_err(fail)?;
        hidden
            .into_dimensionality::<ndarray::Ix3>()
            .map(|view| view.to_owned())
            .map_err(|e| EngineError::inference("text encoder", format!("output is not [B, L, H]: {e}")))
    }

    /// The width H of the hidden states, from the graph's output shape.
    pub fn hidden_size(&self) -> Result<usize> {
        let spec = output(&self.session, &self.path, &self.output_name)?;
        usize::try_from(spec.shape[2]).map_err(|_| {
            EngineError::contract(
                &self.path,
                "the output `last_hidden_state` needs a fixed hidden size (its last dimension) for entity embeddings",
            )
        })
    }
}
