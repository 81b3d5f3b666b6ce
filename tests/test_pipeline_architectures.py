"""The whole notebook pipeline through papermill on tiny models of the other FFN kinds (make test-architectures;
CI runs it after make test): a plain FFN with biases (GPT-NeoX, Pythia's layout) on configs/smoke-plain.yaml."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_notebooks_smoke import EXPECTED, _expand

from babel_utils import config, paths, runner
from babel_utils.adapters import PLAIN, get_adapter
from babel_utils.models import load_model

pytestmark = pytest.mark.architectures


@pytest.mark.parametrize("name, kind", [("smoke-plain", PLAIN)])
def test_every_notebook_runs_on_a_tiny_model_of_another_ffn_kind(name, kind):
    cfg = config.load_config(paths.CONFIGS_DIR / f"{name}.yaml")
    model, _ = load_model(cfg.model, device="cpu")
    assert get_adapter(model).kind == kind
    result = runner.run(paths.CONFIGS_DIR / f"{name}.yaml", jobs=2)
    res, figs = paths.results_dir(result.run_dir), paths.run_figures_dir(result.run_dir)
    missing = []
    for nb in result.notebooks:
        files, stems = EXPECTED.get(nb.name[:2], ([], []))
        missing += [f"results/{f}" for f in _expand(files, cfg.languages) if not (res / f).exists()]
        missing += [f"figures/{s}.{ext}" for s in _expand(stems, cfg.languages) for ext in ("png", "pdf")
                    if not (figs / f"{s}.{ext}").exists()]
    assert len(result.notebooks) == 8 and not missing, f"missing outputs: {missing}"
    labels = np.load(res / "labels.npy")  # the rows of fc1 split into balanced experts
    assert labels.shape == (4, 256) and (np.bincount(labels[0]) == 256 // cfg.n_experts).all()
    speed = pd.read_parquet(res / "pruned_speed.parquet")  # 08 checked masked = physically pruned before timing
    assert (speed["FFN share kept"] < 1).sum() == 2
