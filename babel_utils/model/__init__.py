"""Loading a model and reading its architecture: adapters, FFN hooks, the MoE view of an FFN, the LM head."""
