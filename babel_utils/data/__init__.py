"""The text a run reads: the UDHR, a hub corpus or local files, split into calibration and held-out parts.

The names the notebooks and their readers call; the modules below hold the rest."""

from .text import calibration_texts, token_budget, token_sets, token_table

__all__ = ["calibration_texts", "token_budget", "token_sets", "token_table"]
