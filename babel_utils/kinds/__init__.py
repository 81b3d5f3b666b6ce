"""Experts of two kinds: a dense FFN's neurons split into groups, or a mixture-of-experts model's own."""
