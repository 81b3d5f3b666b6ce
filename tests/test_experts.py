"""ExpertSplit: the facts derived from expert labels, said once."""

from __future__ import annotations

import numpy as np
import pytest

from babel_utils.models.experts import ExpertSplit


def test_split_facts_and_permutation():
    labels = np.array([[1, 0, 1, 0, 2, 2], [2, 2, 1, 1, 0, 0]])
    split = ExpertSplit(labels)
    assert (split.n_layers, split.d_ff, split.n_experts) == (2, 6, 3)
    assert split.permutation(0).tolist() == [1, 3, 0, 2, 4, 5]  # expert 0's neurons first, index order within
    assert split.permutation(1).tolist() == [4, 5, 2, 3, 0, 1]
    assert split.labels.dtype == np.int64


@pytest.mark.parametrize("bad", [np.zeros(4, dtype=int), np.full((2, 3), -1), np.zeros((2, 3)), np.zeros((0, 3), int)])
def test_bad_labels_are_named(bad):
    with pytest.raises(ValueError, match="non-negative integers"):
        ExpertSplit(bad)
