"""Findings as a reader sees them: what the run found, how it compares with the paper, what surprised.

`Findings` renders as Markdown in Jupyter and in the documentation (its `_repr_markdown_`) and as plain text
elsewhere; the sentences are built by code from the run's numbers, so they stay true for any model and languages."""

from __future__ import annotations

from dataclasses import dataclass, field

from .claims import VERDICTS, check_claim


@dataclass(frozen=True)
class Comparison:
    """This run's answer to one claim of the paper."""

    claim: str  # a key of claims.CLAIMS
    found: str  # what this run measured, with its statistic
    verdict: str  # claims.AGREES, DISAGREES or CANNOT_TELL
    rule: str = ""  # how the verdict follows from the numbers

    def __post_init__(self) -> None:
        check_claim(self.claim)
        if self.verdict not in VERDICTS:
            raise ValueError(f"Unknown verdict {self.verdict!r}; one of {', '.join(VERDICTS)}.")


@dataclass(frozen=True)
class Findings:
    """A notebook's findings: plain sentences, the comparisons with the paper, and the surprises."""

    notebook: str
    found: list[str]
    against_paper: list[Comparison] = field(default_factory=list)
    surprises: list[str] = field(default_factory=list)

    def _repr_markdown_(self) -> str:
        lines = ["### What this run found", ""] + [f"- {line}" for line in _lines(self.found)]
        if self.against_paper:
            lines += ["", "### Against the paper", "", "| The paper reports | This run | Verdict |", "|---|---|---|"]
            for c in self.against_paper:
                claim = check_claim(c.claim)
                rule = f" <br>*{_cell(c.rule)}*" if c.rule else ""
                lines.append(f"| {_cell(claim.paper)} (method, section {claim.section}) | {_cell(c.found)}{rule} | "
                             f"**{c.verdict}** |")
        if self.surprises:
            lines += ["", "### Surprises", ""] + [f"- {text}" for text in self.surprises]
        return "\n".join(lines)

    def __repr__(self) -> str:
        lines = ["What this run found:"] + [f"- {line}" for line in _lines(self.found)]
        if self.against_paper:
            lines.append("Against the paper:")
            lines += [f"- {check_claim(c.claim).paper} This run: {c.found} -> {c.verdict}." for c in self.against_paper]
        if self.surprises:
            lines += ["Surprises:"] + [f"- {text}" for text in self.surprises]
        return "\n".join(lines)


def _lines(texts: list[str]) -> list[str]:
    """Each line of each text on its own (a describe_* function may say several things, one per line)."""
    return [line.strip() for text in texts for line in text.splitlines() if line.strip()]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
