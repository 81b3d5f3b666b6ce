"""What the paper reports, one table entry per claim, each with the section of docs/method.md that states it.

The notebooks' findings compare the run's numbers with these claims (findings/notebooks.py); the claims are data
here, not prose repeated in eight notebooks. A new claim is one entry in CLAIMS and one comparison in the builder
of its notebook."""

from __future__ import annotations

from dataclasses import dataclass

AGREES, DISAGREES, CANNOT_TELL = "agrees", "disagrees", "cannot tell"
VERDICTS = (AGREES, DISAGREES, CANNOT_TELL)


@dataclass(frozen=True)
class Claim:
    """One statement of the paper: what it says, where docs/method.md states the method behind it."""

    notebook: str
    paper: str  # what the paper reports, in the project's words
    section: str  # the section of docs/method.md


CLAIMS: dict[str, Claim] = {
    "view-exact": Claim("01", "Grouping the FFN's neurons into experts changes no weight: with every expert on, "
                              "the model computes exactly what the dense model computes.", "2"),
    "heatmaps-differ": Claim("03", "Heatmaps of expert frequencies differ from language to language.", "4"),
    "shared-experts": Claim("04", "Some experts are high-frequency in every language: multilingual shared "
                                  "experts.", "4"),
    "specific-experts": Claim("04", "Other experts are high-frequency in one language only: language-specific "
                                    "experts.", "4"),
    "related-alike": Claim("05", "Related languages (the same genus or family) have similar expert frequencies.",
                           "4"),
    "tuning-last-layer": Claim("06", "Instruction tuning moves the frequencies most in the last layers.", "4"),
    "guided-beats-random": Claim("08", "Pruning the experts a language uses least hurts far less than pruning as "
                                       "many random experts.", "5"),
    "pruning-free": Claim("08", "Some frequency-guided pruning costs the language nothing at all.", "5"),
    "layerwise-better": Claim("08", "Per-layer pruning rates set by each layer's activation level do better still "
                                    "than one rate for every layer.", "5"),
    "real-speedup": Claim("08", "A model with the pruned experts removed runs about 30 % faster.", "5"),
}


def claims_of(notebook: str) -> dict[str, Claim]:
    """The claims a notebook's findings answer."""
    return {key: claim for key, claim in CLAIMS.items() if claim.notebook == notebook}


def check_claim(key: str) -> Claim:
    """The table entry of a claim, or an error naming the known claims."""
    if key not in CLAIMS:
        raise ValueError(f"Unknown claim {key!r}; known: {', '.join(CLAIMS)}.")
    return CLAIMS[key]
