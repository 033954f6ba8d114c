//! Marking at its boundaries: the label's pixels, the watermark as invisible-watermark 0.2.0's own
//! Python decoder reads it (from PNG, from our JPEG, after a Pillow JPEG re-encode), and the
//! provenance as a PNG, JPEG or WebP reader finds it.
//!
//! The watermark tests run the real package, not a Rust re-implementation of its decoder, because
//! "their decoder reads our mark" is the property that matters; they need `bash deploy/setup.sh`.

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rapid_engine::marking::watermark::{self, WatermarkOutcome};
use rapid_engine::marking::{
    draw_label, encode, Corner, LabelOptions, MarkingError, OutputFormat, Provenance, DEFAULT_WATERMARK_PAYLOAD,
};

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
const DECODER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/watermark/decode_watermark.py");
const DIGITAL_SOURCE_TYPE: &str = "<Iptc4xmpExt:DigitalSourceType>\
    http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia\
    </Iptc4xmpExt:DigitalSourceType>";

/// Something like a diffusion output: a sky and ground gradient with fine texture, a blown-out
/// white sun and a black shadow (saturated areas are where a watermark's pixels clip).
fn realistic_image(size: u32) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(size));
    let s = size as f32;
    RgbImage::from_fn(size, size, |x, y| {
        let (u, v) = (x as f32 / s, y as f32 / s);
        if (u - 0.75).powi(2) + (v - 0.2).powi(2) < 0.08f32.powi(2) {
            return Rgb([255, 255, 255]);
        }
        if (0.05..0.3).contains(&u) && (0.8..0.95).contains(&v) {
            return Rgb([0, 0, 0]);
        }
        let base = if v < 0.5 {
            [90.0 + 60.0 * v, 150.0 + 50.0 * v, 235.0 - 40.0 * v]
        } else {
            [110.0 + 60.0 * u, 130.0 - 30.0 * v, 60.0 + 20.0 * u]
        };
        let texture = 12.0 * (x as f32 * 0.3).sin() * (y as f32 * 0.21).cos();
        Rgb(base.map(|c| (c + texture + rng.random_range(-8.0..8.0)).clamp(0.0, 255.0) as u8))
    })
}

fn provenance() -> Provenance {
    Provenance {
        model: "tiny-sd <v1> & \"friends\"".to_owned(),
        seed: 18_446_744_073_709_551_615,
        steps: 25,
        sampler: "pndm".to_owned(),
        prompt: "一只猫坐在窗台上, <b>sunset</b> & 'rain'".to_owned(),
        negative_prompt: "blurry, low quality".to_owned(),
        extra: vec![("Guidance".to_owned(), "7.5".to_owned()), ("Upscaler".to_owned(), "esrgan-x4".to_owned())],
    }
}

/// The payload as invisible-watermark's Python decoder prints it, in hex.
fn python_decode(path: &Path, bits: usize, reencode_jpeg: Option<u8>) -> String {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing: run `bash deploy/setup.sh` to install the reference decoder"
    );
    let mut command = Command::new(PYTHON);
    command.arg(DECODER).arg(path).arg(bits.to_string());
    if let Some(quality) = reencode_jpeg {
        command.args(["--reencode-jpeg", &quality.to_string()]);
    }
    let output = command.output().expect("the Python decoder starts");
    assert!(
        output.status.success(),
        "the Python decoder failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the decoder prints hex").trim().to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Label, watermark and PNG encoding of a `size`² image, checked by the package's decoder through
