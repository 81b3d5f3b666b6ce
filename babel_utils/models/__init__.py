"""Loading a model and reading its architecture: adapters, FFN hooks, the MoE view of an FFN, the LM head.

The names the notebooks and their readers call; the modules below hold the rest."""

from .adapters import d_ff, model_device, n_layers
from .loading import load_model

__all__ = ["d_ff", "load_model", "model_device", "n_layers"]
