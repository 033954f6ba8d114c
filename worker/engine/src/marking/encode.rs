//! The marked image as file bytes: PNG with provenance text chunks and XMP, JPEG and WebP with XMP.
//!
//! The design decision a newcomer will question: each format goes through its own encoder crate
//! (`png`, `jpeg-encoder`, `image-webp`) rather than through `image::write_to`, because `image`'s
//! encoders cannot add text chunks or XMP; these three write the metadata containers themselves
//! (iTXt, APP1, VP8X + `XMP ` chunk), so no container bytes are spliced by hand. All three are
//! deterministic: the same pixels and provenance give the same bytes, which reproducibility tests
//! compare (the crate versions are pinned by Cargo.lock).

use std::str::FromStr;

use image::RgbImage;

use super::{xmp, MarkingError};

/// JPEG quality: the watermark is tested to survive a re-encode at 90, and at 90 `jpeg-encoder`
/// keeps chroma at full resolution, where the watermark lives.
const JPEG_QUALITY: u8 = 90;
/// JPEG stores each side in 16 bits.
const JPEG_MAX_SIDE: u32 = u16::MAX as u32;
/// WebP lossless stores each side minus one in 14 bits.
const WEBP_MAX_SIDE: u32 = 1 << 14;
/// The APP1 identifier that marks XMP in JPEG (XMP specification part 3, "JPEG").
const JPEG_XMP_NAMESPACE: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
/// A JPEG segment's 16-bit length counts its own two bytes.
const JPEG_SEGMENT_MAX: usize = u16::MAX as usize - 2;
/// The iTXt keyword that marks XMP in PNG (XMP specification part 3, "PNG").
const PNG_XMP_KEYWORD: &str = "XML:com.adobe.xmp";

/// PNG text keywords of the fixed provenance fields, in the order they are written.
const MODEL: &str = "Model";
const SEED: &str = "Seed";
const STEPS: &str = "Steps";
const SAMPLER: &str = "Sampler";
const PROMPT: &str = "Prompt";
const NEGATIVE_PROMPT: &str = "Negative prompt";
/// Keywords an extra field may not reuse, so each key appears once per file.
const RESERVED_KEYWORDS: [&str; 7] = [MODEL, SEED, STEPS, SAMPLER, PROMPT, NEGATIVE_PROMPT, PNG_XMP_KEYWORD];

/// The file format of the final image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Lossless, with every provenance field; the format reproducibility tests compare.
    Png,
    /// Quality 90, with the XMP packet only.
    Jpeg,
    /// Lossless, with the XMP packet only.
    Webp,
}

impl OutputFormat {
    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }
}

impl FromStr for OutputFormat {
    type Err = MarkingError;

    /// Parses `png`, `jpeg` (or `jpg`) or `webp`, in any ASCII case, so file extensions such as
    /// `.JPG` parse too.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "png" => Ok(Self::Png),
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            "webp" => Ok(Self::Webp),
            _ => Err(MarkingError::UnknownFormat { value: value.to_owned() }),
        }
    }
}

/// How an image was made, written into the file next to the AI-generated marking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub model: String,
    pub seed: u64,
    pub steps: u32,
    pub sampler: String,
    pub prompt: String,
    pub negative_prompt: String,
    /// More PNG text fields, written in order after the fixed ones. Keys must be valid PNG
    /// keywords (1 to 79 printable Latin-1 characters, no leading, trailing or double spaces) and
    /// must not reuse a fixed field's keyword.
    pub extra: Vec<(String, String)>,
}

/// Encodes `image` as `format` with `provenance`: a PNG gets text chunks for every field plus the
/// XMP packet; JPEG and WebP get the XMP packet (DigitalSourceType, model, prompt).
pub fn encode(image: &RgbImage, format: OutputFormat, provenance: &Provenance) -> Result<Vec<u8>, MarkingError> {
    let packet = xmp::packet(provenance);
    match format {
        OutputFormat::Png => encode_png(image, provenance, packet),
        OutputFormat::Jpeg => encode_jpeg(image, &packet),
        OutputFormat::Webp => encode_webp(image, packet),
    }
}