/// PNG, through our JPEG, and through a JPEG re-encode at quality 90.
fn check_watermark_survives(size: u32) {
    let mut image = realistic_image(size);
    draw_label(&mut image, &LabelOptions::default());
    let outcome = watermark::embed(&mut image, DEFAULT_WATERMARK_PAYLOAD).unwrap();
    assert_eq!(outcome, WatermarkOutcome::Embedded { bits: 48 });
    assert_eq!(watermark::decode(&image, 48), DEFAULT_WATERMARK_PAYLOAD);

    let dir = tempfile::tempdir().unwrap();
    let expected = hex(DEFAULT_WATERMARK_PAYLOAD);
    let png = dir.path().join("marked.png");
    std::fs::write(&png, encode(&image, OutputFormat::Png, &provenance()).unwrap()).unwrap();
    assert_eq!(python_decode(&png, 48, None), expected, "PNG, {size} px");
    assert_eq!(python_decode(&png, 48, Some(90)), expected, "PNG re-encoded as JPEG quality 90, {size} px");
    let jpeg = dir.path().join("marked.jpg");
    std::fs::write(&jpeg, encode(&image, OutputFormat::Jpeg, &provenance()).unwrap()).unwrap();
    assert_eq!(python_decode(&jpeg, 48, None), expected, "our JPEG, {size} px");
}

#[test]
fn python_decoder_reads_the_watermark_at_256_px() {
    check_watermark_survives(256);
}

#[test]
fn python_decoder_reads_the_watermark_at_1024_px() {
    check_watermark_survives(1024);
}

#[test]
fn watermark_skips_images_the_package_refuses() {
    for (width, height) in [(128, 128), (255, 256)] {
        let mut image = realistic_image(256);
        image = image::imageops::crop_imm(&image, 0, 0, width, height).to_image();
        let before = image.clone();
        let outcome = watermark::embed(&mut image, DEFAULT_WATERMARK_PAYLOAD).unwrap();
        assert_eq!(outcome, WatermarkOutcome::SkippedTooSmall { width, height });
        assert_eq!(image, before);
    }
    // The package's rule is rows × columns < 256 × 256, so a 512×128 banner is marked.
    let mut banner = image::imageops::crop_imm(&realistic_image(512), 0, 0, 512, 128).to_image();
    let outcome = watermark::embed(&mut banner, DEFAULT_WATERMARK_PAYLOAD).unwrap();
    assert_eq!(outcome, WatermarkOutcome::Embedded { bits: 48 });
    assert_eq!(watermark::decode(&banner, 48), DEFAULT_WATERMARK_PAYLOAD);
}

#[test]
fn watermark_rejects_payloads_outside_one_to_six_bytes() {
    let mut image = realistic_image(256);
    for payload in [&b""[..], b"1234567"] {
        let error = watermark::embed(&mut image, payload).unwrap_err();
        assert!(matches!(error, MarkingError::PayloadLength { len, max: 6 } if len == payload.len()), "{error}");
    }
}

#[test]
fn label_sits_in_the_chosen_corner_with_dark_box_and_light_text() {
    let corners = [
        (Corner::TopLeft, (false, false)),
        (Corner::TopRight, (true, false)),
        (Corner::BottomLeft, (false, true)),
        (Corner::BottomRight, (true, true)),
    ];
    for (corner, (right, bottom)) in corners {
        let mut image = RgbImage::from_pixel(512, 512, Rgb([128, 128, 128]));
        let options = LabelOptions { corner, ..LabelOptions::default() };
        draw_label(&mut image, &options);
        let changed: Vec<(u32, u32, Rgb<u8>)> =
            image.enumerate_pixels().filter(|(_, _, p)| p.0 != [128, 128, 128]).map(|(x, y, p)| (x, y, *p)).collect();
        assert!(
            changed.iter().all(|&(x, y, _)| (x >= 256) == right && (y >= 256) == bottom),
            "{corner:?}: label pixels outside the corner's quadrant"
        );
        assert!(changed.iter().any(|(_, _, p)| p.0[0] < 60), "{corner:?}: no box");
        assert!(changed.iter().any(|(_, _, p)| p.0[0] > 240), "{corner:?}: no text");
        // 512 px gives 18 px text: "AI-generated" is far wider than tall.
        let xs = changed.iter().map(|c| c.0);
        let ys = changed.iter().map(|c| c.1);
        let width = xs.clone().max().unwrap() - xs.min().unwrap();
        let height = ys.clone().max().unwrap() - ys.min().unwrap();
        assert!(width > 3 * height && height >= 18, "{corner:?}: box {width}x{height}");
    }
}

