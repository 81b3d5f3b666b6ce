"""Timing several contenders fairly: one helper for 08's speed table and every benchmark."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

GIB = 2**30


@dataclass(frozen=True)
class Timing:
    """Median wall time of a callable, its peak GPU memory (GiB; None off the GPU) and its last result."""

    seconds: float
    peak_gib: float | None
    result: Any = None


def synchronize(device: torch.device | str) -> None:
    """Wait for the GPU (nothing to wait for on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def timed(fns: Mapping[str, Callable[[], Any]], device: torch.device | str = "cpu", repeats: int = 5,
          warmup: int = 1) -> dict[str, Timing]:
    """Median wall time and peak memory of each callable after `warmup` rounds; rounds interleaved (A B A B ...)
    so that a load change on a shared machine hits every contender alike; the GPU synchronised around each call."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    times: dict[str, list[float]] = {name: [] for name in fns}
    peaks: dict[str, float] = {name: 0.0 for name in fns}
    last: dict[str, Any] = {}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            synchronize(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            last[name] = fn()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
            if cuda:
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device) / GIB)
    return {name: Timing(statistics.median(times[name]), peaks[name] if cuda else None, last[name]) for name in fns}


def paired_median_ms(fns: Mapping[str, Callable[[], object]], device: torch.device | str = "cpu",
                     warmup: int = 1, repeats: int = 5) -> dict[str, float]:
    """Median wall time (ms) of each callable, timed as `timed` does."""
    return {name: t.seconds * 1000 for name, t in timed(fns, device, repeats, warmup).items()}
