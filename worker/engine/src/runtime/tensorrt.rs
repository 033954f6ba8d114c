//! TensorRT sessions: fp16, explicit optimisation profiles for the sizes a worker serves, and the
//! built engines kept on disk.
//!
//! TensorRT compiles an engine per graph and shape profile when a session is created: minutes for
//! a U-Net, at every start unless the engine is kept. ONNX Runtime's TensorRT provider can keep
//! it (`trt_engine_cache_*`), but its own cache names entries by graph and input shapes only; an
//! engine is valid for one GPU model and one TensorRT version, and a folder shared by replicas or
//! kept across an upgrade would hand a worker an engine it cannot use. So each graph gets a folder
//! of its own, named by everything the engine depends on: the GPU model, the TensorRT version, the
//! graph's content and the profile. A restarted worker finds its folder; a worker on another GPU
//! kind or TensorRT version finds none and builds its own.
//!
//! Without explicit profiles TensorRT builds for the first shapes it sees and rebuilds when a job
//! brings others; with them, one engine covers every size and batch the configuration allows.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Part;
use crate::session_cache::hex;

/// How the parts on `tensorrt` are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRtOptions {
    /// Where built engines are kept between starts (one folder per graph, GPU model, TensorRT
    /// version and profile); `None` builds them at every start.
    pub engine_cache: Option<PathBuf>,
    /// Let TensorRT choose fp16 kernels where it finds them faster (the graph stays fp32 outside).
    pub fp16: bool,
    /// The sizes and batches the worker serves; `None` leaves the shapes to TensorRT (it builds for
    /// the first shapes seen and rebuilds for others).
    pub shapes: Option<ShapeLimits>,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        Self { engine_cache: None, fp16: true, shapes: None }
    }
}

/// Image sides (pixels, before the ×4 upscale) and batch a worker's jobs may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeLimits {
    pub min_side: usize,
    /// The side TensorRT tunes its kernels for: the most common job's.
    pub opt_side: usize,
    pub max_side: usize,
    /// Most images in one U-Net call (`worker.max_batch`); guidance doubles the rows.
    pub max_batch: usize,
}

/// One dynamic-shape input of a graph as the ONNX file declares it (`-1`: dynamic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredInput {
    pub name: String,
    pub shape: Vec<i64>,
}

/// The three shape lists of a TensorRT optimisation profile, in the provider's syntax
/// (`name:1x4x32x32,other:1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub min: String,
    pub opt: String,
    pub max: String,
}

/// What the profile of a part needs to know about its model besides the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShapes {
    /// Pixels per latent pixel (the VAE's spatial factor).
    pub spatial_factor: usize,
    /// Tokens per prompt (every prompt is padded to it).
    pub context_length: usize,
}

