//! From pipeline pixels to the bytes that leave the engine: quantise, mark "AI-generated",
//! encode with provenance.
//!
//! One function for the CLI and the fleet alike, so no path can produce an unmarked image by
//! accident; only the visible label is optional (for reference comparisons), never the metadata or
//! the invisible watermark.

use std::time::Instant;

use ndarray::Array3;

use crate::error::Result;
use crate::marking::watermark::{self, WatermarkOutcome};
use crate::marking::{self, LabelOptions, OutputFormat, Provenance};
use crate::pipeline::to_rgb8;

/// How to mark one image.
#[derive(Debug, Clone)]
pub struct MarkOptions {
    /// `None` skips the visible label (CLI `--no-visible-mark` only; the fleet always draws it).
    pub label: Option<LabelOptions>,
    /// At most 48 bits, recoverable with invisible-watermark's `dwtDctSvd` decoder.
    pub watermark_payload: Vec<u8>,
}

impl Default for MarkOptions {
    fn default() -> Self {
        Self { label: Some(LabelOptions::default()), watermark_payload: marking::DEFAULT_WATERMARK_PAYLOAD.to_vec() }
    }
}

/// The encoded file and what marking did.
#[derive(Debug, Clone)]
pub struct EncodedImage {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub watermark: WatermarkOutcome,
    pub mark_ms: f64,
    pub encode_ms: f64,
}

pub fn mark_and_encode(
    image: &Array3<f32>,
    format: OutputFormat,
    options: &MarkOptions,
    provenance: &Provenance,
) -> Result<EncodedImage> {
    let t = Instant::now();
    let mut rgb = to_rgb8(image);
    if let Some(label) = &options.label {
        marking::draw_label(&mut rgb, label);
    }
    // The watermark goes last so the label's pixels carry it too.
    let watermark = watermark::embed(&mut rgb, &options.watermark_payload)?;
    let mark_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let bytes = marking::encode(&rgb, format, provenance)?;
    let encode_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(EncodedImage { bytes, width: rgb.width(), height: rgb.height(), watermark, mark_ms, encode_ms })
}
