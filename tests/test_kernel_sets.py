"""Same config, same labels: the split does not depend on torch's CPU kernels, the thread count or the
order of summation (split/kmeans.py works in exact integer arithmetic); ties are broken by index everywhere. And the
same bits per byte: every LM head arithmetic gives the same numbers within its tolerance under every kernel set,
bfloat16 products native or emulated (models/lm_head.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from babel_utils.core.machine import kernel_environment, other_kernel_set
from babel_utils.core.paths import REPO_ROOT
from babel_utils.models.topk import top_mask
from babel_utils.record.counting import select
from babel_utils.run.reproduction import BPB_REL_TOL
from babel_utils.split.kmeans import balanced_kmeans, exact_bits, quantize_rows

PROBE = REPO_ROOT / "tests" / "probes" / "split_probe.py"
HEAD_PROBE = REPO_ROOT / "tests" / "probes" / "head_probe.py"


def start_probe(kernels: str, threads: int, probe: Path = PROBE, *args: str) -> subprocess.Popen:
    """A fresh interpreter running a probe under the named kernel set with `threads` threads."""
    return subprocess.Popen([sys.executable, str(probe), *args], env=kernel_environment(kernels, threads=threads),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)


def probe_result(process: subprocess.Popen) -> dict:
    """The JSON a probe printed (it failed if its exit code is not 0)."""
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.kernels
def test_split_labels_are_identical_under_every_kernel_set_and_thread_count():
    # the native kernels with 2 and 1 threads, and another kernel set: AVX2 on an AVX-512 machine (the case
    # that failed before the split was exact), the generic set (scalar torch, SSE4, MKL's compatible path)
    # on an AVX2 one. The probes run side by side: the labels must not depend on what else the machine does.
    settings = [("native", 2), ("native", 1), (other_kernel_set(), 2)]
    processes = {setting: start_probe(*setting, PROBE, "--gemma") for setting in settings}
    runs = {setting: probe_result(process) for setting, process in processes.items()}
    reference = runs[("native", 2)]["labels"]
    assert len(reference) == 7
    for (kernels, threads), found in runs.items():
        differ = sorted(k for k in reference if found["labels"][k] != reference[k])
        assert not differ, f"{kernels} kernels, {threads} threads ({found['machine']}): labels differ for {differ}"
    # at least one forced set really ran other kernels than the native ones (else this test proves nothing)
    native = runs[("native", 2)]["machine"]["cpu_capability"]
    assert runs[(other_kernel_set(), 2)]["machine"]["cpu_capability"] != native


@pytest.mark.kernels
def test_every_head_gives_the_same_bits_per_byte_under_every_kernel_set():
    # under the other kernel sets oneDNN is capped below bfloat16 products, so there bfloat16 is emulated in
    # float32; the generic set (scalar torch, SSE4 oneDNN, MKL's compatible path) differs most from the native
    # one. Each arithmetic must stay within the tolerance the reproduction check gives it.
    settings = [("native", 2), ("native", 1), (other_kernel_set(), 2), ("generic", 2)]
    runs = {setting: probe_result(start_probe(*setting, HEAD_PROBE)) for setting in settings}
    assert not runs[("generic", 2)]["native_bf16"]
    reference = runs[("native", 2)]["bits_per_byte"]
    for (kernels, threads), found in runs.items():
        for key, value in reference.items():
            tolerance = BPB_REL_TOL[key.split()[1]]
            assert found["bits_per_byte"][key] == pytest.approx(value, rel=tolerance), (kernels, threads, key)
    # bfloat16 moves bits per byte a little against float32, and the probe can tell the two apart
    for lang in ("en", "hi", "zh"):
        assert reference[f"{lang} bfloat16"] != reference[f"{lang} float32"]
        assert reference[f"{lang} bfloat16"] == pytest.approx(reference[f"{lang} float32"], rel=5e-3)


def test_quantized_dot_products_are_exact_in_any_summation_order():
    x = torch.randn(300, 500, generator=torch.Generator().manual_seed(0))
    bits = exact_bits(10)
    q, norms = quantize_rows(x, bits)
    assert torch.equal(q, torch.round(q)) and q.abs().max() <= 2 ** bits
    sums = q.view(30, 10, 500).sum(1)  # cluster sums of 10 rows
    forward = q @ sums.T
    backward = q.flip(1) @ sums.flip(1).T
    chunked = sum(q[:, i:i + 37] @ sums[:, i:i + 37].T for i in range(0, 500, 37))
    assert torch.equal(forward, backward) and torch.equal(forward, chunked)
    assert torch.equal(norms, (q.long() ** 2).sum(1))


def test_labels_do_not_change_when_the_columns_are_reordered():
    """Permuting the columns changes every float summation order; exact arithmetic keeps the labels."""
    x = torch.randn(256, 40, generator=torch.Generator().manual_seed(1))
    cols = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    a = balanced_kmeans(x, 32, seed=0)
    b = balanced_kmeans(x[:, cols], 32, seed=0)
    assert torch.equal(a.labels, b.labels) and a.objective == pytest.approx(b.objective, abs=1e-12)


def test_labels_do_not_depend_on_the_dtype_of_the_same_values():
    x = torch.randn(128, 24, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    assert torch.equal(balanced_kmeans(x, 16).labels, balanced_kmeans(x.double(), 16).labels)


def test_top_mask_breaks_ties_by_lower_index():
    values = torch.tensor([[1.0, 3.0, 2.0, 3.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0, 1.0, 0.0]], dtype=torch.float64)
    mask = top_mask(values, 3)
    assert mask.tolist() == [[False, True, True, True, False, False], [True, True, True, False, False, False]]
    order = np.argsort(-values.numpy(), axis=1, kind="stable")[:, :3]  # the plain reference
    assert [sorted(r) for r in order.tolist()] == [torch.nonzero(m).view(-1).tolist() for m in mask]


def test_select_takes_exactly_k_per_token_even_with_ties():
    scores = torch.zeros(4, 3, 5, dtype=torch.float64)  # every score tied
    assert select(scores, 6, "cross_layer").sort(-1).values.tolist() == [list(range(6))] * 4
    per_layer = select(scores, 2, "per_layer")
    assert per_layer.sort(-1).values.tolist() == [[0, 1, 5, 6, 10, 11]] * 4


def test_scores_are_summed_in_a_fixed_order():
    from babel_utils.record.counting import ordered_sum

    x = torch.randn(7, 43, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(ordered_sum(x), x.sum(-1), atol=1e-5)
    assert torch.allclose(ordered_sum(x.double()), x.double().sum(-1), atol=1e-12)
