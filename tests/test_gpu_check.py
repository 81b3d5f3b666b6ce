"""benchmarks/gpu_check.py --tiny runs every part of the GPU check on the CPU, and every row comes out clean.

The GPU run (issue 14) gets one chance on a borrowed machine; this test runs the same code paths with tiny
shapes, so a part that breaks here would have broken there. It executes a notebook, so it runs with the
pipelines (make test-pipelines, which CI runs after make test).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipelines

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"

# Every row the six parts write in --tiny mode (part 6: notebook 01).
EXPECTED_ROWS = {
    1: ["record: bare forward, tokens/s", "record: bare forward, share of bf16 dense peak",
        "record: babel recording, tokens/s", "record: babel recording / bare forward",
        "record: peak memory, bare forward", "record: peak memory, babel recording",
        "record: naive hooks, tokens/s", "record: naive hooks / bare forward", "record: peak memory, naive hooks",
        "record: babel counts equal naive counts",
        "projection: 9 x 1M tokens, Llama-2-7B shape, hours", "projection: 9 x 1M tokens, Llama-3-8B, hours",
        "projection: 9 x 1M tokens, Llama-3-70B, hours"],
    2: ["split: all layers on the device, seconds", "split: K-Means search alone, seconds", "split: mean objective",
        "split: layer 0 labels on the device equal the CPU's", "split: layer 0 adjusted Rand index, device vs CPU",
        "split: one layer on the CPU, seconds"],
    3: ["masked eval: unmasked evaluation, tokens/s", "masked eval: masked evaluation, tokens/s",
        "masked eval: masked / unmasked"],
    4: ["pruned: dense body forward, ms", "pruned 25%: body forward, ms", "pruned 25%: speed-up over dense",
        "pruned 50%: body forward, ms", "pruned 50%: speed-up over dense"],
    5: ["device_map: counts equal the single-device counts", "device_map: layers whose weights are elsewhere"],
    6: ["smoke: 01_split.ipynb, seconds", "smoke: notebooks succeeded"],
}
# Rows with no value on the CPU (their notes say "not measured"): GPU memory.
CPU_UNMEASURED = {"record: peak memory, bare forward", "record: peak memory, babel recording",
                  "record: peak memory, naive hooks"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One --tiny run of the GPU check: (exit code, JSON, stdout + stderr)."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "x.json"
    env = {**os.environ, "BABEL_CACHE": str(tmp / "cache"), "BABEL_RUNS_DIR": str(tmp / "runs"),
           "BABEL_FIGURES_DIR": str(tmp / "figures"), "TQDM_DISABLE": "1"}
    env.pop("OUT", None)
    # --peak-tflops: the CPU has no entry in the peak table; a given peak runs the utilisation code path too.
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out), "--peak-tflops", "1"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert out.exists(), f"no JSON written; output:\n{log[-4000:]}"
    return proc.returncode, json.loads(out.read_text()), log


def test_exits_cleanly(tiny_run):
    code, _, log = tiny_run
    assert code == 0, log[-4000:]


def test_every_row_of_every_part_is_there(tiny_run):
    _, report, _ = tiny_run
    names = {row["name"] for row in report["rows"]}
    missing = [name for rows in EXPECTED_ROWS.values() for name in rows if name not in names]
    assert not missing, f"missing rows: {missing}"
    parts = {row["name"]: row["part"] for row in report["rows"]}
    assert all(parts[name] == part for part, rows in EXPECTED_ROWS.items() for name in rows)
    assert report["meta"]["tiny"] is True and report["meta"]["informational"] is True


def test_no_row_has_an_error(tiny_run):
    _, report, _ = tiny_run
    errors = [(row["name"], row["error"], row["notes"]) for row in report["rows"] if row["error"]]
    assert not errors, errors
    skipped = [row["name"] for row in report["rows"] if row["notes"].startswith("skipped")]
    assert not skipped, f"skipped on the CPU: {skipped}"


def test_correctness_rows_hold(tiny_run):
    _, report, _ = tiny_run
    rows = {row["name"]: row for row in report["rows"]}
    assert rows["device_map: counts equal the single-device counts"]["value"] is True
    assert rows["device_map: layers whose weights are elsewhere"]["pass"] is True  # the map really offloaded
    assert rows["split: layer 0 labels on the device equal the CPU's"]["value"] is True  # CPU vs CPU: identical
    assert rows["split: layer 0 adjusted Rand index, device vs CPU"]["value"] == 1.0
    assert rows["record: babel counts equal naive counts"]["value"] is True
    assert rows["smoke: notebooks succeeded"]["value"] == 1 and rows["smoke: notebooks succeeded"]["pass"] is True


def test_numeric_rows_are_finite_and_positive(tiny_run):
    _, report, _ = tiny_run
    bad = []
    for row in report["rows"]:
        value = row["value"]
        if row["name"] in CPU_UNMEASURED:
            assert value is None and row["notes"].startswith("not measured"), row
            continue
        if isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            bad.append((row["name"], value))
    assert not bad, f"rows without a finite positive value: {bad}"


def test_rows_with_an_aim_say_whether_they_meet_it(tiny_run):
    _, report, _ = tiny_run
    for row in report["rows"]:
        if row["aim"] and row["value"] is not None:
            assert isinstance(row["pass"], bool), row
