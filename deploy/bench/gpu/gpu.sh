#!/usr/bin/env bash
# Run with: bash deploy/bench/gpu/gpu.sh [PAYLOAD] [STEP ...]   (from the repository root, on a machine
# with an NVIDIA GPU, CUDA 13 and PyTorch; results under $OUT, or /tmp/rapid-gpu)
#
# Issue 4's GPU check, for machines that cannot build or download anything (the lent GPU machine:
# no cargo, no network, 64 MiB a transfer). `make gpu-payload` fills PAYLOAD (default .gpu/) on a
# build machine with what this needs:
#   ort-gpu-sm90.tar.xz.a?   the onnxruntime-gpu wheel's libraries in 48 MB parts, its CUDA
#                            provider's kernels for other GPUs zeroed (fatbin_keep.py says why)
#   rapid-worker.xz, rapid-scheduler.xz, rapid_engine-tests.xz, gpu_parity-tests.xz   release
#                            binaries, rapid_engine-tests with `--features cuda`
#   *.whl                    diffusers and what it needs beyond that machine's PyTorch image
#   table6/, table6-fused/, table6-fp16/   the Table 6 model without its random weights
#                            (weightless.py strip): as exported, attention fused, fused + fp16
# A payload may travel in several transfers: each run first adds PAYLOAD to /tmp/rapid-gpu-payload,
# and the steps use what has gathered there.
#
# STEPs (default: all five), each logged and none stopping the next (REPEATS: worker runs per
# model directory, default 2; MODELS: the worker's rows, NAME=DIRECTORY ..., default all three):
#   kernel    the CUDA flash-attention kernel's tests (attention::) on the GPU;
#   tensorrt  the worker on TensorRT twice with an engine cache: start to image cold (engines built)
#             and warm (loaded), or what it says where TensorRT is not installed;
#   bench     gpu.py: the worker on the CUDA provider (fp32 as exported, fp32 and fp16 with ONNX
#             Runtime's fused attention) against diffusers' PyTorch modules in fp32 and fp16;
#   parity    worker/engine/tests/gpu_parity.rs: the fixture models' diffusers cases on CUDA and
#             TensorRT (fp32 within 2/255, fp16 within its stated bound) → $OUT/gpu-parity.txt;
#   overlap   deploy/bench/overlap/overlap.py: images per second of one CUDA worker under a backlog
#             of 1024-px Table 6 images (fp16, fused), marking and upload after each generation
#             against beside the next one (worker.overlap_finishing 0 and 1) → $OUT/overlap/.
set -uo pipefail

payload=${1:-.gpu}
shift || true
steps=${*:-kernel tensorrt parity bench overlap}
wants() { [[ " $steps " == *" $1 "* ]]; }
# The worker's rows: NAME=DIRECTORY of the payload.
models=${MODELS:-fp32=table6 fp32-fused=table6-fused fp16-fused=table6-fp16}
out=${OUT:-/tmp/rapid-gpu}
stash=/tmp/rapid-gpu-payload
ort=/tmp/rapid-ort
mkdir -p "$out" "$stash" "$ort/cudarc"
exec > >(tee -a "$out/log.txt") 2>&1
step() { echo "== $(date +%T) $*"; }
# Python's lzma: the machine's image may have no xz.
unxz_to() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)' > "$1"; }

step "machine"
cp -r "$payload"/. "$stash"/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
for binary in rapid-worker rapid-scheduler rapid_engine-tests gpu_parity-tests; do
  if [[ -e $stash/$binary.xz && ! -x $stash/$binary ]]; then
    unxz_to "$stash/$binary" < "$stash/$binary.xz" && chmod +x "$stash/$binary"
  fi
done

step "libraries"
if [[ ! -e $ort/libonnxruntime.so.1.31.1 ]] && { wants tensorrt || wants parity || wants bench || wants overlap; }; then
  parts=$(ls "$stash"/ort-gpu-sm90.tar.xz.a? 2>/dev/null)
  if [[ $(cat $parts | sha256sum | cut -d' ' -f1) != $(cat "$stash/ort-gpu-sm90.tar.xz.sha256") ]]; then
    echo "gpu: the ONNX Runtime parts here ($(echo $parts)) do not add up to ort-gpu-sm90.tar.xz; send every part"
    exit 1
  fi
  cat $parts | unxz_to "$stash/ort.tar" && tar -xf "$stash/ort.tar" -C "$ort" && rm "$stash/ort.tar"
