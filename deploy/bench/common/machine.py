"""What every benchmark file records about the CPU it ran on. Standard library only, so each bench
script can import it whichever virtual environment runs it (each script puts deploy/bench/common on
sys.path)."""


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")


def isa() -> str:
    """The widest vector extension ONNX Runtime's kernels pick from: it decides which results compare."""
    with open("/proc/cpuinfo") as cpuinfo:
        flags = set(next((line for line in cpuinfo if line.startswith("flags")), "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    # What bf16 (worker.precision) runs on: AMX tiles, else AVX512-BF16 dot products.
    bf16 = " + AMX-BF16" if "amx_bf16" in flags else " + AVX512-BF16" if "avx512_bf16" in flags else ""
    return vector + bf16
