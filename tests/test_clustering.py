"""Balanced K-Means, the baseline splits and splitting a whole (tiny) model into experts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from babel_utils.models.loading import tiny_model
from babel_utils.split.clustering import (
    cluster_matrix,
    compare_with_kmeans_constrained,
    contiguous_split,
    objective,
    random_split,
    split_model,
)
from babel_utils.split.kmeans import balanced_kmeans, balanced_kmeans_batch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small problems gain nothing from threads, and a busy machine makes thread hand-offs very slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llama():
    """The tiny random Llama (4 layers, d_model 64, d_ff 256)."""
    return tiny_model("tiny-llama")


def planted(n_groups: int = 8, copies: int = 16, dim: int = 32, noise: float = 0.1, seed: int = 0):
    """Rows that are noisy copies of `n_groups` random directions, shuffled; and the true groups."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_groups, dim, generator=gen)
    truth = torch.arange(n_groups).repeat_interleave(copies)
    x = centers[truth] + noise * torch.randn(n_groups * copies, dim, generator=gen)
    perm = torch.randperm(len(truth), generator=gen)
    return x[perm], truth[perm]


@pytest.mark.parametrize("n_rows,n_clusters", [(240, 12), (256, 16), (64, 64), (64, 1), (512, 2)])
def test_exactly_equal_sizes(n_rows, n_clusters):
    x = torch.randn(n_rows, 20, generator=torch.Generator().manual_seed(1))
    result = balanced_kmeans(x, n_clusters, iters=10, seed=0)
    assert result.labels.dtype == torch.long and result.labels.shape == (n_rows,)
    counts = torch.bincount(result.labels, minlength=n_clusters)
    assert len(counts) == n_clusters and (counts == n_rows // n_clusters).all()
    assert result.n_iter >= 1
    assert result.objective == pytest.approx(objective(x, result.labels, n_clusters), abs=1e-5)


def test_deterministic_for_a_seed_and_seeds_differ():
    x = torch.randn(256, 24, generator=torch.Generator().manual_seed(2))
    a = balanced_kmeans(x, 16, seed=3)
    b = balanced_kmeans(x, 16, seed=3)
    c = balanced_kmeans(x, 16, seed=4)
    assert torch.equal(a.labels, b.labels) and a.objective == b.objective and a.n_iter == b.n_iter
    assert not torch.equal(a.labels, c.labels)


def test_planted_clusters_are_recovered():
    x, truth = planted()
    result = balanced_kmeans(x, 8, seed=0)
    # Perfect recovery up to relabeling: every true group is exactly one predicted cluster.
    pairs = set(zip(truth.tolist(), result.labels.tolist()))
    assert len(pairs) == 8
    assert result.converged
    assert result.objective > objective(x, random_split(len(x), 8, seed=0), 8) + 0.3
    assert result.objective >= objective(x, truth, 8) - 1e-6


def test_objective_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    assert objective(x, torch.tensor([0, 1, 0, 1]), 2) == pytest.approx(1.0)
    # Each cluster holds two orthogonal unit rows: centroid at 45 degrees, cosine 1/sqrt(2).
    assert objective(x, torch.tensor([0, 0, 1, 1]), 2) == pytest.approx(2 ** -0.5)


def test_baseline_splits():
    labels = random_split(64, 8, seed=0)
    assert (torch.bincount(labels, minlength=8) == 8).all()
    assert torch.equal(labels, random_split(64, 8, seed=0))
    assert not torch.equal(labels, random_split(64, 8, seed=1))
    assert contiguous_split(12, 3).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]


def test_non_divisible_is_a_clear_error():
    with pytest.raises(ValueError) as err:
        balanced_kmeans(torch.randn(100, 8), 7)
    message = str(err.value)
    assert "d_ff=100" in message and "n_experts=7" in message and "1, 2, 4, 5, 10, 20, 25, 50, 100" in message
    for bad in (lambda: random_split(100, 7), lambda: contiguous_split(100, 7)):
        with pytest.raises(ValueError, match="n_experts=7"):
            bad()


