"""Prints, as JSON, a hash of the expert labels of a few real and random matrices (run in a subprocess
under a forced kernel set by tests/test_kernel_sets.py, so the labels can be compared across kernels)."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import torch

from babel_utils.core.machine import machine_info
from babel_utils.models.loading import dequantized_path
from babel_utils.split.clustering import cluster_matrix
from babel_utils.split.kmeans import balanced_kmeans

# Layers whose labels differed between kernel sets before the split was made exact (issue 9).
GEMMA_LAYERS = (1, 7, 14)
RANDOM_SHAPES = ((512, 48, 16), (1000, 50, 125), (384, 24, 48))  # rows, dims, clusters


def digest(labels: torch.Tensor) -> str:
    """Short hash of a label vector."""
    return hashlib.sha256(np.ascontiguousarray(labels.cpu().numpy().astype(np.int64)).tobytes()).hexdigest()[:16]


def main() -> None:
    """Split the matrices and print {name: hash} with the machine facts."""
    out: dict[str, str] = {}
    for rows, dims, k in RANDOM_SHAPES:
        # numpy's generator, not torch.randn: torch draws normals with vectorised transcendentals, so the
        # matrix itself would differ between kernel sets
        x = torch.from_numpy(np.random.default_rng(rows + dims).standard_normal((rows, dims)).astype(np.float32))
        out[f"random {rows}x{dims}/{k}"] = digest(balanced_kmeans(x, k, seed=1).labels)
    if "--gemma" in sys.argv:
        from transformers import AutoModelForCausalLM  # the weights only: the split needs no tokenizer

        model = AutoModelForCausalLM.from_pretrained(dequantized_path("gemma-3-270m"), dtype=torch.float32)
        for layer in GEMMA_LAYERS:
            out[f"gemma layer {layer}"] = digest(balanced_kmeans(cluster_matrix(model, layer), 256, seed=layer).labels)
        out["gemma layer 3 gate+up"] = digest(balanced_kmeans(cluster_matrix(model, 3, "gate+up"), 256, seed=3,
                                                              swap_rounds=8).labels)
    print(json.dumps({"labels": out, "machine": machine_info()}))


if __name__ == "__main__":
    main()
