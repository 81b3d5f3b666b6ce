"""The metrics of the evaluation, one table entry each: its label in tables and figures, and its direction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric: how tables and figures name it, and whether lower values are better."""

    label: str
    lower_is_better: bool = False


METRICS: dict[str, Metric] = {
    "perplexity": Metric("perplexity", lower_is_better=True),
    "bits_per_byte": Metric("bits per byte", lower_is_better=True),
    "mgsm_accuracy": Metric("MGSM accuracy"),
    "mgsm_gold_loglik": Metric("MGSM gold-answer log-likelihood (nats)"),
    "mgsm_gold_loglik_per_token": Metric("MGSM gold-answer log-likelihood per token (nats)"),
    "xcsqa_accuracy": Metric("X-CSQA accuracy"),
}


def check_metric(name: str) -> Metric:
    """The table entry of a metric name, or an error naming the known metrics."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; known metrics: {', '.join(METRICS)}.")
    return METRICS[name]


def label(name: str) -> str:
    """A metric's label in tables and figures."""
    return check_metric(name).label


def lower_is_better(name: str) -> bool:
    """Perplexity and bits per byte fall as a model gets better; accuracies and log-likelihoods rise."""
    return check_metric(name).lower_is_better
