"""Stage 2 (02_record): which experts each token selects, counted into activation frequencies.

The names the notebooks and their readers call; the modules below hold the rest."""

from .counting import frequency_table
from .frequencies import (
    activation_levels,
    check_same_tokens,
    describe_levels,
    frequency_array,
    levels_by_language,
    load_run_frequencies,
)

__all__ = [
    "activation_levels",
    "check_same_tokens",
    "describe_levels",
    "frequency_array",
    "frequency_table",
    "levels_by_language",
    "load_run_frequencies",
]
