"""Every path the project reads or writes, in one place."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent
RESOURCES_DIR = PACKAGE_DIR / "resources"
UDHR_DIR = RESOURCES_DIR / "udhr"
UDHR_ARCHIVE_NAME = "udhr.jsonl.gz"  # every usable declaration, in UDHR_DIR (scripts/extract_udhr.py)
LANGUAGES_TABLE = RESOURCES_DIR / "languages.json"  # the language table (scripts/build_language_table.py)
URIEL_FEATURES = RESOURCES_DIR / "uriel_features.json.gz"  # URIEL features of its languages (same script)
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
CONFIGS_DIR = REPO_ROOT / "configs"
FIGURES_DIR = REPO_ROOT / "figures"
RUNS_DIR = REPO_ROOT / "runs"


def runs_dir() -> Path:
    """Where run folders go; `BABEL_RUNS_DIR` moves it (tests use a temporary folder)."""
    return Path(os.environ.get("BABEL_RUNS_DIR", RUNS_DIR)).expanduser()


def figures_dir(run_name: str) -> Path:
    """The repository's copy of a run's figures: `figures/<run_name>/`; `BABEL_FIGURES_DIR` moves it."""
    return Path(os.environ.get("BABEL_FIGURES_DIR", FIGURES_DIR)).expanduser() / run_name


def cache_dir() -> Path:
    """Root of the stage and model caches; `BABEL_CACHE` moves it."""
    return Path(os.environ.get("BABEL_CACHE", REPO_ROOT / ".cache" / "babel")).expanduser()


def model_cache_dir() -> Path:
    """Where dequantized GGUF models are kept; `BABEL_MODEL_CACHE` moves it."""
    default = cache_dir() / "models"
    return Path(os.environ.get("BABEL_MODEL_CACHE", default)).expanduser()


def stage_cache_dir() -> Path:
    """Where stage results are cached by parameter hash."""
    return cache_dir() / "stages"


def mgsm_dir() -> Path:
    """Default MGSM TSV folder: `BABEL_MGSM_DIR`, else `../shared/data/mgsm` beside the checkout."""
    return Path(os.environ.get("BABEL_MGSM_DIR", REPO_ROOT.parent / "shared" / "data" / "mgsm"))


def run_dir(run_name: str) -> Path:
    """The folder of one run: executed notebooks, `results/` and `figures/`."""
    return runs_dir() / run_name


def results_dir(run: Path) -> Path:
    """Result tables of a run."""
    return Path(run) / "results"


def run_figures_dir(run: Path) -> Path:
    """Figures of a run."""
    return Path(run) / "figures"
