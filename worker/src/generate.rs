//! `rapid-worker generate`: one prompt in, one marked image file out.
//!
//! The output file appears only when everything succeeded: it is written to a temporary file in
//! the target folder and renamed into place, so a failure or Ctrl-C never leaves a partial image.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rapid_engine::autotune::{self, AutotuneOptions, ProviderSetting};
use rapid_engine::error::EngineError;
use rapid_engine::marking::watermark::WatermarkOutcome;
use rapid_engine::marking::{Corner, LabelOptions, OutputFormat, Provenance};
use rapid_engine::output::{mark_and_encode, MarkOptions};
use rapid_engine::parts::upscaler::Tiling;
use rapid_engine::pipeline::{read_latents, GenerationRequest, Pipeline};
use rapid_engine::runtime::tensorrt::TensorRtOptions;
use rapid_engine::runtime::{ExecutionProvider, Part, Precision, Providers, Runtime, RuntimeOptions};
use rapid_engine::samplers::{SamplerKind, SamplerOptions};
use serde::Serialize;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model directory (DESIGN.md, "Model directory"), e.g. tests/fixtures/models/tiny-sd-clip.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Seed of the initial noise; the same seed, model and provider give the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 7.5)]
    guidance_scale: f32,
    /// pndm | ddim | euler | euler-a | dpmpp-2m
    #[arg(long, default_value = "pndm")]
    sampler: SamplerKind,
    /// Karras sigmas for dpmpp-2m (overrides the model's scheduler config).
    #[arg(long)]
    karras_sigmas: Option<bool>,
    /// Image width before upscaling; default from the model (U-Net sample size × VAE factor).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    /// float32 latents [1,4,h,w] in a .npy file, as diffusers' `latents=` (unscaled).
    #[arg(long)]
    init_latents: Option<PathBuf>,
    /// Skip the ×4 ESRGAN upscaler even if the model has one.
    #[arg(long)]
    no_upscale: bool,
    /// Upscaler tile side in input pixels (0 = whole image in one call).
    #[arg(long, default_value_t = Tiling::default().tile)]
    tile_size: usize,
    /// Context pixels around each upscaler tile.
    #[arg(long, default_value_t = Tiling::default().overlap)]
    tile_overlap: usize,
    /// Leave out the visible "AI-generated" label (for reference comparisons; metadata and the
    /// invisible watermark stay).
    #[arg(long)]
    no_visible_mark: bool,
    /// Corner of the visible label: top-left | top-right | bottom-left | bottom-right.
    #[arg(long, default_value = "bottom-right")]
    label_corner: Corner,
    /// png | jpeg | webp; default from --out's extension, else png.
    #[arg(long)]
    format: Option<OutputFormat>,
    /// Print the knowledge-graph entities linked in the prompts (models with `knowledge/`).
    #[arg(long)]
    explain: bool,
    /// Write per-stage milliseconds to this JSON file.
    #[arg(long)]
    timings: Option<PathBuf>,
    /// Run every part once (one untimed step at the image's size) before the image, as a
    /// long-running worker does at start-up, so --timings shows warm calls. Costs time overall.
    #[arg(long)]
    warm_up: bool,
    /// cpu | cuda | tensorrt | openvino, or auto: each part on the fastest setup this machine
    /// has, measured first (bounded by --autotune-budget-secs; kept in --session-cache, so a
    /// second run with the same cache loads the choice). The fleet worker's default is auto; this
    /// command's is cpu, the reference path the parity tests hold to diffusers.
    #[arg(long, default_value = "cpu", env = "RAPID_EXECUTION_PROVIDER")]
    execution_provider: ProviderSetting,
    /// Under --execution-provider auto, how long measuring may take.
    #[arg(long, default_value_t = 300)]
    autotune_budget_secs: u64,
    /// Keep TensorRT's built engines in this folder (one per graph, GPU model, TensorRT version
    /// and profile), so the next run with --execution-provider tensorrt loads instead of building.
    #[arg(long)]
    tensorrt_engine_cache: Option<PathBuf>,
    /// PART=PROVIDER: run one part (text_encoder, unet, vae_decoder, upscaler) on another
    /// provider than --execution-provider, e.g. `upscaler=openvino`. Repeatable.
    #[arg(long, value_parser = part_provider)]
    part_provider: Vec<(Part, ExecutionProvider)>,
    /// Threads per ONNX Runtime operator (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// fp32 | bf16: the arithmetic of the parts on openvino (bf16 needs a CPU with AVX512-BF16 or
    /// AMX; faster, and the image changes).
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// Keep the CPU provider's optimized graphs in this folder, so the next start loads them
    /// instead of optimizing again (about a copy of each model's weights on disk).
    #[arg(long)]
    session_cache: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

