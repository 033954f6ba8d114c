//! The denoising U-Net: `sample [B,4,h,w]`, `timestep`, `encoder_hidden_states [B,L,H]` →
//! `out_sample [B,4,h,w]`.
//!
//! The output is handed to the caller as a borrowed view of ONNX Runtime's buffer instead of being
//! copied out: classifier-free guidance reads it once, so a copy per step would be pure waste.

use std::path::Path;

use ndarray::{ArrayView3, ArrayView4};
use ort::session::Session;
use ort::value::{DynTensor, Tensor, TensorElementType, TensorRef};

use super::{expect, expect_batch, input, output};
use crate::error::{EngineError, Result};
use crate::runtime::{Part, Runtime};

/// How the graph wants its timestep: exports use every combination of these.
#[derive(Debug, Clone, Copy)]
enum TimestepShape {
    Scalar,
    /// `[1]`, broadcast over the batch inside the graph.
    One,
    /// `[B]` (or dynamic), one value per batch row.
    Batch,
}

pub struct Unet {
    session: Session,
    timestep_element: TensorElementType,
    timestep_shape: TimestepShape,
    output_name: String,
    fixed_batch: Option<usize>,
}

impl Unet {
    /// `batch` is the batch the pipeline will feed (2 with classifier-free guidance).
    pub fn load(runtime: &Runtime, path: &Path, batch: usize) -> Result<Self> {
        let session = runtime.session(path, Part::Unet)?;
        let sample = input(&session, path, "sample")?;
        expect(path, &sample, &[TensorElementType::Float32], 4)?;
        expect_batch(path, &sample, batch)?;
        let fixed_batch = sample.shape.first().and_then(|&d| usize::try_from(d).ok());
        let hidden = input(&session, path, "encoder_hidden_states")?;
        expect(path, &hidden, &[TensorElementType::Float32], 3)?;
        let timestep = input(&session, path, "timestep")?;
        let elements = [
            TensorElementType::Int64,
            TensorElementType::Int32,
            TensorElementType::Float32,
            TensorElementType::Float64,
        ];
        let timestep_shape = match timestep.shape.as_slice() {
            [] => TimestepShape::Scalar,
            [1] => TimestepShape::One,
            [_] => TimestepShape::Batch,
            _ => {
                return Err(EngineError::contract(
                    path,
                    format!("`timestep` has shape {:?}; expected a scalar, [1] or [B]", timestep.shape),
                ))
            }
        };
        expect(path, &timestep, &elements, timestep.rank())?;
        let out = output(&session, path, "out_sample")?;
        expect(path, &out, &[TensorElementType::Float32], 4)?;
        Ok(Self { session, timestep_element: timestep.element, timestep_shape, output_name: out.name, fixed_batch })
    }

    /// The batch size the graph was exported with, or `None` when its batch axis is dynamic (then
    /// several images can share one call).
    pub fn fixed_batch(&self) -> Option<usize> {
        self.fixed_batch
    }

    /// Runs one denoising call and passes the prediction to `consume` without copying it.
    pub fn predict(
        &mut self,
        sample: ArrayView4<f32>,
        timestep: f32,
        hidden: ArrayView3<f32>,
        consume: &mut dyn FnMut(ArrayView4<f32>),
    ) -> Result<()> {
        let fail = |e: ort::Error| EngineError::inference("U-Net", e);
        let timestep_value = self.timestep_value(timestep, sample.shape()[0]).map_err(fail)?;
        let inputs = ort::inputs![
            "sample" => TensorRef::from_array_view(sample).map_err(fail)?,
            "timestep" => timestep_value,
            "encoder_hidden_states" => TensorRef::from_array_view(hidden).map_err(fail)?,
        ];
        let outputs = self.session.run(inputs).map_err(fail)?;
        let prediction = outputs[self.output_name.as_str()].try_extract_array::<f32>().map_err(fail)?;
        let prediction = prediction
            .into_dimensionality::<ndarray::Ix4>()
            .map_err(|e| EngineError::inference("U-Net", format!("output is not [B, C, h, w]: {e}")))?;
        if prediction.shape() != sample.shape() {
            return Err(EngineError::inference(
                "U-Net",
                format!("output shape {:?} differs from the sample's {:?}", prediction.shape(), sample.shape()),
            ));
        }
        consume(prediction);
        Ok(())
    }

    fn timestep_value(&self, timestep: f32, batch: usize) -> ort::Result<DynTensor> {
        let shape: Vec<usize> = match self.timestep_shape {
            TimestepShape::Scalar => vec![],
            TimestepShape::One => vec![1],
            TimestepShape::Batch => vec![batch],
        };
        let count = shape.iter().product::<usize>().max(1);
        // Integer graphs get the value truncated, as numpy's `astype` does in diffusers' ONNX pipeline.
        Ok(match self.timestep_element {
            TensorElementType::Int64 => Tensor::from_array((shape, vec![timestep as i64; count]))?.upcast(),
            TensorElementType::Int32 => Tensor::from_array((shape, vec![timestep as i32; count]))?.upcast(),
            TensorElementType::Float64 => Tensor::from_array((shape, vec![f64::from(timestep); count]))?.upcast(),
            _ => Tensor::from_array((shape, vec![timestep; count]))?.upcast(),
        })
    }
}
