//! The ESRGAN upscaler: RGB `[1,3,H,W]` in [0,1] → `[1,3,4H,4W]`, run in overlapping tiles.
//!
//! Tiles bound the memory one call needs (a 1024×1024 output never exists inside ONNX Runtime at
//! once) and, on CPU, are faster than the whole image because a tile's activations stay in cache
//! (FIELD-NOTES.md). Each tile is run with `overlap` extra input pixels on every side and only its
//! core is kept, so the seams see almost the context the whole image would give them.

use std::path::Path;

use ndarray::{s, Array3, ArrayView3};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};

use super::{expect, input, output};
use crate::error::{EngineError, Result};
use crate::runtime::{Part, Runtime};

/// Tile geometry in input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Side of a tile's core; 0 runs the whole image in one call.
    pub tile: usize,
    /// Context pixels added on each side of a tile and discarded after the call.
    pub overlap: usize,
}

impl Default for Tiling {
    /// Measured on the paper's RRDBNet (nf 64, nb 23), 256 → 1024, one thread (deploy/bench/RESULTS.md):
    /// whole image 25.6 s; 64-px tiles with 16/8/4 px of context 42.6/31.7/26.8 s (the context is
    /// recomputed work: (64+2·16)² is 2.25× a tile's own area); 128-px tiles with 8 px 27.5 s. The
    /// 4-px context breaks the 1/255 agreement with the whole image (up to 20 levels off); 8 px
    /// keeps it (at most 1 level). So: 128 px with 8 px of context, 7% over the whole image while
    /// never holding more than a 576-px output in one call.
    fn default() -> Self {
        Self { tile: 128, overlap: 8 }
    }
}

pub struct Upscaler {
    session: Session,
    input_name: String,
    output_name: String,
    scale: usize,
}

impl Upscaler {
    pub fn load(runtime: &Runtime, path: &Path) -> Result<Self> {
        let session = runtime.session(path, Part::Upscaler)?;
        let first = session
            .inputs()
            .first()
            .map(|i| i.name().to_owned())
            .ok_or_else(|| EngineError::contract(path, "has no inputs"))?;
        let image = input(&session, path, &first)?;
        expect(path, &image, &[TensorElementType::Float32], 4)?;
        let out = output(&session, path, "output")?;
        expect(path, &out, &[TensorElementType::Float32], 4)?;
        Ok(Self { session, input_name: image.name, output_name: out.name, scale: 4 })
    }

    pub fn scale(&self) -> usize {
        self.scale
    }

    /// Upscales a `[3, H, W]` image in [0, 1].
    pub fn upscale(&mut self, image: ArrayView3<f32>, tiling: Tiling) -> Result<Array3<f32>> {
        let (channels, height, width) = image.dim();
        let scale = self.scale;
        let mut result = Array3::<f32>::zeros((channels, height * scale, width * scale));
        let tile = if tiling.tile == 0 { height.max(width) } else { tiling.tile };
        for y0 in (0..height).step_by(tile) {
            for x0 in (0..width).step_by(tile) {
                let (y1, x1) = ((y0 + tile).min(height), (x0 + tile).min(width));
                let (in_y0, in_x0) = (y0.saturating_sub(tiling.overlap), x0.saturating_sub(tiling.overlap));
                let (in_y1, in_x1) = ((y1 + tiling.overlap).min(height), (x1 + tiling.overlap).min(width));
                let patch = image.slice(s![.., in_y0..in_y1, in_x0..in_x1]).to_owned().insert_axis(ndarray::Axis(0));
                let fail = |e: ort::Error| EngineError::inference("upscaler", e);
                let outputs = self
                    .session
                    .run(ort::inputs![self.input_name.as_str() => TensorRef::from_array_view(patch.view()).map_err(fail)?])
                    .map_err(fail)?;
                let up = outputs[self.output_name.as_str()].try_extract_array::<f32>().map_err(fail)?;
                let expected = [1, channels, (in_y1 - in_y0) * scale, (in_x1 - in_x0) * scale];
                if up.shape() != expected {
                    return Err(EngineError::inference(
                        "upscaler",
                        format!("output shape {:?}, expected {expected:?} (the upscaler must be ×{scale})", up.shape()),
                    ));
                }
                let core = up.slice(s![
                    0,
                    ..,
                    (y0 - in_y0) * scale..(y1 - in_y0) * scale,
                    (x0 - in_x0) * scale..(x1 - in_x0) * scale
                ]);
                result.slice_mut(s![.., y0 * scale..y1 * scale, x0 * scale..x1 * scale]).assign(&core);
            }
        }
        Ok(result)
    }
}
