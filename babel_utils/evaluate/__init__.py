"""Stage 8 (08_pruning_eval): scoring masked models on held-out text and tasks, with intervals.

The names the notebooks and their readers call; the modules below hold the rest."""

from .comparisons import (
    MATCH_TOLERANCE,
    Bootstrap,
    against_dense,
    cross_language_matrix,
    describe_cross_language,
    describe_layerwise,
    describe_matches,
    describe_own_mask,
    describe_split_comparison,
    describe_split_intervals,
    guided_summary,
    guided_vs_random,
    layerwise_vs_sorting,
    match_table,
    own_mask_intervals,
    task_intervals,
    verdict,
)

__all__ = [
    "MATCH_TOLERANCE",
    "Bootstrap",
    "against_dense",
    "cross_language_matrix",
    "describe_cross_language",
    "describe_layerwise",
    "describe_matches",
    "describe_own_mask",
    "describe_split_comparison",
    "describe_split_intervals",
    "guided_summary",
    "guided_vs_random",
    "layerwise_vs_sorting",
    "match_table",
    "own_mask_intervals",
    "task_intervals",
    "verdict",
]
