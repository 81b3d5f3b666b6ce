"""Stage 8 (08_pruning_eval): scoring masked models on held-out text and tasks, with intervals."""