/// The profile covering `limits` for `part`, from its declared inputs: a dynamic batch axis spans
/// one row to the most the part is called with, a dynamic spatial axis the smallest to the largest
/// side, a dynamic sequence axis is the context length. `None` when every input is static.
pub fn profile(part: Part, inputs: &[DeclaredInput], limits: &ShapeLimits, model: &ModelShapes) -> Option<Profile> {
    if inputs.iter().all(|input| input.shape.iter().all(|&d| d >= 0)) {
        return None;
    }
    // Rows per call: guidance doubles the text encoder's and the U-Net's; ESRGAN gets one image.
    let (opt_rows, max_rows) = match part {
        Part::TextEncoder | Part::Unet => (2, 2 * limits.max_batch),
        Part::VaeDecoder => (1, limits.max_batch),
        Part::Upscaler => (1, 1),
    };
    let side = |pixels: usize| match part {
        Part::Unet | Part::VaeDecoder => pixels.div_ceil(model.spatial_factor),
        _ => pixels,
    };
    let dims = |rows: usize, pixels: usize| -> String {
        inputs
            .iter()
            .map(|input| {
                let shape: Vec<String> = input
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(axis, &declared)| {
                        if declared >= 0 {
                            declared.to_string()
                        } else if axis == 0 {
                            rows.to_string()
                        } else if input.shape.len() == 4 && axis >= 2 {
                            side(pixels).to_string()
                        } else {
                            model.context_length.to_string()
                        }
                    })
                    .collect();
                format!("{}:{}", input.name, shape.join("x"))
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    Some(Profile {
        min: dims(1, limits.min_side),
        opt: dims(opt_rows, limits.opt_side),
        max: dims(max_rows, limits.max_side),
    })
}

/// What an engine depends on besides the graph and its profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTarget {
    /// e.g. `NVIDIA H100 80GB HBM3`.
    pub gpu: String,
    /// e.g. `10.13.3`.
    pub tensorrt: String,
}

impl BuildTarget {
    /// The first GPU's model, from the NVIDIA driver's files, and the TensorRT library's version
    /// from its file name on the loader path; `None` where either is not found (no GPU or no
    /// TensorRT: the provider itself then refuses to start).
    pub fn of_this_machine() -> Option<Self> {
        Some(Self { gpu: gpu_model()?, tensorrt: tensorrt_version()? })
    }

    /// A folder-name-safe GPU model: engines of one GPU kind share this prefix.
    pub fn gpu_slug(&self) -> String {
        let slug: String =
            self.gpu.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        slug.split('-').filter(|part| !part.is_empty()).collect::<Vec<_>>().join("-")
    }
}

/// The folder of `graph`'s engine in `cache`: `<gpu>/<part>-<key>`, the key covering the target,
/// the graph's bytes and the profile. Content, not modification time: replicas unpack the same
/// model at different times, and should still find each other's engines.
pub fn engine_folder(
    cache: &Path,
    target: &BuildTarget,
    part: Part,
    graph: &Path,
    profile: Option<&Profile>,
) -> io::Result<PathBuf> {
    let mut key = Sha256::new();
    key.update(format!("gpu {}\ntensorrt {}\n", target.gpu, target.tensorrt));
    key.update(format!("graph {}\n", hex(&file_digest(graph)?)));
    // External weights change the engine too; their sizes and names stand in for them (hashing
    // gigabytes at every start would cost more than it saves).
    let folder = graph.parent().unwrap_or(Path::new("."));
    let mut beside: Vec<_> = fs::read_dir(folder)?.collect::<io::Result<_>>()?;
    beside.sort_by_key(fs::DirEntry::file_name);
    for file in beside.iter().filter(|f| f.path() != graph && f.file_type().is_ok_and(|t| t.is_file())) {
        key.update(format!("beside {:?} {}\n", file.file_name(), file.metadata()?.len()));
    }
    match profile {
        Some(p) => key.update(format!("profile {} / {} / {}\n", p.min, p.opt, p.max)),
        None => key.update("profile none\n"),
    }
    Ok(cache.join(target.gpu_slug()).join(format!("{}-{}", part.name(), &hex(&key.finalize())[..16])))
}

fn file_digest(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    let mut digest = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(digest.finalize().to_vec());
        }
        digest.update(&buffer[..read]);
    }
}

/// The first GPU's model name, as `/proc/driver/nvidia/gpus/<bus>/information` states it.
fn gpu_model() -> Option<String> {
    let mut buses: Vec<_> = fs::read_dir("/proc/driver/nvidia/gpus").ok()?.flatten().collect();
    buses.sort_by_key(fs::DirEntry::file_name);
    let info = fs::read_to_string(buses.first()?.path().join("information")).ok()?;
    model_line(&info)
}

fn model_line(information: &str) -> Option<String> {
    information
        .lines()
        .find_map(|line| line.strip_prefix("Model:"))
        .map(|model| model.trim().to_owned())
        .filter(|model| !model.is_empty())
}

/// TensorRT's version from its library's file name (`libnvinfer.so.10.13.3`) in a folder of
/// `LD_LIBRARY_PATH` or the usual system ones.
fn tensorrt_version() -> Option<String> {
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let folders = path
        .split(':')
        .filter(|folder| !folder.is_empty())
        .map(PathBuf::from)
        .chain(["/usr/lib/x86_64-linux-gnu", "/usr/local/lib", "/usr/lib"].map(PathBuf::from));
    folders
        .filter_map(|folder| fs::read_dir(folder).ok())
        .flatten()
        .flatten()
        .find_map(|entry| version_of(&entry.file_name().to_string_lossy()))
}

