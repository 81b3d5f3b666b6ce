"""Findings: what each notebook's run found, in words built from its numbers, against the paper's claims.

The names the notebooks and their readers call; the modules below hold the rest."""

from .claims import AGREES, CANNOT_TELL, CLAIMS, DISAGREES, Claim, claims_of
from .notebooks import heatmaps, language_similarity, pruning, pruning_eval, record, shared_experts, split, tuning
from .report import Comparison, Findings

__all__ = [
    "AGREES",
    "CANNOT_TELL",
    "CLAIMS",
    "DISAGREES",
    "Claim",
    "Comparison",
    "Findings",
    "claims_of",
    "heatmaps",
    "language_similarity",
    "pruning",
    "pruning_eval",
    "record",
    "shared_experts",
    "split",
    "tuning",
]
