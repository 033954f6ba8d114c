//! The arithmetic of the parts on OpenVINO, and whether this CPU has what bf16 needs.

use std::str::FromStr;

use super::by_name;
use super::providers::{ExecutionProvider, Part, Providers};
use crate::error::{EngineError, Result};

/// The arithmetic of the parts on OpenVINO. The other providers run what the graph holds (for CUDA,
/// fp16 comes from fp16 model files: `deploy/export/fp16.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The graph's own float32, as diffusers' references are computed.
    #[default]
    Fp32,
    /// bfloat16 matrix products (OpenVINO's `INFERENCE_PRECISION_HINT`), for CPUs with AVX512-BF16
    /// or AMX: on a 2-core Xeon with AMX a Table 6 image ran 3.4× faster (U-Net 655 against 2194 ms
    /// a step), and images moved by the amounts deploy/bench/precision/PRECISION.md states. Opt-in, because
    /// the images change.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Self::Fp32, Self::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        }
    }

    /// Refuses bf16 where it would not do what it says: on no OpenVINO part (the only provider that
    /// takes the hint), or on a CPU without bf16 instructions, where OpenVINO would emulate it
    /// more slowly than fp32. `cpu_flags` gives the `flags` line of /proc/cpuinfo, read only for bf16.
    pub(super) fn check(self, providers: &Providers, cpu_flags: impl FnOnce() -> String) -> Result<()> {
        if self == Self::Fp32 {
            return Ok(());
        }
        if !Part::ALL.iter().any(|&part| providers.for_part(part) == ExecutionProvider::OpenVino) {
            return Err(EngineError::invalid(
                "precision",
                format!(
                    "bf16 runs only on the openvino provider and no part is on it ({providers}); put the parts \
                     that should run in bf16 on openvino (execution_provider or part_providers), or use fp32"
                ),
            ));
        }
        if !has_bf16(&cpu_flags()) {
            return Err(EngineError::invalid(
                "precision",
                "bf16 needs a CPU with avx512_bf16 or amx_bf16 (see /proc/cpuinfo), and this one has neither: \
                 OpenVINO would emulate it, slower than fp32; use fp32 on this machine",
            ));
        }
        Ok(())
    }
}

named_in_config!(Precision, "precision");

/// Whether this CPU has the instructions `Precision::Bf16` needs: AVX512-BF16 or AMX-BF16.
pub fn cpu_has_bf16() -> bool {
    has_bf16(&cpu_flags())
}

pub(super) fn has_bf16(cpu_flags: &str) -> bool {
    cpu_flags.split_whitespace().any(|flag| flag == "avx512_bf16" || flag == "amx_bf16")
}

/// The `flags` line of the first core in /proc/cpuinfo; empty where there is none.
pub(super) fn cpu_flags() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|line| line.split(':').next().is_some_and(|field| field.trim() == "flags"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, flags)| flags.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_is_refused_without_an_openvino_part_or_bf16_instructions() {
        let amx = || "fpu avx512f avx512_bf16 amx_bf16 amx_tile".to_string();
        let on_cpu = Providers::all(ExecutionProvider::Cpu);
        let unet_on_openvino = on_cpu.clone().with(Part::Unet, ExecutionProvider::OpenVino);
        assert!(Precision::Fp32.check(&on_cpu, || unreachable!("fp32 reads no flags")).is_ok());
        assert!(Precision::Bf16.check(&unet_on_openvino, amx).is_ok());
        let avx512_bf16 = || "fpu avx512f avx512_bf16".to_string();
        assert!(Precision::Bf16.check(&unet_on_openvino, avx512_bf16).is_ok(), "AVX512-BF16 is enough");

        let error = Precision::Bf16.check(&on_cpu, amx).unwrap_err().to_string();
        assert!(error.contains("invalid precision") && error.contains("only on the openvino provider"), "{error}");
        let error = Precision::Bf16.check(&unet_on_openvino, || "fpu avx2 avx512f".into()).unwrap_err().to_string();
        assert!(error.contains("avx512_bf16 or amx_bf16") && error.contains("use fp32"), "{error}");

        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        let error = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(error.contains("`fp16` is not one of fp32, bf16"), "{error}");
    }

    #[test]
    fn cpu_flags_come_from_proc_cpuinfo() {
        // Every x86-64 CPU has these; on other machines the line is empty and bf16 is refused.
        if cfg!(target_arch = "x86_64") {
            let flags = cpu_flags();
            assert!(flags.split_whitespace().any(|flag| flag == "sse2"), "{flags}");
        }
    }
}
