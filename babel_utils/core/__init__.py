"""Configuration, paths, the language table, the stage cache and the results folder: what every stage stands on.

The names the notebooks and their readers call; the modules below hold the rest."""

from .cache import provenance
from .config import BabelConfig, describe, for_notebook, load_config, summary
from .machine import describe_machine
from .paths import results_dir, run_dir
from .results import load, package_versions, save

__all__ = [
    "BabelConfig",
    "describe",
    "describe_machine",
    "for_notebook",
    "load",
    "load_config",
    "package_versions",
    "provenance",
    "results_dir",
    "run_dir",
    "save",
    "summary",
]