#[test]
fn label_shrinks_to_fit_small_images_without_panicking() {
    for size in [0, 1, 8, 16, 64] {
        let mut image = RgbImage::from_pixel(size, size, Rgb([200, 200, 200]));
        draw_label(&mut image, &LabelOptions::default());
        if size == 64 {
            // Whole text shrunk to fit, so the box stays inside the image with its margin.
            let changed: Vec<(u32, u32)> =
                image.enumerate_pixels().filter(|(_, _, p)| p.0 != [200, 200, 200]).map(|(x, y, _)| (x, y)).collect();
            assert!(!changed.is_empty());
            assert!(changed.iter().all(|&(x, y)| x > 0 && y > 0 && x < 63 && y < 63));
        }
    }
    let mut image = RgbImage::from_pixel(64, 64, Rgb([200, 200, 200]));
    let before = image.clone();
    let empty = LabelOptions { text: String::new(), ..LabelOptions::default() };
    draw_label(&mut image, &empty);
    assert_eq!(image, before);
}

#[test]
fn names_parse_and_errors_list_valid_values() {
    assert_eq!("png".parse::<OutputFormat>().unwrap(), OutputFormat::Png);
    assert_eq!("jpeg".parse::<OutputFormat>().unwrap(), OutputFormat::Jpeg);
    assert_eq!("jpg".parse::<OutputFormat>().unwrap(), OutputFormat::Jpeg);
    assert_eq!("webp".parse::<OutputFormat>().unwrap(), OutputFormat::Webp);
    assert_eq!("JPG".parse::<OutputFormat>().unwrap(), OutputFormat::Jpeg);
    assert_eq!(OutputFormat::Jpeg.extension(), "jpg");
    let error = "gif".parse::<OutputFormat>().unwrap_err().to_string();
    assert!(error.contains("\"gif\"") && error.contains("png, jpeg, jpg, webp"), "{error}");

    assert_eq!("top-left".parse::<Corner>().unwrap(), Corner::TopLeft);
    assert_eq!("bottom-right".parse::<Corner>().unwrap(), Corner::BottomRight);
    let error = "middle".parse::<Corner>().unwrap_err().to_string();
    assert!(error.contains("\"middle\"") && error.contains("top-right"), "{error}");
    assert_eq!(LabelOptions::default().text, "AI-generated");
    assert_eq!(LabelOptions::default().corner, Corner::BottomRight);
}

#[test]
fn png_carries_every_provenance_field_and_the_xmp_packet() {
    let image = realistic_image(64);
    let bytes = encode(&image, OutputFormat::Png, &provenance()).unwrap();
    let reader = png::Decoder::new(Cursor::new(&bytes)).read_info().unwrap();
    let info = reader.info();
    let latin1: Vec<(&str, &str)> =
        info.uncompressed_latin1_text.iter().map(|c| (c.keyword.as_str(), c.text.as_str())).collect();
    let utf8: Vec<(String, String)> =
        info.utf8_text.iter().map(|c| (c.keyword.clone(), c.get_text().unwrap())).collect();
    assert_eq!(
        latin1,
        [
            ("Model", "tiny-sd <v1> & \"friends\""),
            ("Seed", "18446744073709551615"),
            ("Steps", "25"),
            ("Sampler", "pndm"),
            ("Negative prompt", "blurry, low quality"),
            ("Guidance", "7.5"),
            ("Upscaler", "esrgan-x4"),
        ]
    );
    assert_eq!(utf8.len(), 2);
    assert_eq!(utf8[0], ("Prompt".to_owned(), provenance().prompt));
    let (keyword, xmp) = &utf8[1];
    assert_eq!(keyword, "XML:com.adobe.xmp");
    check_xmp(xmp);
    assert!(info.compressed_latin1_text.is_empty());

    let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(decoded, image);
}

