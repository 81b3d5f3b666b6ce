"""What machine made a result: torch's CPU kernels, threads, packages; and the kernel sets tests force.

torch picks its CPU kernels by instruction set (AVX2, AVX-512, ...), and so do oneDNN and MKL; a float
result's last bits depend on them and on the thread count. The split is exact (split/kmeans.py) and the same
everywhere; the recording is as close as float32 forwards allow. `KERNEL_SETS` are the environment
variables that force other kernels on one machine, so tests and CI can check both claims.
"""

from __future__ import annotations

import os
import platform
from typing import Mapping

import torch

# Environment variables that must be set before torch starts to force a kernel set.
KERNEL_SETS: dict[str, dict[str, str]] = {
    # The AVX2 kernels of torch, oneDNN and MKL (what a machine without AVX-512 runs).
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    # Scalar torch kernels, SSE4 oneDNN and MKL's generic code path: different summation orders from
    # both AVX2 and AVX-512, so it exposes order-dependent results even on an AVX2-only machine.
    "generic": {"ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41",
                "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "COMPATIBLE"},
}
KERNEL_VARIABLES = sorted({k for env in KERNEL_SETS.values() for k in env})


def cpu_capability() -> str:
    """The instruction set of the CPU kernels torch runs (e.g. AVX2, AVX512, DEFAULT)."""
    return torch.backends.cpu.get_cpu_capability()


def other_kernel_set() -> str:
    """A kernel set that differs from the native one here: AVX2 on an AVX-512 machine, else the generic one."""
    return "generic" if cpu_capability() in ("AVX2", "DEFAULT") else "avx2"


def kernel_environment(name: str, base: Mapping[str, str] | None = None, threads: int | None = None
                       ) -> dict[str, str]:
    """An environment for a subprocess that runs the named kernel set ("native" = unforced), optionally threads."""
    if name != "native" and name not in KERNEL_SETS:
        raise ValueError(f"Unknown kernel set {name!r}; known: native, {', '.join(KERNEL_SETS)}.")
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in KERNEL_VARIABLES}
    env.update(KERNEL_SETS.get(name, {}))
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def machine_info() -> dict[str, str | int]:
    """The facts about this machine that can change float results: CPU, kernels, threads, forced kernel set."""
    return {
        "cpu_capability": cpu_capability(),
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "forced_kernels": " ".join(f"{k}={os.environ[k]}" for k in KERNEL_VARIABLES if k in os.environ) or "none",
    }


def describe_machine(versions: Mapping[str, str]) -> str:
    """One paragraph for a notebook's first cell: packages, CPU kernels and threads that produced its outputs."""
    info = machine_info()
    packages = ", ".join(f"{k} {v}" for k, v in versions.items())
    return (f"Produced with {packages}; Python {info['python']} on {info['platform']}; torch CPU kernels "
            f"{info['cpu_capability']} ({info['threads']} threads; forced kernels: {info['forced_kernels']}).")