/// What `generate` prints on stdout when it is done: one JSON object.
#[derive(Serialize)]
struct Summary<'a> {
    out: &'a Path,
    width: u32,
    height: u32,
    seed: u64,
    steps: usize,
    sampler: &'static str,
    upscaled: bool,
    invisible_watermark: String,
    truncated: Vec<TruncationNote>,
    entities: Vec<EntityNote<'a>>,
}

#[derive(Serialize)]
struct EntityNote<'a> {
    which: &'static str,
    entity: &'a str,
    text: &'a str,
    tokens: &'a [usize],
}

#[derive(Serialize)]
struct TruncationNote {
    which: &'static str,
    dropped_tokens: usize,
    dropped_text: String,
}

#[derive(Serialize)]
struct Timings {
    tokenize: f64,
    text_encoder: f64,
    unet_total: f64,
    unet_per_step: f64,
    vae: f64,
    upscale: f64,
    mark: f64,
    encode: f64,
    /// `--warm-up`'s untimed image (0 without it); part of `total`, not of the stages.
    warm_up: f64,
    total: f64,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let started = Instant::now();
    let format = match args.format {
        Some(format) => format,
        None => format_from_extension(&args.out)?,
    };
    // Fail on an unwritable --out before minutes of inference, not after.
    let staged = stage_output(&args.out)?;
    let staged_timings = args.timings.as_deref().map(stage_output).transpose()?;
    let init_latents = args.init_latents.as_deref().map(read_latents).transpose()?;