def test_cluster_matrix_shapes(llama):
    assert cluster_matrix(llama, 0, "up").shape == (256, 64)
    assert cluster_matrix(llama, 1, "gate").shape == (256, 64)
    both = cluster_matrix(llama, 2, "gate+up")
    assert both.shape == (256, 128)
    torch.testing.assert_close(both[:, :64].norm(dim=1), torch.ones(256, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(both[:, 64:].norm(dim=1), torch.ones(256, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(cluster_matrix(llama, 3, "up"), llama.model.layers[3].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="gate\\+up"):
        cluster_matrix(llama, 0, "down")


@pytest.mark.parametrize("method", ["kmeans", "random", "contiguous"])
def test_split_model_shapes(llama, method):
    result = split_model(llama, 16, method=method, matrix="up", iters=5, seed=0)
    assert result.labels.shape == (4, 256) and result.labels.dtype == np.int64
    for row in result.labels:
        assert (np.bincount(row, minlength=16) == 16).all()
    table = result.layers
    assert list(table["layer"]) == [0, 1, 2, 3]
    assert {"n_iter", "converged", "objective", "objective_random", "seconds"} <= set(table.columns)
    if method == "kmeans":
        assert (table["objective"] > table["objective_random"]).all()
        again = split_model(llama, 16, method=method, iters=5, seed=0)
        np.testing.assert_array_equal(result.labels, again.labels)


def test_batches_of_layers_give_the_same_labels(llama):
    one = split_model(llama, 16, iters=5, seed=1, batch_layers=1)
    four = split_model(llama, 16, iters=5, seed=1, batch_layers=4)
    np.testing.assert_array_equal(one.labels, four.labels)
    assert list(four.layers["batch_layers"]) == [4, 4, 4, 4]
    xs = torch.randn(3, 96, 12, generator=torch.Generator().manual_seed(0))
    batch = balanced_kmeans_batch(xs, 8, seeds=[5, 6, 7])
    for x, seed, result in zip(xs, [5, 6, 7], batch):
        assert torch.equal(result.labels, balanced_kmeans(x, 8, seed=seed).labels)
    with pytest.raises(ValueError, match="one seed per matrix"):
        balanced_kmeans_batch(xs, 8, seeds=[1])


def test_split_model_gate_up_and_errors(llama):
    result = split_model(llama, 32, matrix="gate+up", iters=3)
    assert result.labels.shape == (4, 256)
    with pytest.raises(ValueError, match="n_experts=7"):
        split_model(llama, 7)
    with pytest.raises(ValueError, match="kmeans, random, contiguous"):
        split_model(llama, 16, method="spectral")


def test_as_good_as_kmeans_constrained():
    pytest.importorskip("k_means_constrained")
    from k_means_constrained import KMeansConstrained

    x = torch.nn.functional.normalize(torch.randn(256, 32, generator=torch.Generator().manual_seed(5)), dim=1)
    ours = balanced_kmeans(x, 16, iters=20, seed=0)
    kmc = KMeansConstrained(n_clusters=16, size_min=16, size_max=16, n_init=1, max_iter=20, random_state=0)
    kmc.fit(x.double().numpy())
    theirs = objective(x, torch.from_numpy(kmc.labels_.astype(np.int64)), 16)
    assert ours.objective >= theirs * (1 - 0.005)


def test_compare_with_kmeans_constrained_table(llama):
    pytest.importorskip("k_means_constrained")
    table = compare_with_kmeans_constrained(llama, [0], 16, iters=10, seed=0)
    assert list(table["layer"]) == [0]
    expected = {"objective", "seconds", "n_iter", "kmc_objective", "kmc_seconds", "kmc_n_iter", "speedup",
                "rel_gap", "meets_target"}
    assert expected <= set(table.columns)
    assert table["rel_gap"].iloc[0] > -0.005
