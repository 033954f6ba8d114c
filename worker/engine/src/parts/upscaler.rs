//! The ESRGAN upscaler: RGB `[1,3,H,W]` in [0,1] → `[1,3,4H,4W]`, run in overlapping tiles.
//!
//! Tiles bound the memory one call needs (a 1024×1024 output never exists inside ONNX Runtime at
//! once) and, on CPU, are faster than the whole image because a tile's activations stay in cache
//! (FIELD-NOTES.md). Each tile is run with `overlap` extra input pixels on every side and only its
//! core is kept, so the seams see almost the context the whole image would give them.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use ndarray::{s, Array3, Array4, ArrayView3, ArrayView4, Axis};
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
    /// Measured on the paper's RRDBNet (nf 64, nb 23), 256 → 1024, one thread (deploy/bench/speed/RESULTS.md):
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
        for patch in patches(height, width, tiling) {
            let input = image.slice(s![.., patch.input_y.clone(), patch.input_x.clone()]).to_owned();
            let (top, left) = (patch.input_y.start, patch.input_x.start);
            // The core is copied straight out of ONNX Runtime's output buffer.
            self.run(input.insert_axis(Axis(0)).view(), &mut |up| {
                let core = up.slice(s![
                    0,
                    ..,
                    (patch.core_y.start - top) * scale..(patch.core_y.end - top) * scale,
                    (patch.core_x.start - left) * scale..(patch.core_x.end - left) * scale
                ]);
                let (y, x) = (&patch.core_y, &patch.core_x);
                result.slice_mut(s![.., y.start * scale..y.end * scale, x.start * scale..x.end * scale]).assign(&core);
            })?;
        }
        Ok(result)
    }

    /// Runs the network once on every input shape that upscaling a `height`×`width` image in
    /// `tiling` feeds it (one shape for the default 128-px tiles of a 256-px image), on zeros: a
    /// session's first call with a shape is its slow one (Pipeline::warm_up).
    pub fn warm_up(&mut self, height: usize, width: usize, tiling: Tiling) -> Result<()> {
        let shapes: BTreeSet<(usize, usize)> =
            patches(height, width, tiling).map(|p| (p.input_y.len(), p.input_x.len())).collect();
        for (h, w) in shapes {
            self.run(Array4::<f32>::zeros((1, 3, h, w)).view(), &mut |_| {})?;
        }
        Ok(())
    }

    /// One call on a `[1, 3, h, w]` input; its output, checked to be ×`scale`, goes to `consume`.
    fn run(&mut self, input: ArrayView4<f32>, consume: &mut dyn FnMut(ArrayView4<f32>)) -> Result<()> {
        let fail = |e: ort::Error| EngineError::inference("upscaler", e);
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => TensorRef::from_array_view(input).map_err(fail)?])
            .map_err(fail)?;
        let up = outputs[self.output_name.as_str()].try_extract_array::<f32>().map_err(fail)?;
        let (_, channels, h, w) = input.dim();
        let expected = [1, channels, h * self.scale, w * self.scale];
        if up.shape() != expected {
            return Err(EngineError::inference(
                "upscaler",
                format!("output shape {:?}, expected {expected:?} (the upscaler must be ×{})", up.shape(), self.scale),
            ));
        }
        consume(up.into_dimensionality().expect("rank checked above"));
        Ok(())
    }
}

/// One tile, in input pixels: the region run through the network (core plus context, clipped to
/// the image) and the core kept from its output.
struct Patch {
    input_y: Range<usize>,
    input_x: Range<usize>,
    core_y: Range<usize>,
    core_x: Range<usize>,
}

/// The tiles covering a `height`×`width` image, row by row.
fn patches(height: usize, width: usize, tiling: Tiling) -> impl Iterator<Item = Patch> {
    let tile = if tiling.tile == 0 { height.max(width) } else { tiling.tile };
    (0..height).step_by(tile.max(1)).flat_map(move |y0| {
        (0..width).step_by(tile.max(1)).map(move |x0| {
            let (y1, x1) = ((y0 + tile).min(height), (x0 + tile).min(width));
            Patch {
                input_y: y0.saturating_sub(tiling.overlap)..(y1 + tiling.overlap).min(height),
                input_x: x0.saturating_sub(tiling.overlap)..(x1 + tiling.overlap).min(width),
                core_y: y0..y1,
                core_x: x0..x1,
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_cores_cover_the_image_once() {
        for (height, width, tiling) in [
            (256, 256, Tiling::default()),
            (200, 72, Tiling { tile: 64, overlap: 16 }),
            (40, 56, Tiling { tile: 0, overlap: 8 }),
        ] {
            let mut seen = vec![0u8; height * width];
            for patch in patches(height, width, tiling) {
                assert!(patch.input_y.start <= patch.core_y.start && patch.core_y.end <= patch.input_y.end);
                assert!(patch.input_x.start <= patch.core_x.start && patch.core_x.end <= patch.input_x.end);
                assert!(patch.input_y.end <= height && patch.input_x.end <= width);
                for y in patch.core_y.clone() {
                    patch.core_x.clone().for_each(|x| seen[y * width + x] += 1);
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{height}×{width} {tiling:?}: a pixel is covered 0 or 2+ times");
        }
    }

    #[test]
    fn the_default_tiles_of_a_256_px_image_share_one_input_shape() {
        let shapes: BTreeSet<_> =
            patches(256, 256, Tiling::default()).map(|p| (p.input_y.len(), p.input_x.len())).collect();
        assert_eq!(shapes.into_iter().collect::<Vec<_>>(), [(136, 136)], "so a warm-up needs one call");
    }
}
