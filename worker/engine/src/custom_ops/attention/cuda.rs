//! The CUDA flash-attention kernel (`flash_attention.cu`), compiled at run time with NVRTC and
//! launched through `cudarc`.
//!
//! Why NVRTC instead of a build-time `nvcc`: the crate then builds on machines with no CUDA toolkit
//! (this one, CI) and the PTX is compiled for whatever GPU the process finds. `cudarc` loads the
//! driver and NVRTC libraries with `dlopen` on first use; `CudaAttention::new` checks for them first
//! so that a machine without them gets `CudaAttentionError::NoDriver` instead of a panic.
//!
//! This runs host slices in and out (what the tests need); it is not yet an ONNX Runtime CUDA-EP
//! kernel, so sessions on the CUDA provider run the CPU op for `FlashAttention` nodes.

use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};

use super::AttentionInputs;

const SOURCE: &str = include_str!("flash_attention.cu");
/// Must match the `#define`s of the same names in `flash_attention.cu`.
const ROWS_PER_BLOCK: usize = 16;
const THREADS_PER_BLOCK: u32 = 128;
const TILE_K: usize = 32;
const MAX_VALUE_DIM: usize = 192;
/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_SHARED_LIMIT: usize = 48 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CudaAttentionError {
    #[error(
        "cannot load the CUDA {library} library: install the NVIDIA driver (libcuda) and the CUDA runtime's \
         NVRTC (libnvrtc, CUDA 12.6 or later), or put them on LD_LIBRARY_PATH"
    )]
    NoDriver { library: &'static str },

    #[error("NVRTC could not compile flash_attention.cu: {0}")]
    Compile(#[from] CompileError),

    #[error("CUDA driver call failed: {0}")]
    Driver(#[from] DriverError),

    #[error(
        "per-head widths {head_dim}/{value_head_dim} exceed the CUDA kernel's limit of {MAX_VALUE_DIM} for the \
         value; raise MAX_VALUE_DIM in flash_attention.cu and cuda.rs together"
    )]
    HeadTooWide { head_dim: usize, value_head_dim: usize },
}

/// The compiled kernel on one GPU, with the stream it runs on.
pub struct CudaAttention {
    stream: Arc<CudaStream>,
    kernel: CudaFunction,
}

