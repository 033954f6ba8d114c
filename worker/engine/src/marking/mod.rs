//! Marking every image "AI-generated": visible label, provenance metadata, invisible watermark.
//!
//! The design decision a newcomer will question: marking is three free functions over a plain
//! `RgbImage`, not a `Marker` object holding options, because each step has one input and one
//! output and the pipeline must call them in a fixed order:
//!
//! 1. [`draw_label`] — the visible label (the CLI may skip it for reference comparisons);
//! 2. [`watermark::embed`] — after the label, so the label's pixels carry the watermark too and no
//!    later drawing disturbs it;
//! 3. [`encode`] — the file bytes, with PNG text chunks and XMP (IPTC `DigitalSourceType`
//!    `trainedAlgorithmicMedia`).
//!
//! Every error is permanent: the same image and provenance fail the same way on any worker.

mod encode;
mod error;
mod visible;
pub mod watermark;
mod xmp;

pub use encode::{encode, OutputFormat, Provenance};
pub use error::MarkingError;
pub use visible::{draw_label, Corner, LabelOptions};

/// The bytes the fleet embeds as the invisible watermark: ASCII "RapidD", 48 bits, the most
/// [`watermark::embed`] accepts. Read it back with invisible-watermark's
/// `WatermarkDecoder('bytes', 48).decode(bgr, 'dwtDctSvd')` (or `tests/watermark/decode_watermark.py`),
/// which prints `526170696444`.
pub const DEFAULT_WATERMARK_PAYLOAD: &[u8; 6] = b"RapidD";
