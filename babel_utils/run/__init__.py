"""Running the study: cached stages, the notebook runner, the `babel` command, reports and reproduction checks.

The names the notebooks call; the modules below hold the rest."""

from .stages import (
    eval_mgsm,
    evaluate_jobs,
    expert_grid_frequencies,
    heldout_blocks,
    load_kind,
    load_labels,
    load_masks,
    pruning_masks,
    record_language,
    split,
    split_compare,
    split_frequencies,
)

__all__ = [
    "eval_mgsm",
    "evaluate_jobs",
    "expert_grid_frequencies",
    "heldout_blocks",
    "load_kind",
    "load_labels",
    "load_masks",
    "pruning_masks",
    "record_language",
    "split",
    "split_compare",
    "split_frequencies",
]
