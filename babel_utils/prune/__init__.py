"""Stage 7 (07_pruning): pruning masks from the frequencies, one table entry per method."""
