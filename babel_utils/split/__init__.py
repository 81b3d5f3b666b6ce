"""Stage 1 (01_split): each FFN's neurons grouped into equal experts by balanced K-Means.

The names the notebooks call; the modules below hold the rest."""

from .clustering import describe_comparison, named_layers

__all__ = ["describe_comparison", "named_layers"]