impl CudaAttention {
    /// Loads the driver, compiles the kernel for GPU `ordinal` and loads it (once; reuse the value).
    pub fn new(ordinal: usize) -> Result<Self, CudaAttentionError> {
        // SAFETY: these only try to `dlopen` the libraries by their usual names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaAttentionError::NoDriver { library: "driver" });
        }
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(CudaAttentionError::NoDriver { library: "NVRTC" });
        }
        let context = CudaContext::new(ordinal)?;
        let (major, minor) = context.compute_capability()?;
        let options = CompileOptions {
            name: Some("flash_attention.cu".into()),
            options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
            ..CompileOptions::default()
        };
        let ptx = compile_ptx_with_opts(SOURCE, options)?;
        let kernel = context.load_module(ptx)?.load_function("flash_attention")?;
        Ok(Self { stream: context.default_stream(), kernel })
    }

    /// Copies the inputs to the GPU, runs the kernel and returns the output ([B, Lq, H·Dv]).
    pub fn attend(&self, inputs: &AttentionInputs) -> Result<Vec<f32>, CudaAttentionError> {
        let s = inputs.shape;
        if s.value_head_dim > MAX_VALUE_DIM {
            return Err(CudaAttentionError::HeadTooWide { head_dim: s.head_dim, value_head_dim: s.value_head_dim });
        }
        let mut out = self.stream.alloc_zeros::<f32>(s.output_elements())?;
        if s.output_elements() == 0 {
            return Ok(Vec::new());
        }
        let query = self.stream.clone_htod(inputs.query)?;
        let key = self.stream.clone_htod(inputs.key)?;
        let value = self.stream.clone_htod(inputs.value)?;

        let shared_floats = ROWS_PER_BLOCK * s.head_dim + TILE_K * (s.head_dim + 1) + TILE_K * s.value_head_dim;
        let shared_bytes = shared_floats * size_of::<f32>();
        if shared_bytes > DEFAULT_SHARED_LIMIT {
            self.kernel.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared_bytes as i32,
            )?;
        }
        let config = LaunchConfig {
            grid_dim: (s.query_len.div_ceil(ROWS_PER_BLOCK) as u32, s.heads as u32, s.batch as u32),
            block_dim: (THREADS_PER_BLOCK, 1, 1),
            shared_mem_bytes: shared_bytes as u32,
        };
        let dims = [s.query_len, s.key_len, s.heads, s.head_dim, s.value_head_dim].map(|d| d as i32);
        let mut launch = self.stream.launch_builder(&self.kernel);
        launch.arg(&query).arg(&key).arg(&value).arg(&mut out);
        for dim in &dims {
            launch.arg(dim);
        }
        launch.arg(&inputs.scale);
        // SAFETY: the argument list matches the kernel's signature (three input pointers, the output,
        // five ints, the scale); the buffers hold exactly the elements the shape addresses, as
        // `AttentionInputs::new` checked; shared memory is sized as the kernel lays it out.
        unsafe { launch.launch(config) }?;
        Ok(self.stream.clone_dtoh(&out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom_ops::attention::reference::{max_abs_diff, naive_attention, random_tensor};
    use crate::custom_ops::attention::{cpu, AttentionShape};

    /// The GPU when this machine has a CUDA driver; `None` (after saying so) when it has none, the
    /// only reason these tests may skip. Any other failure is a test failure.
    fn gpu() -> Option<CudaAttention> {
        match CudaAttention::new(0) {
            Ok(gpu) => Some(gpu),
            Err(CudaAttentionError::NoDriver { library }) => {
                println!("skipped: no CUDA driver ({library} library not found)");
                None
            }
            Err(e) => panic!("CUDA is present but unusable: {e}"),
        }
    }

    fn compare(gpu: &CudaAttention, shape: AttentionShape) {
        let query = random_tensor(shape.query_elements(), 11);
        let key = random_tensor(shape.key_elements(), 12);
        let value = random_tensor(shape.value_elements(), 13);
        let inputs = AttentionInputs::new(&query, &key, &value, shape, shape.default_scale()).unwrap();
        let on_gpu = gpu.attend(&inputs).unwrap();
        let mut on_cpu = vec![0.0; shape.output_elements()];
        cpu::attend(&inputs, &mut on_cpu);
        let reference = naive_attention(&inputs);
        let (vs_reference, vs_cpu) = (max_abs_diff(&on_gpu, &reference), max_abs_diff(&on_gpu, &on_cpu));
        assert!(vs_reference < 1e-5 && vs_cpu < 1e-5, "{shape:?}: GPU vs reference {vs_reference}, vs CPU {vs_cpu}");
    }

    #[test]
    fn cuda_kernel_matches_cpu_and_reference() {
        let Some(gpu) = gpu() else { return };
        let shape = |batch, heads, query_len, key_len, head_dim, value_head_dim| AttentionShape {
            batch,
            heads,
            query_len,
            key_len,
            head_dim,
            value_head_dim,
        };
        // Lengths off the 16-row and 32-key tiles; cross-attention; the SD 1.x head widths 40, 80
        // and 160 (the last needs more than 48 KiB of shared memory); a value wider than the key.
        for s in [
            shape(2, 3, 200, 200, 16, 16),
            shape(2, 8, 256, 77, 40, 40),
            shape(1, 8, 64, 64, 80, 80),
            shape(2, 8, 64, 77, 160, 160),
            shape(1, 2, 5, 300, 12, 20),
            shape(3, 1, 1, 1, 4, 4),
        ] {
            compare(&gpu, s);
        }
    }
}
