"""Stage 1 (01_split): each FFN's neurons grouped into equal experts by balanced K-Means.

The names the notebooks and their readers call; the modules below hold the rest."""

from .clustering import compare_with_kmeans_constrained, describe_comparison, objective, split_model
from .kmeans import balanced_kmeans

__all__ = ["balanced_kmeans", "compare_with_kmeans_constrained", "describe_comparison", "objective", "split_model"]