fi
# The CUDA provider needs CUDA 13's cuBLAS, cuDNN 9, cuFFT, cuRAND and runtime: PyTorch's wheels
# on that image carry them.
site=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))')
cuda_libs=$(find $site -path '*nvidia*' -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
# cudarc (built against CUDA 12.6's API, which CUDA 13 keeps) looks for NVRTC as libnvrtc.so.
nvrtc=$(find $site /usr/local/cuda/lib64 -name 'libnvrtc.so.1[2-9]*' 2>/dev/null | sort | tail -1)
[[ -n $nvrtc ]] && ln -sf "$nvrtc" "$ort/cudarc/libnvrtc.so"
export LD_LIBRARY_PATH="$ort/cudarc:$cuda_libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export ORT_DYLIB_PATH=$ort/libonnxruntime.so.1.31.1
echo "NVRTC: ${nvrtc:-not found}"
[[ -e $ort/libonnxruntime_providers_cuda.so ]] && { ldd "$ort/libonnxruntime_providers_cuda.so" | grep -E 'not found|cublas|cudart|curand'; }

if wants kernel; then
  step "CUDA flash-attention kernel tests"
  "$stash/rapid_engine-tests" attention:: --test-threads=1 --nocapture 2>&1 | tee "$out/cuda-tests.txt"
fi
if wants tensorrt || wants bench || wants overlap; then
  step "random weights"
  for model in $(wants tensorrt && echo table6) $(wants overlap && echo table6-fp16) $(for m in $models; do echo "${m#*=}"; done); do
    [[ -e $stash/$model/unet/model.onnx_data ]] || python3 deploy/export/weightless.py fill "$stash/$model"
  done
fi
if wants tensorrt; then
  step "TensorRT provider: a cold start (engines built into the cache), then a warm one (loaded)"
  for start in cold warm; do
    begun=$(date +%s.%N)
    timeout 300 "$stash/rapid-worker" generate --model "$stash/table6" --execution-provider tensorrt --steps 1 \
      --tensorrt-engine-cache /tmp/rapid-trt-engines --prompt x --out /tmp/rapid-trt.png 2>&1 | tee -a "$out/tensorrt.txt"
    echo "tensorrt $start start to image: $(python3 -c "import time; print(round(time.time() - $begun, 1))") s" \
      | tee -a "$out/tensorrt.txt"
  done
  du -sh /tmp/rapid-trt-engines/* 2>/dev/null | tee -a "$out/tensorrt.txt"
fi
if wants parity; then
  step "parity on CUDA and TensorRT (the fixture models against diffusers)"
  RAPID_REPO=$(pwd) "$stash/gpu_parity-tests" --test-threads=1 --nocapture 2>&1 | tee "$out/gpu-parity.txt"
fi
if wants bench; then
  step "Python packages"
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/rapid-site "$stash"/*.whl
  step "worker on CUDA against PyTorch"
  PYTHONPATH=/tmp/rapid-site PYTHONUNBUFFERED=1 python3 deploy/bench/gpu/gpu.py --binary "$stash/rapid-worker" \
    $(for m in $models; do echo "--model ${m%%=*}=$stash/${m#*=}"; done) --torch-model "$stash/table6" --repeats "${REPEATS:-2}" --out "$out/gpu.json"
fi
if wants overlap; then
  step "finishing beside the next generation (overlap_finishing 0 and 1)"
  PYTHONUNBUFFERED=1 python3 deploy/bench/overlap/overlap.py --scheduler "$stash/rapid-scheduler" \
    --model "$stash/table6-fp16" --provider cuda --size 256 --steps 50 --threads 4 --jobs 16 --rounds 2 \
    --out "$out/overlap"
fi
step "done"