fn encode_png(image: &RgbImage, provenance: &Provenance, packet: String) -> Result<Vec<u8>, MarkingError> {
    for (key, _) in &provenance.extra {
        check_keyword(key)?;
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Balanced);
    let fixed = [
        (MODEL, provenance.model.as_str()),
        (SEED, &provenance.seed.to_string()),
        (STEPS, &provenance.steps.to_string()),
        (SAMPLER, &provenance.sampler),
        (PROMPT, &provenance.prompt),
        (NEGATIVE_PROMPT, &provenance.negative_prompt),
    ];
    let extra = provenance.extra.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (keyword, value) in fixed.into_iter().chain(extra) {
        add_text(&mut encoder, keyword, value)?;
    }
    encoder.add_itxt_chunk(PNG_XMP_KEYWORD.to_owned(), packet)?;
    let mut writer = encoder.write_header()?;
    writer.write_image_data(image.as_raw())?;
    writer.finish()?;
    Ok(out)
}

/// Adds one text field. tEXt is Latin-1 and read by every tool, iTXt is UTF-8 but skipped by some
/// older readers; so printable ASCII goes in tEXt and anything else (a Chinese prompt, accents,
/// control characters) in uncompressed iTXt. NUL, which would end the field, becomes U+FFFD.
fn add_text<W: std::io::Write>(
    encoder: &mut png::Encoder<'_, W>,
    keyword: &str,
    value: &str,
) -> Result<(), MarkingError> {
    let value = value.replace('\0', "\u{fffd}");
    if value.chars().all(|c| c == '\n' || (' '..='~').contains(&c)) {
        encoder.add_text_chunk(keyword.to_owned(), value)?;
    } else {
        encoder.add_itxt_chunk(keyword.to_owned(), value)?;
    }
    Ok(())
}

/// Checks an extra field's key against the PNG keyword rules (PNG specification, 11.3.4.2), which
/// the `png` crate checks only for length.
fn check_keyword(key: &str) -> Result<(), MarkingError> {
    let reason = if key.is_empty() || key.chars().count() > 79 {
        "a PNG keyword has 1 to 79 characters"
    } else if !key.chars().all(|c| matches!(c, ' '..='~' | '\u{a1}'..='\u{ff}')) {
        "a PNG keyword has only printable Latin-1 characters"
    } else if key.starts_with(' ') || key.ends_with(' ') || key.contains("  ") {
        "a PNG keyword has no leading, trailing or consecutive spaces"
    } else if RESERVED_KEYWORDS.contains(&key) {
        "it is the keyword of a fixed provenance field"
    } else {
        return Ok(());
    };
    Err(MarkingError::InvalidMetadataKey { key: key.to_owned(), reason })
}

fn encode_jpeg(image: &RgbImage, packet: &str) -> Result<Vec<u8>, MarkingError> {
    let (width, height) = image.dimensions();
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(MarkingError::TooLargeForFormat { width, height, max: JPEG_MAX_SIDE, format: "JPEG" });
    };
    let mut segment = Vec::with_capacity(JPEG_XMP_NAMESPACE.len() + packet.len());
    segment.extend_from_slice(JPEG_XMP_NAMESPACE);
    segment.extend_from_slice(packet.as_bytes());
    if segment.len() > JPEG_SEGMENT_MAX {
        return Err(MarkingError::XmpTooLargeForJpeg {
            len: packet.len(),
            max: JPEG_SEGMENT_MAX - JPEG_XMP_NAMESPACE.len(),
        });
    }
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY);
    encoder.add_app_segment(1, segment)?;
    encoder.encode(image.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)?;
    Ok(out)
}

fn encode_webp(image: &RgbImage, packet: String) -> Result<Vec<u8>, MarkingError> {
    let (width, height) = image.dimensions();
    if width > WEBP_MAX_SIDE || height > WEBP_MAX_SIDE {
        return Err(MarkingError::TooLargeForFormat { width, height, max: WEBP_MAX_SIDE, format: "WebP" });
    }
    let mut out = Vec::new();
    let mut encoder = image_webp::WebPEncoder::new(&mut out);
    encoder.set_xmp_metadata(packet.into_bytes());
    encoder.encode(image.as_raw(), width, height, image_webp::ColorType::Rgb8)?;
    Ok(out)
}