fn version_of(file_name: &str) -> Option<String> {
    let version = file_name.strip_prefix("libnvinfer.so.")?;
    (version.split('.').count() >= 2 && version.split('.').all(|n| n.parse::<u32>().is_ok()))
        .then(|| version.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet_inputs() -> Vec<DeclaredInput> {
        vec![
            DeclaredInput { name: "sample".into(), shape: vec![-1, 4, -1, -1] },
            DeclaredInput { name: "timestep".into(), shape: vec![-1] },
            DeclaredInput { name: "encoder_hidden_states".into(), shape: vec![-1, -1, 768] },
        ]
    }

    const LIMITS: ShapeLimits = ShapeLimits { min_side: 256, opt_side: 512, max_side: 1024, max_batch: 4 };
    const SD: ModelShapes = ModelShapes { spatial_factor: 8, context_length: 77 };

    #[test]
    fn a_profile_spans_every_size_and_batch_the_worker_serves() {
        let unet = profile(Part::Unet, &unet_inputs(), &LIMITS, &SD).unwrap();
        assert_eq!(unet.min, "sample:1x4x32x32,timestep:1,encoder_hidden_states:1x77x768");
        assert_eq!(unet.opt, "sample:2x4x64x64,timestep:2,encoder_hidden_states:2x77x768");
        assert_eq!(unet.max, "sample:8x4x128x128,timestep:8,encoder_hidden_states:8x77x768");

        let vae = [DeclaredInput { name: "latent_sample".into(), shape: vec![-1, 4, -1, -1] }];
        let vae = profile(Part::VaeDecoder, &vae, &LIMITS, &SD).unwrap();
        assert_eq!((vae.min.as_str(), vae.max.as_str()), ("latent_sample:1x4x32x32", "latent_sample:4x4x128x128"));

        let esrgan = [DeclaredInput { name: "input".into(), shape: vec![1, 3, -1, -1] }];
        let esrgan = profile(Part::Upscaler, &esrgan, &LIMITS, &SD).unwrap();
        assert_eq!((esrgan.min.as_str(), esrgan.max.as_str()), ("input:1x3x256x256", "input:1x3x1024x1024"));

        let fixed = [DeclaredInput { name: "input_ids".into(), shape: vec![2, 77] }];
        assert_eq!(profile(Part::TextEncoder, &fixed, &LIMITS, &SD), None, "a static graph needs no profile");
    }

    fn model(dir: &Path) -> PathBuf {
        let graph = dir.join("unet/model.onnx");
        fs::create_dir_all(graph.parent().unwrap()).unwrap();
        fs::write(&graph, b"graph").unwrap();
        fs::write(dir.join("unet/model.onnx_data"), b"weights").unwrap();
        graph
    }

    #[test]
    fn an_engine_folder_follows_the_gpu_the_tensorrt_version_the_graph_and_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let graph = model(dir.path());
        let cache = dir.path().join("engines");
        let h100 = BuildTarget { gpu: "NVIDIA H100 80GB HBM3".into(), tensorrt: "10.13.3".into() };
        let profile = profile(Part::Unet, &unet_inputs(), &LIMITS, &SD);
        let folder = |target: &BuildTarget, profile: Option<&Profile>| {
            engine_folder(&cache, target, Part::Unet, &graph, profile).unwrap()
        };
        let first = folder(&h100, profile.as_ref());
        assert!(first.starts_with(cache.join("nvidia-h100-80gb-hbm3")), "{}", first.display());
        assert!(first.file_name().unwrap().to_string_lossy().starts_with("unet-"));
        assert_eq!(folder(&h100, profile.as_ref()), first, "the same inputs find the same engine");

        let h200 = BuildTarget { gpu: "NVIDIA H200".into(), ..h100.clone() };
        assert!(!folder(&h200, profile.as_ref()).starts_with(cache.join("nvidia-h100-80gb-hbm3")));
        let upgraded = BuildTarget { tensorrt: "10.14.1".into(), ..h100.clone() };
        assert_ne!(folder(&upgraded, profile.as_ref()), first, "another TensorRT cannot load the engine");
        assert_ne!(folder(&h100, None), first, "another profile is another engine");

        // Touching the files changes nothing; new bytes do.
        fs::write(&graph, b"graph").unwrap();
        assert_eq!(folder(&h100, profile.as_ref()), first);
        fs::write(&graph, b"re-exported graph").unwrap();
        assert_ne!(folder(&h100, profile.as_ref()), first);
    }

    #[test]
    fn the_gpu_and_tensorrt_are_read_from_the_driver_and_the_library_names() {
        let information = "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 123\nGPU UUID: \t GPU-0\n";
        assert_eq!(model_line(information).as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(model_line("IRQ: 1\n"), None);
        assert_eq!(version_of("libnvinfer.so.10.13.3").as_deref(), Some("10.13.3"));
        assert_eq!(version_of("libnvinfer.so.10"), None, "the major version alone does not pin the engine format");
        assert_eq!(version_of("libnvinfer_plugin.so.10.13.3"), None);
        assert_eq!(version_of("libnvinfer.so.10.x"), None);
    }
}
