"""Stage 7 (07_pruning): pruning masks from the frequencies, one table entry per method.

The names the notebooks and their readers call; the modules below hold the rest."""

from .masks import (
    describe_overlap,
    find_spec,
    mask_table,
    masks_to_results,
    method_shares,
    most_different_pair,
    nearest_ratio,
    overlap_long,
    overlap_tables,
    resolve_top_k,
    spec_table,
)
from .methods import METHODS, check_masks, describe_specs, static_mask_summary

__all__ = [
    "METHODS",
    "check_masks",
    "describe_overlap",
    "describe_specs",
    "find_spec",
    "mask_table",
    "masks_to_results",
    "method_shares",
    "most_different_pair",
    "nearest_ratio",
    "overlap_long",
    "overlap_tables",
    "resolve_top_k",
    "spec_table",
    "static_mask_summary",
]