    if args.execution_provider == ProviderSetting::Auto && !args.part_provider.is_empty() {
        anyhow::bail!("--part-provider sets parts by hand, and --execution-provider auto chooses them; use one");
    }
    let providers = args
        .part_provider
        .iter()
        .fold(Providers::all(args.execution_provider.provider()), |providers, &(part, provider)| {
            providers.with(part, provider)
        });
    let runtime = Runtime::new(&RuntimeOptions {
        providers,
        library: None,
        intra_threads: args.threads,
        session_cache: args.session_cache.clone(),
        precision: args.precision,
        profile: None,
        autotune: args.execution_provider == ProviderSetting::Auto,
        tensorrt: TensorRtOptions { engine_cache: args.tensorrt_engine_cache.clone(), ..TensorRtOptions::default() },
    })?;
    let mut tiling = Tiling { tile: args.tile_size, overlap: args.tile_overlap };
    let mut pipeline = match args.execution_provider {
        ProviderSetting::Auto => {
            let options = AutotuneOptions::tiled_or_whole(Duration::from_secs(args.autotune_budget_secs), tiling);
            let tuned = autotune::load_tuned(&runtime, &args.model, &options)?;
            eprintln!("autotune: {}{}", tuned.choice, if tuned.from_cache { " (stored)" } else { "" });
            tiling = tuned.tiling(args.tile_overlap);
            tuned.pipeline
        }
        ProviderSetting::Fixed(_) => Pipeline::load(&runtime, &args.model)?,
    };
    let request = GenerationRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        seed: args.seed,
        steps: args.steps,
        guidance_scale: args.guidance_scale,
        sampler: args.sampler,
        sampler_options: SamplerOptions { karras_sigmas: args.karras_sigmas },
        width: args.width,
        height: args.height,
        init_latents,
        upscale: !args.no_upscale,
        tiling,
    };
    let warm_up_ms = if args.warm_up {
        let started = Instant::now();
        pipeline.warm_up(&request)?;
        started.elapsed().as_secs_f64() * 1e3
    } else {
        0.0
    };

    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancelled);
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)).context("cannot install the Ctrl-C handler")?;
    let show_progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let generated = pipeline.generate(&request, &mut |p| {
        if show_progress {
            eprint!("\rstep {}/{}", p.step, p.total);
            if p.step == p.total {
                eprintln!();
            }
        }
        if cancelled.load(Ordering::Relaxed) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;

    let provenance = Provenance {
        model: pipeline.model().name(),
        seed: args.seed,
        steps: args.steps as u32,
        sampler: args.sampler.name().to_owned(),
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        extra: std::iter::once(("guidance_scale".to_owned(), args.guidance_scale.to_string()))
            .chain(generated.entities_field())
            .collect(),
    };
    let marks = MarkOptions {
        label: (!args.no_visible_mark).then(|| LabelOptions { corner: args.label_corner, ..LabelOptions::default() }),
        ..MarkOptions::default()
    };
    let encoded = mark_and_encode(&generated.image, format, &marks, &provenance)?;
    commit(staged, &encoded.bytes, &args.out)?;

    if let (Some(staged), Some(path)) = (staged_timings, args.timings.as_deref()) {
        let t = &generated.timings;
        let timings = Timings {
            tokenize: t.tokenize,
            text_encoder: t.text_encoder,
            unet_total: t.unet_total,
            unet_per_step: t.unet_per_step,
            vae: t.vae,
            upscale: t.upscale,
            mark: encoded.mark_ms,
            encode: encoded.encode_ms,
            warm_up: warm_up_ms,
            total: started.elapsed().as_secs_f64() * 1e3,
        };
        commit(staged, &serde_json::to_vec_pretty(&timings)?, path)?;
    }

    let summary = Summary {
        out: &args.out,
        width: encoded.width,
        height: encoded.height,
        seed: args.seed,
        steps: args.steps,
        sampler: args.sampler.name(),
        upscaled: generated.upscaled,
        invisible_watermark: match encoded.watermark {
            WatermarkOutcome::Embedded { bits } => format!("embedded ({bits} bits, invisible-watermark dwtDctSvd)"),
            WatermarkOutcome::SkippedTooSmall { width, height } => {
                format!("none: {width}×{height} is under the 256×256 the dwtDctSvd scheme needs")
            }
        },
        truncated: generated
            .truncations
            .iter()
            .map(|(role, t)| TruncationNote {
                which: role.name(),
                dropped_tokens: t.dropped_tokens,
                dropped_text: t.dropped_text.clone(),
            })
            .collect(),
        entities: generated
            .entities
            .iter()
            .map(|(role, e)| EntityNote { which: role.name(), entity: &e.entity, text: &e.text, tokens: &e.tokens })
            .collect(),
    };
    if args.explain {
        if summary.entities.is_empty() {
            eprintln!(
                "explain: no knowledge-graph entities linked (the model has no knowledge/ or the prompt names none)"
            );
        }
        for note in &summary.entities {
            eprintln!("explain: {} {:?} → entity `{}` (tokens {:?})", note.which, note.text, note.entity, note.tokens);
        }
    }
    for note in &summary.truncated {
        eprintln!(
            "warning: {} truncated to the model's context; dropped {} tokens: {:?}",
            note.which, note.dropped_tokens, note.dropped_text
        );
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn format_from_extension(out: &Path) -> Result<OutputFormat> {
    match out.extension().and_then(|e| e.to_str()) {
        Some(ext) => ext.parse().with_context(|| {
            format!("--out {}: cannot tell the format from the extension; pass --format", out.display())
        }),
        None => Ok(OutputFormat::Png),
    }
}

/// Creates a temporary file beside `path` (so the final rename stays on one filesystem).
fn stage_output(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if path.is_dir() {
        anyhow::bail!("--out {} is a directory; give a file name such as {}/image.png", path.display(), path.display());
    }
    tempfile::Builder::new()
        .prefix(".rapid-partial-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write to {} (does the folder exist and is it writable?)", dir.display()))
}

fn commit(mut staged: tempfile::NamedTempFile, bytes: &[u8], path: &Path) -> Result<()> {
    staged
        .write_all(bytes)
        .and_then(|()| staged.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    staged.persist(path).with_context(|| format!("cannot move the finished file to {}", path.display()))?;
    Ok(())
}

/// `--part-provider upscaler=openvino` → (Upscaler, OpenVino).
fn part_provider(arg: &str) -> Result<(Part, ExecutionProvider), String> {
    let (part, provider) =
        arg.split_once('=').ok_or_else(|| format!("`{arg}` is not PART=PROVIDER, e.g. upscaler=openvino"))?;
    Ok((
        part.parse().map_err(|e: EngineError| e.to_string())?,
        provider.parse().map_err(|e: EngineError| e.to_string())?,
    ))
}
