"""Data-parallel recording: two gloo processes (as torchrun starts them) count exactly what one process counts."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import balanced_labels

from babel_utils.core import cache
from babel_utils.core.config import load_config
from babel_utils.core.paths import CONFIGS_DIR, REPO_ROOT, results_dir, run_dir
from babel_utils.data import text as data
from babel_utils.kinds import expert_kinds
from babel_utils.models.loading import load_model
from babel_utils.record.counting import LanguageCounts, record_counts
from babel_utils.run import distributed, stages

N_EXPERTS = 16
BATCH = 2
BLOCK = 32
# The entry point's run: the smoke config packs 300 tokens into 5 rows of 64, i.e. batches of 2, 2 and 1
# rows, of which rank 0 runs one and rank 1 two; two languages keep it short.
SMOKE_OVERRIDES = ["run_name=dist", "languages=[en, fr]", f"batch_size={BATCH}"]

WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path

    import numpy as np
    import torch.distributed as dist

    from babel_utils.data import text as data
    from babel_utils.run import distributed
    from babel_utils.models import loading as models
    out, config, *overrides = sys.argv[1:]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model, tokenizer = models.load_model("tiny-llama", device="cpu")
    labels = np.load(Path(out) / "labels.npy")
    packed = data.pack_tokens(tokenizer, list(data.udhr_articles("en").values()), {seq_len}, {budget})
    res = distributed.record_counts_distributed(
        model, packed.input_ids, packed.attention_mask, data.count_mask(packed, tokenizer.bos_token_id),
        labels, {n_experts}, batch_size={batch}, block={block})
    np.savez(Path(out) / f"rank{{rank}}.npz", counts=res.counts, n_tokens=res.n_tokens,
             block_counts=res.block_counts, block_tokens=res.block_tokens)
    # The torchrun entry point, in the same processes (it reuses the process group).
    distributed.main([config, *[a for o in overrides for a in ("--set", o)]])
    dist.destroy_process_group()
""")
SEQ_LEN, BUDGET = 48, 400  # 400 tokens in rows of 47: 9 rows, 5 batches; rank 0 runs 2 (4 rows), rank 1 3 (5 rows)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(world: int, cmd: list[str], cwd: Path, timeout: float = 120) -> None:
    """Start `world` processes with the environment torchrun gives its workers (env:// rendezvous on
    127.0.0.1), without torchrun's agent (seconds of start-up); fail, killing the rest, if one fails."""
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1",
            "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    logs = [cwd / f"rank{r}.log" for r in range(world)]
    procs = []
    for r in range(world):
        with logs[r].open("w") as log:
            procs.append(subprocess.Popen(cmd, cwd=cwd, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                                          stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = any(p.poll() not in (None, 0) for p in procs)
            if failed or time.monotonic() > deadline:  # the others would wait for it in a collective
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} exited with {p.returncode}:\n{logs[r].read_text()[-5000:]}"


@pytest.fixture(scope="module")
def tiny_llama():
    return load_model("tiny-llama", device="cpu")


def one_thread(fn):
    """Run `fn` with one intra-op thread, as the torchrun children do (same kernels, same numbers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def assert_same(a, b) -> None:
    assert a.n_tokens == b.n_tokens
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.counts.dtype == b.counts.dtype == np.int64
    np.testing.assert_array_equal(a.block_counts, b.block_counts)
    np.testing.assert_array_equal(a.block_tokens, b.block_tokens)


@pytest.mark.parametrize("n_rows,batch,world", [(9, 2, 2), (5, 1, 2), (7, 3, 4), (1, 8, 3), (0, 4, 2), (16, 4, 4)])
def test_shards_are_contiguous_whole_batches_covering_every_row(n_rows, batch, world):
    shards = [distributed.shard_rows(n_rows, batch, r, world) for r in range(world)]
    assert shards[0].start == 0 and shards[-1].stop == n_rows
    for left, right in zip(shards, shards[1:]):
        assert left.stop == right.start
    for s in shards:
        assert s.start % batch == 0 and s.start <= s.stop
        assert s.stop % batch == 0 or s.stop == n_rows


def test_without_a_process_group_it_is_record_counts(tiny_llama):
    model, tokenizer = tiny_llama
    packed = data.pack_tokens(tokenizer, [data.udhr_articles("en")[1]], 32, 100)
    mask = data.count_mask(packed, tokenizer.bos_token_id)
    labels = balanced_labels(4, 256, N_EXPERTS)
    args = (model, packed.input_ids, packed.attention_mask, mask, labels, N_EXPERTS)
    assert_same(distributed.record_counts_distributed(*args, batch_size=BATCH, block=8),
                record_counts(*args, batch_size=BATCH, block=8))


def test_two_gloo_processes_count_exactly_like_one(tmp_path, tiny_llama, monkeypatch):
    model, tokenizer = tiny_llama
    labels = balanced_labels(4, 256, N_EXPERTS)
    np.save(tmp_path / "labels.npy", labels)
    # The entry point reads notebook 01's labels from runs/<run_name>/results/.
    run_results = results_dir(run_dir("dist"))
    run_results.mkdir(parents=True)
    np.save(run_results / "labels.npy", labels)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(seq_len=SEQ_LEN, budget=BUDGET, n_experts=N_EXPERTS, batch=BATCH, block=BLOCK))
    config = CONFIGS_DIR / "smoke.yaml"
    launch(2, [sys.executable, str(worker), str(tmp_path), str(config), *SMOKE_OVERRIDES], tmp_path)

    # 1. The function: both ranks hold the single-process result, blocks included.
    packed = data.pack_tokens(tokenizer, list(data.udhr_articles("en").values()), SEQ_LEN, BUDGET)
    assert packed.input_ids.shape[0] % 2 == 1  # an odd number of rows: uneven shards
    mask = data.count_mask(packed, tokenizer.bos_token_id)
    assert int(mask[:distributed.shard_rows(len(mask), BATCH, 1, 2).start].sum()) % BLOCK  # a split block
    single = one_thread(lambda: record_counts(model, packed.input_ids, packed.attention_mask, mask, labels,
                                              N_EXPERTS, batch_size=BATCH, block=BLOCK))
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as f:
            assert_same(LanguageCounts(counts=f["counts"], n_tokens=int(f["n_tokens"]),
                                       block_counts=f["block_counts"], block_tokens=f["block_tokens"]), single)

    # 2. The entry point: notebook 02's stage loads what it stored and recomputes nothing.
    cfg = load_config(config, SMOKE_OVERRIDES)
    budget = data.token_budget(cfg, tokenizer)

    def no_recording(*args, **kwargs):
        raise AssertionError("record_language recomputed counts that the distributed run cached")

    for lang in cfg.languages:
        assert cache.is_cached(cfg, "record", language=lang, budget=budget)
        packed = data.calibration_batches(cfg, tokenizer, lang, budget)
        assert packed.input_ids.shape[0] == 5
        expected = one_thread(lambda: record_counts(
            model, packed.input_ids, packed.attention_mask, data.count_mask(packed, tokenizer.bos_token_id),
            labels, cfg.n_experts, **stages.record_options(cfg)))
        with monkeypatch.context() as patch:
            patch.setitem(expert_kinds.KINDS, "split", dataclasses.replace(expert_kinds.KINDS["split"],
                                                                           record=no_recording))
            assert_same(stages.record_language(cfg, model, tokenizer, labels, lang, budget), expected)


def test_a_native_model_is_counted_by_its_routers_whole_or_from_a_shards_offset():
    from babel_utils.kinds import native
    model, tokenizer = load_model("tiny-olmoe", device="cpu")
    packed = data.pack_tokens(tokenizer, [data.udhr_articles("en")[1]], 32, 100)
    mask = data.count_mask(packed, tokenizer.bos_token_id)
    labels = np.tile(np.arange(8), (4, 1))
    whole = native.record_routes(model, packed.input_ids, packed.attention_mask, mask, batch_size=BATCH, block=8)
    assert_same(distributed.record_counts_distributed(model, packed.input_ids, packed.attention_mask, mask, labels,
                                                      8, batch_size=BATCH, block=8), whole)
    # the counter a rank builds for its shard: counts only its rows, numbering blocks on from its offset
    rows = slice(1, packed.input_ids.shape[0])
    offset = int(mask[:rows.start].sum())
    counter = expert_kinds.KINDS["native"].counter(model, labels, 8, start=offset, block=8, score="abs")
    counter.add_batch(packed.input_ids[rows], packed.attention_mask[rows], mask[rows])
    shard = counter.result()
    first = native.record_routes(model, packed.input_ids[:1], packed.attention_mask[:1], mask[:1], block=8)
    np.testing.assert_array_equal(shard.counts + first.counts, whole.counts)
    assert shard.n_tokens + first.n_tokens == whole.n_tokens
