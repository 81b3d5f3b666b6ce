"""Running the study: cached stages, the notebook runner, the `babel` command, reports and reproduction checks.

The names the notebooks and their readers call; the modules below hold the rest."""

from .pruning_eval import (
    benchmarks,
    cross_language,
    held_out,
    metric_table,
    pruned_speed,
    pruning_eval_table,
    run_masks,
    split_comparison,
)
from .stages import expert_grid_frequencies, load_kind, load_labels, load_masks, pruning_masks, record_language, split

__all__ = [
    "benchmarks",
    "cross_language",
    "expert_grid_frequencies",
    "held_out",
    "load_kind",
    "load_labels",
    "load_masks",
    "metric_table",
    "pruned_speed",
    "pruning_eval_table",
    "pruning_masks",
    "record_language",
    "run_masks",
    "split",
    "split_comparison",
]
