//! The visible label: white text on a translucent dark box in one corner, in a bundled font.
//!
//! The design decision a newcomer will question: the colours are fixed rather than picked from the
//! background. White over a box that darkens whatever lies beneath to at most 40 % of its value
//! keeps a contrast ratio of at least 5.7:1 (WCAG AA asks 4.5:1) on any image, white or black, so
//! there is no per-image choice to get wrong; and the font is compiled in (DejaVu Sans Bold, see
//! `assets/fonts/README.md`) so every worker draws the same pixels whatever fonts its host has.

use std::str::FromStr;

use ab_glyph::{point, Font, FontRef, Glyph, PxScale, ScaleFont};
use image::RgbImage;

use super::MarkingError;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

/// Text size (in pixels per em) as a share of the image's shorter side: 36 px on 1024 px, so the
/// label still reads in a thumbnail without covering much of the picture.
const SIZE_SHARE: f32 = 1.0 / 28.0;
/// The smallest size chosen on purpose; only images too small to hold the label at this size get
/// smaller text (shrunk to fit rather than clipped, so the whole text is always there).
const MIN_SIZE_PX: f32 = 12.0;
/// Space between the text and the box edge, in ems.
const PADDING_EM: f32 = 0.3;
/// Space between the box and the image edge, in ems.
const MARGIN_EM: f32 = 0.5;
/// How much of the background the box hides: 0.6 leaves at most 40 % of its brightness.
const BOX_OPACITY: f32 = 0.6;

/// The image corner the label sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    #[default]
    BottomRight,
}

impl FromStr for Corner {
    type Err = MarkingError;

    /// Parses `top-left`, `top-right`, `bottom-left` or `bottom-right`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "top-left" => Ok(Self::TopLeft),
            "top-right" => Ok(Self::TopRight),
            "bottom-left" => Ok(Self::BottomLeft),
            "bottom-right" => Ok(Self::BottomRight),
            _ => Err(MarkingError::UnknownCorner { value: value.to_owned() }),
        }
    }
}

/// What the visible label says and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelOptions {
    /// The label text, one line; control characters are dropped. Characters the bundled font lacks
    /// (DejaVu Sans covers Latin, Greek and Cyrillic, not CJK) are drawn as its empty-box glyph.
    pub text: String,
    pub corner: Corner,
}

impl Default for LabelOptions {
    fn default() -> Self {
        Self { text: "AI-generated".to_owned(), corner: Corner::default() }
    }
}

/// Draws the label onto `image`, scaled with the image and shrunk to fit small ones. Empty text or
/// an image too small for 1-pixel text leaves the image unchanged.
pub fn draw_label(image: &mut RgbImage, options: &LabelOptions) {
    // The font is compiled in and parsed by every test that draws a label, so this cannot fail on
    // any input; it is not a user-facing error.
    let font = FontRef::try_from_slice(FONT).expect("the bundled font parses");
    let text: String = options.text.chars().filter(|c| !c.is_control()).collect();
    let (width, height) = (image.width() as f32, image.height() as f32);
    if text.is_empty() || width < 1.0 || height < 1.0 {
        return;
    }

    let mut size = (width.min(height) * SIZE_SHARE).max(MIN_SIZE_PX);
    let mut line = Line::lay_out(&font, &text, size);
    // Text width and height grow linearly with the size, so one rescale makes it fit.
    let border = 2.0 * (PADDING_EM + MARGIN_EM);
    let fit = (width / (line.width + border * size)).min(height / (line.height + border * size)).min(1.0);
    if fit < 1.0 {
        size *= fit;
        if size < 1.0 {
            return;
        }
        line = Line::lay_out(&font, &text, size);
    }

    let padding = PADDING_EM * size;
    let margin = MARGIN_EM * size;
    let box_width = line.width + 2.0 * padding;
    let box_height = line.height + 2.0 * padding;
    let left = match options.corner {
        Corner::TopLeft | Corner::BottomLeft => margin,
        Corner::TopRight | Corner::BottomRight => width - margin - box_width,
    };
    let top = match options.corner {
        Corner::TopLeft | Corner::TopRight => margin,
        Corner::BottomLeft | Corner::BottomRight => height - margin - box_height,
    };

    darken_box(image, left, top, box_width, box_height);
    let baseline = top + padding + line.ascent;
    for glyph in line.glyphs {
        let position = point(left + padding + glyph.position.x, baseline);
        if let Some(outline) = font.outline_glyph(Glyph { position, ..glyph }) {
            let bounds = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                let x = bounds.min.x as i64 + i64::from(x);
                let y = bounds.min.y as i64 + i64::from(y);
                if let Some(pixel) = pixel_at(image, x, y) {
                    let coverage = coverage.clamp(0.0, 1.0);
                    for channel in &mut pixel.0 {
                        let value = f32::from(*channel);
                        *channel = (value + (255.0 - value) * coverage).round() as u8;
                    }
                }
            });
        }
    }
}

/// One line of glyphs laid out from x = 0 on a baseline at y = 0.
struct Line {
    glyphs: Vec<Glyph>,
    width: f32,
    height: f32,
    ascent: f32,
}

impl Line {
    fn lay_out(font: &FontRef<'_>, text: &str, size: f32) -> Self {
        let scaled = font.as_scaled(PxScale::from(size));
        let mut glyphs: Vec<Glyph> = Vec::with_capacity(text.len());
        let mut caret = 0.0;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(previous) = glyphs.last() {
                caret += scaled.kern(previous.id, id);
            }
            glyphs.push(id.with_scale_and_position(size, point(caret, 0.0)));
            caret += scaled.h_advance(id);
        }
        Self { glyphs, width: caret, height: scaled.ascent() - scaled.descent(), ascent: scaled.ascent() }
    }
}

fn darken_box(image: &mut RgbImage, left: f32, top: f32, width: f32, height: f32) {
    // Rounded and clamped to the image, so a box larger than a tiny image is simply clipped.
    let clamp_x = |v: f32| v.round().clamp(0.0, image.width() as f32) as u32;
    let clamp_y = |v: f32| v.round().clamp(0.0, image.height() as f32) as u32;
    let (x0, x1) = (clamp_x(left), clamp_x(left + width));
    let (y0, y1) = (clamp_y(top), clamp_y(top + height));
    for y in y0..y1 {
        for x in x0..x1 {
            for channel in &mut image.get_pixel_mut(x, y).0 {
                *channel = (f32::from(*channel) * (1.0 - BOX_OPACITY)).round() as u8;
            }
        }
    }
}

fn pixel_at(image: &mut RgbImage, x: i64, y: i64) -> Option<&mut image::Rgb<u8>> {
    let x = u32::try_from(x).ok()?;
    let y = u32::try_from(y).ok()?;
    image.get_pixel_mut_checked(x, y)
}
