"""Experts of two kinds: a dense FFN's neurons split into groups, or a mixture-of-experts model's own.

The names the notebooks and their readers call; the modules below hold the rest."""

from .expert_kinds import describe_model, kind_of, kind_table, max_view_difference

__all__ = ["describe_model", "kind_of", "kind_table", "max_view_difference"]
