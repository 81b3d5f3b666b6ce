"""Shared fixtures: tiny models and temporary run, cache and figure folders."""

from __future__ import annotations

import os

import numpy as np
import pytest

from babel_utils.models.loading import load_model

# The reproduction test compares a fresh run of the notebooks with the committed reference; it runs when
# make test (or make test-kernels) has made that run and names it in BABEL_REPRODUCE_RUN.
collect_ignore = [] if os.environ.get("BABEL_REPRODUCE_RUN") else ["reproduction"]


@pytest.fixture(autouse=True)
def isolated_folders(tmp_path, monkeypatch):
    """Every test writes its runs, stage cache and figures under its own temporary folder."""
    monkeypatch.setenv("BABEL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("BABEL_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("BABEL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session", params=["tiny-llama", "tiny-gemma3"])
def tiny(request):
    """A tiny random model of each supported test architecture, with its byte tokenizer."""
    model, tokenizer = load_model(request.param, device="cpu")
    return model, tokenizer


def balanced_labels(n_layers: int, d_ff: int, n_experts: int, seed: int = 0) -> np.ndarray:
    """Random balanced labels [n_layers, d_ff] for tests."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(np.arange(d_ff) % n_experts) for _ in range(n_layers)])