fn check_xmp(xmp: &str) {
    assert!(xmp.starts_with("<?xpacket begin=\"\u{feff}\""), "{xmp}");
    assert!(xmp.contains(DIGITAL_SOURCE_TYPE), "{xmp}");
    assert!(
        xmp.contains(
            "<Iptc4xmpExt:AISystemUsed>tiny-sd &lt;v1&gt; &amp; &quot;friends&quot;</Iptc4xmpExt:AISystemUsed>"
        ),
        "{xmp}"
    );
    assert!(
        xmp.contains("<Iptc4xmpExt:AIPromptInformation>一只猫坐在窗台上, &lt;b&gt;sunset&lt;/b&gt; &amp; &apos;rain&apos;</Iptc4xmpExt:AIPromptInformation>"),
        "{xmp}"
    );
}

#[test]
fn png_rejects_extra_keys_that_are_not_png_keywords() {
    let image = realistic_image(16);
    let long = "k".repeat(80);
    for key in ["", " lead", "two  spaces", "猫", long.as_str(), "Seed"] {
        let mut with_key = provenance();
        with_key.extra.push((key.to_owned(), "v".to_owned()));
        let error = encode(&image, OutputFormat::Png, &with_key).unwrap_err();
        assert!(matches!(&error, MarkingError::InvalidMetadataKey { key: k, .. } if k == key), "{key:?}: {error}");
    }
}

#[test]
fn jpeg_carries_the_xmp_packet_in_app1() {
    let image = realistic_image(64);
    let bytes = encode(&image, OutputFormat::Jpeg, &provenance()).unwrap();
    let namespace = b"http://ns.adobe.com/xap/1.0/\0";
    let mut segments = Vec::new();
    let mut at = 2;
    assert_eq!(&bytes[..2], [0xff, 0xd8]);
    // Walk the marker segments up to the start of scan.
    while bytes[at] == 0xff && bytes[at + 1] != 0xda {
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        segments.push((bytes[at + 1], &bytes[at + 4..at + 2 + len]));
        at += 2 + len;
    }
    let xmp: Vec<&[u8]> = segments
        .iter()
        .filter(|(marker, data)| *marker == 0xe1 && data.starts_with(namespace))
        .map(|(_, data)| &data[namespace.len()..])
        .collect();
    assert_eq!(xmp.len(), 1);
    check_xmp(std::str::from_utf8(xmp[0]).unwrap());
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (64, 64));
}

#[test]
fn jpeg_refuses_an_xmp_packet_larger_than_one_segment() {
    let mut long = provenance();
    long.prompt = "猫".repeat(22_000);
    let error = encode(&realistic_image(16), OutputFormat::Jpeg, &long).unwrap_err();
    assert!(matches!(error, MarkingError::XmpTooLargeForJpeg { .. }), "{error}");
}

#[test]
fn webp_carries_the_xmp_packet_in_a_vp8x_container() {
    let image = realistic_image(64);
    let bytes = encode(&image, OutputFormat::Webp, &provenance()).unwrap();
    assert_eq!(&bytes[12..16], b"VP8X");
    assert_eq!(bytes[20] & 0x04, 0x04, "the VP8X XMP flag");
    let mut decoder = image_webp::WebPDecoder::new(Cursor::new(&bytes)).unwrap();
    let xmp = decoder.xmp_metadata().unwrap().unwrap();
    check_xmp(std::str::from_utf8(&xmp).unwrap());
    let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(decoded, image, "lossless");
}

#[test]
fn marking_is_deterministic() {
    let mark = || {
        let mut image = realistic_image(256);
        draw_label(&mut image, &LabelOptions::default());
        watermark::embed(&mut image, DEFAULT_WATERMARK_PAYLOAD).unwrap();
        image
    };
    let (first, second) = (mark(), mark());
    assert_eq!(first, second);
    for format in [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp] {
        assert_eq!(
            encode(&first, format, &provenance()).unwrap(),
            encode(&second, format, &provenance()).unwrap(),
            "{format:?}"
        );
    }
}
