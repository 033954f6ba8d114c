//! Where each part of a model runs: the execution providers, the parts, and the per-part choice
//! with the one ONNX Runtime library it needs.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::by_name;
use crate::error::{EngineError, Result};

/// Where ONNX Runtime executes the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
    /// OpenVINO's CPU plugin (oneDNN kernels), from the `onnxruntime-openvino` wheel's library.
    /// Measured on AVX-512 Xeon and EPYC, warm: ESRGAN 1.15–1.2× faster than the CPU provider, and
    /// on a Zen 5 the VAE and U-Net faster too (deploy/bench/speed/NOTES.md); an option, chosen per part
    /// (`Providers`), because it needs its own library and was level on the Xeon's U-Net.
    OpenVino,
}

impl ExecutionProvider {
    pub const ALL: [ExecutionProvider; 4] = [Self::Cpu, Self::Cuda, Self::TensorRt, Self::OpenVino];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
            Self::OpenVino => "openvino",
        }
    }

    /// The wheel whose library this provider needs: CUDA and TensorRT ship only in `onnxruntime-gpu`,
    /// OpenVINO only in `onnxruntime-openvino`.
    pub(super) fn library_flavour(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda | Self::TensorRt => "gpu",
            Self::OpenVino => "openvino",
        }
    }

    /// What a provider that failed to register needs.
    pub(super) fn requirements(self) -> &'static str {
        match self {
            Self::Cpu => "nothing beyond the library",
            Self::Cuda | Self::TensorRt => {
                "the onnxruntime-gpu library (`bash deploy/setup.sh --gpu`), an NVIDIA driver and the CUDA/cuDNN \
                 (and for tensorrt, TensorRT) libraries on the loader path"
            }
            Self::OpenVino => {
                "the onnxruntime-openvino library with its OpenVINO plugins beside it (`bash deploy/setup.sh --openvino`)"
            }
        }
    }
}

named_in_config!(ExecutionProvider, "execution provider");

/// The ONNX parts of a model directory, as far as choosing where each one runs goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    TextEncoder,
    Unet,
    VaeDecoder,
    Upscaler,
}

impl Part {
    pub const ALL: [Part; 4] = [Self::TextEncoder, Self::Unet, Self::VaeDecoder, Self::Upscaler];

    pub fn name(self) -> &'static str {
        match self {
            Self::TextEncoder => "text_encoder",
            Self::Unet => "unet",
            Self::VaeDecoder => "vae_decoder",
            Self::Upscaler => "upscaler",
        }
    }
}

named_in_config!(Part, "model part");

/// Which execution provider runs each part: one for every part, optionally overridden per part.
///
/// Per part because the fastest provider differs by part and by CPU: on AVX-512 CPUs OpenVINO runs
/// ESRGAN 1.15–1.2× faster than the CPU provider; on a Zen 5 its warm U-Net was 4–7% faster and its
/// warm VAE 1.45×, while on an AVX-512 Xeon its U-Net was level (deploy/bench/speed/NOTES.md, session/SESSION.md).
/// Every library has the CPU provider, so `cpu` mixes with anything; the others must share a library.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Providers {
    default: ExecutionProvider,
    overrides: BTreeMap<Part, ExecutionProvider>,
}

impl Providers {
    /// Every part on `provider`.
    pub fn all(provider: ExecutionProvider) -> Self {
        Self { default: provider, overrides: BTreeMap::new() }
    }

    /// `part` on `provider`, the others unchanged.
    pub fn with(mut self, part: Part, provider: ExecutionProvider) -> Self {
        if provider == self.default {
            self.overrides.remove(&part);
        } else {
            self.overrides.insert(part, provider);
        }
        self
    }

    pub fn for_part(&self, part: Part) -> ExecutionProvider {
        self.overrides.get(&part).copied().unwrap_or(self.default)
    }

