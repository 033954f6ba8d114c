//! Errors of the marking steps; each names the bad value and, where there is a list, the valid ones.
//!
//! One enum for the whole module rather than one per step, because the pipeline treats them alike:
//! all are permanent (a retry on another worker fails the same way), so a job that hits one is
//! dead-lettered, never requeued.

/// Why an image could not be marked or written.
#[derive(Debug, thiserror::Error)]
pub enum MarkingError {
    /// An output format name that is not one of ours.
    #[error("unknown output format {value:?}: expected one of png, jpeg, jpg, webp")]
    UnknownFormat { value: String },

    /// A label corner name that is not one of ours.
    #[error("unknown label corner {value:?}: expected one of top-left, top-right, bottom-left, bottom-right")]
    UnknownCorner { value: String },

    /// A watermark payload of the wrong size.
    #[error("watermark payload is {len} bytes: it must be 1 to {max} bytes")]
    PayloadLength { len: usize, max: usize },

    /// An extra provenance key that cannot be a PNG text keyword.
    #[error("provenance key {key:?} cannot be written: {reason}")]
    InvalidMetadataKey { key: String, reason: &'static str },

    /// The XMP packet does not fit JPEG's single APP1 segment (PNG and WebP have no such limit).
    #[error(
        "the XMP packet is {len} bytes, more than the {max} a JPEG APP1 segment holds: \
         shorten the prompt or the model name"
    )]
    XmpTooLargeForJpeg { len: usize, max: usize },

    /// Image dimensions the format cannot store.
    #[error("a {width}x{height} image cannot be written as {format}: at most {max} pixels a side")]
    TooLargeForFormat { width: u32, height: u32, max: u32, format: &'static str },

    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),

    #[error("JPEG encoding failed: {0}")]
    Jpeg(#[from] jpeg_encoder::EncodingError),

    #[error("WebP encoding failed: {0}")]
    Webp(#[from] image_webp::EncodingError),
}
