"""A fresh run reproduces the committed one: every check of babel_utils.run.reproduction within its tolerance.

Runs only when BABEL_REPRODUCE_RUN names a run folder (make test executes the notebooks into one, then
runs this; make test-kernels does the same for notebooks 01-02 under another CPU kernel set);
BABEL_REPRODUCE_ONLY limits the checks to some notebooks' results (e.g. 01,02).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from babel_utils.core.paths import results_dir
from babel_utils.run import reproduction

RUN = Path(os.environ.get("BABEL_REPRODUCE_RUN", "runs/default"))
ONLY = [n for n in os.environ.get("BABEL_REPRODUCE_ONLY", "").split(",") if n] or None
REFERENCE = os.environ.get("BABEL_REPRODUCE_REFERENCE", RUN.name)


@pytest.fixture(scope="module")
def values():
    return reproduction.load_reference(REFERENCE), results_dir(RUN)


@pytest.mark.parametrize("check", reproduction.checks(ONLY), ids=lambda c: f"{c.notebook} {c.name}")
def test_run_reproduces_the_reference(values, check):
    reference, folder = values
    assert check.name in reference, f"no reference value for {check.name!r}"
    problem = check.compare(reference[check.name], reproduction.summarise(folder, [check.notebook])[check.name])
    assert problem is None, f"{check.name} not reproduced (tolerance: {check.tolerance}): {problem}"