    /// The one library that has every provider in use; an error when two need different ones
    /// (CUDA is only in the GPU wheel's, OpenVINO only in the OpenVINO wheel's).
    pub(super) fn library_flavour(&self) -> Result<&'static str> {
        let mut flavours = Part::ALL.map(|part| self.for_part(part).library_flavour()).to_vec();
        flavours.retain(|&flavour| flavour != "cpu");
        flavours.sort_unstable();
        flavours.dedup();
        match flavours.as_slice() {
            [] => Ok("cpu"),
            [one] => Ok(one),
            _ => Err(EngineError::invalid(
                "execution providers",
                format!(
                    "{self} need both the {} and the {} ONNX Runtime library, and one process loads one; \
                     run those parts on `cpu` or on providers of one library",
                    flavours[0], flavours[1]
                ),
            )),
        }
    }
}

impl std::fmt::Display for Providers {
    /// `cpu`, or `cpu (upscaler: openvino)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.default)?;
        let overrides: Vec<String> =
            self.overrides.iter().map(|(part, provider)| format!("{part}: {provider}")).collect();
        if !overrides.is_empty() {
            write!(f, " ({})", overrides.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::runtime::{Runtime, RuntimeOptions};

    #[test]
    fn a_part_runs_on_its_override_and_the_others_on_the_default() {
        let providers = Providers::all(ExecutionProvider::Cpu).with(Part::Upscaler, ExecutionProvider::OpenVino);
        assert_eq!(providers.for_part(Part::Upscaler), ExecutionProvider::OpenVino);
        assert_eq!(providers.for_part(Part::Unet), ExecutionProvider::Cpu);
        assert_eq!(providers.to_string(), "cpu (upscaler: openvino)");
        // Overriding back to the default leaves nothing to report.
        let back = providers.with(Part::Upscaler, ExecutionProvider::Cpu);
        assert_eq!(back, Providers::all(ExecutionProvider::Cpu));
        assert_eq!(back.to_string(), "cpu");
    }

    #[test]
    fn the_library_is_the_one_every_provider_in_use_needs() {
        let flavour = |providers: Providers| providers.library_flavour().map_err(|e| e.to_string());
        assert_eq!(flavour(Providers::default()), Ok("cpu"));
        let cpu_but_upscaler = Providers::all(ExecutionProvider::Cpu).with(Part::Upscaler, ExecutionProvider::OpenVino);
        assert_eq!(flavour(cpu_but_upscaler), Ok("openvino"));
        let openvino_but_unet = Providers::all(ExecutionProvider::OpenVino).with(Part::Unet, ExecutionProvider::Cpu);
        assert_eq!(flavour(openvino_but_unet), Ok("openvino"));
        let cuda_and_tensorrt = Providers::all(ExecutionProvider::Cuda).with(Part::Unet, ExecutionProvider::TensorRt);
        assert_eq!(flavour(cuda_and_tensorrt), Ok("gpu"));

        let cuda_and_openvino =
            Providers::all(ExecutionProvider::Cuda).with(Part::Upscaler, ExecutionProvider::OpenVino);
        let error = flavour(cuda_and_openvino).unwrap_err();
        assert!(error.contains("cuda (upscaler: openvino)") && error.contains("one process loads one"), "{error}");
        // Refused before any library is looked for, so a named library does not hide the conflict.
        let options = RuntimeOptions {
            providers: Providers::all(ExecutionProvider::Cuda).with(Part::VaeDecoder, ExecutionProvider::OpenVino),
            library: Some(PathBuf::from("/nonexistent/libonnxruntime.so")),
            ..RuntimeOptions::default()
        };
        let error = Runtime::new(&options).err().expect("mixed libraries must be refused").to_string();
        assert!(error.contains("one process loads one"), "{error}");
    }

    #[test]
    fn parts_are_named_as_in_the_model_directory() {
        for part in Part::ALL {
            assert_eq!(part.name().parse::<Part>().unwrap(), part);
        }
        let error = "decoder".parse::<Part>().unwrap_err().to_string();
        assert!(error.contains("`decoder`") && error.contains("text_encoder, unet, vae_decoder, upscaler"), "{error}");
    }
}
