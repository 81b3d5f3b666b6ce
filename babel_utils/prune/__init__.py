"""Stage 7 (07_pruning): pruning masks from the frequencies, one table entry per method.

The names the notebooks call; the modules below hold the rest."""

from .masks import (
    activation_levels,
    dense_spec,
    describe_overlap,
    find_spec,
    mask_overlap,
    mask_table,
    masks_to_results,
    most_different_pair,
    nearest_ratio,
    paired_median_ms,
    resolve_top_k,
    sorting_mask,
)
from .methods import METHODS, build_language_masks, build_masks, check_masks, check_method, describe_specs

__all__ = [
    "METHODS",
    "activation_levels",
    "build_language_masks",
    "build_masks",
    "check_masks",
    "check_method",
    "dense_spec",
    "describe_overlap",
    "describe_specs",
    "find_spec",
    "mask_overlap",
    "mask_table",
    "masks_to_results",
    "most_different_pair",
    "nearest_ratio",
    "paired_median_ms",
    "resolve_top_k",
    "sorting_mask",
]
