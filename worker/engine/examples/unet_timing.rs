//! Run with: cargo run --release -p rapid-engine --example unet_timing -- [--threads 2] [--calls 7]
//!     [--batch 2] [--latent 32] [--tokens 32] [--width 768] [--profile DIR] [--winograd-kernel K]
//!     NAME=MODEL_DIR...
//!
//! Times one U-Net call of several model directories on identical inputs, for comparing graph
//! variants of the same weights (deploy/bench/attention/attention.sh: plain, ONNX Runtime's fused attention,
//! the project's FlashAttention). All variants are loaded first and then called in turn, one call
//! each per round, so that drift on a shared machine spreads over every variant instead of landing
//! on whichever ran last. Each variant gets one untimed warm-up call. Prints one JSON object.
//!
//! `--winograd-kernel K` sets `RAPID_WINOGRAD_KERNEL` (auto, avx512, avx2, matrixmultiply) for the
//! variants after it, so one process can time the same Winograd graph with each product kernel.
//! `--profile DIR` has every session write ONNX Runtime's per-node profile there when it ends
//! (`deploy/bench/unet-ops/unet_ops.py` sums it by operator).

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array3, Array4};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rapid_engine::custom_ops::winograd::KERNEL_VARIABLE;
use rapid_engine::parts::unet::Unet;
use rapid_engine::runtime::{Runtime, RuntimeOptions};

struct Options {
    threads: usize,
    calls: usize,
    batch: usize,
    latent: usize,
    tokens: usize,
    /// Width of `encoder_hidden_states` (the text encoder's; 768 for Table 6).
    width: usize,
    profile: Option<PathBuf>,
    /// Name, model directory, and the `RAPID_WINOGRAD_KERNEL` its session is created under.
    variants: Vec<(String, PathBuf, Option<String>)>,
}

fn parse() -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        threads: 2,
        calls: 7,
        batch: 2,
        latent: 32,
        tokens: 32,
        width: 768,
        profile: None,
        variants: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    let mut kernel = None;
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, Box<dyn Error>> {
            let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            Ok(value.parse().map_err(|e| format!("{name} {value}: {e}"))?)
        };
        match arg.as_str() {
            "--threads" => options.threads = number("--threads")?,
            "--calls" => options.calls = number("--calls")?,
            "--batch" => options.batch = number("--batch")?,
            "--latent" => options.latent = number("--latent")?,
            "--tokens" => options.tokens = number("--tokens")?,
            "--width" => options.width = number("--width")?,
            "--profile" => options.profile = Some(args.next().ok_or("--profile needs a directory")?.into()),
            "--winograd-kernel" => kernel = Some(args.next().ok_or("--winograd-kernel needs a value")?),
            variant => {
                let (name, dir) =
                    variant.split_once('=').ok_or_else(|| format!("`{variant}` is not NAME=MODEL_DIR"))?;
                options.variants.push((name.to_string(), PathBuf::from(dir), kernel.clone()));
            }
        }
    }
    if options.variants.is_empty() || options.calls == 0 {
        return Err("give at least one NAME=MODEL_DIR and --calls ≥ 1".into());
    }
    Ok(options)
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = parse()?;
    let runtime = Runtime::new(&RuntimeOptions {
        intra_threads: Some(options.threads),
        profile: options.profile.clone(),
        ..RuntimeOptions::default()
    })?;
    let mut unets = Vec::new();
    let mut kernels = Vec::new();
    for (name, dir, kernel) in &options.variants {
        if let Some(kernel) = kernel {
            // Read by each WinogradConv node as its session is created, on this thread; nothing else
            // in this process reads the environment meanwhile.
            std::env::set_var(KERNEL_VARIABLE, kernel);
        }
        // What this variant's sessions saw (None: unset, so `auto`), reported with its timing.
        kernels.push(std::env::var(KERNEL_VARIABLE).ok());
        let start = Instant::now();
        unets.push(Unet::load(&runtime, &dir.join("unet/model.onnx"), options.batch)?);
        eprintln!("{name}: loaded in {:.1} s", start.elapsed().as_secs_f64());
    }

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (b, side) = (options.batch, options.latent);
    let sample = Array4::from_shape_simple_fn((b, 4, side, side), || StandardNormal.sample(&mut rng));
    let hidden = Array3::from_shape_simple_fn((b, options.tokens, options.width), || StandardNormal.sample(&mut rng));

    // Warm-up, keeping each variant's output to compare with the first variant's.
    let mut outputs = Vec::new();
    for unet in &mut unets {
        let mut output = None;
        unet.predict(sample.view(), 500.0, hidden.view(), &mut |out| output = Some(out.to_owned()))?;
        outputs.push(output.ok_or("the U-Net gave no output")?);
    }
    let mut seconds = vec![Vec::new(); unets.len()];
    for round in 0..options.calls {
        for (unet, times) in unets.iter_mut().zip(&mut seconds) {
            let start = Instant::now();
            unet.predict(sample.view(), 500.0, hidden.view(), &mut |_| {})?;
            times.push(start.elapsed().as_secs_f64());
        }
        eprintln!("round {}/{}", round + 1, options.calls);
    }

    let results: Vec<serde_json::Value> = options
        .variants
        .iter()
        .zip(&seconds)
        .zip(&outputs)
        .zip(&kernels)
        .map(|((((name, dir, _), times), output), kernel)| {
            let mut sorted = times.clone();
            sorted.sort_by(f64::total_cmp);
            let diff = (output - &outputs[0]).iter().fold(0.0f32, |m, d| m.max(d.abs()));
            serde_json::json!({
                "name": name,
                "model_dir": dir,
                "winograd_kernel": kernel,
                "median_s": sorted[sorted.len() / 2],
                "min_s": sorted[0],
                "max_s": sorted[sorted.len() - 1],
                "calls_s": times,
                "max_abs_diff_vs_first": diff,
            })
        })
        .collect();
    let report = serde_json::json!({
        "threads": options.threads,
        "batch": options.batch,
        "latent": options.latent,
        "tokens": options.tokens,
        "calls": options.calls,
        "variants": results,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
