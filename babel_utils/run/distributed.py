"""Data-parallel recording (notebook 02's counts) over several processes, GPUs and nodes with torchrun.

    torchrun --nproc_per_node=8 -m babel_utils.run.distributed configs/gpu-llama3-8b.yaml
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --master_port=29500 --nproc_per_node=8 \\
        -m babel_utils.run.distributed configs/gpu-llama3-8b.yaml
    babel run configs/gpu-llama3-8b.yaml --only 02,03,04,05,06,07,08   # the notebooks load the counts

Sharding. The packed rows are cut into the batches that a single process runs (batch b = rows
[b * batch_size, (b + 1) * batch_size)), and rank r of W processes runs the contiguous batches
[r * n_batches // W, (r + 1) * n_batches // W) (`shard_rows`). Every batch therefore holds the same
rows and has the same shape as in a single-process run, so each token's scores and selections are
the same computation, not merely a close one. With fewer batches than processes some ranks run none.

Reassembly. The int64 counters [L, E] and the token counts are summed with all_reduce. Bootstrap
blocks are runs of `block` consecutive counted tokens of the whole stream: rank r knows from the
count mask how many counted tokens precede its shard (its offset) and numbers its blocks from
offset // block, so the block that a shard boundary cuts in two is counted partly by each side. The
per-block counts are summed into the global block array chunk by chunk (all_reduce of int32), which
puts those halves back together. counts, n_tokens, block_counts and block_tokens are thus EXACTLY
the single-process result (on the same kind of device and dtype), and every rank returns all of it.

Devices. gloo on CPU-only machines; NCCL with each rank on cuda:LOCAL_RANK. `--gpus-per-rank G`
gives each rank G GPUs of its node instead (its CUDA_VISIBLE_DEVICES is narrowed before CUDA starts)
and loads the model with device_map="auto" over them, for models larger than one GPU.
Without torchrun (no RANK in the environment) the script records in one process, like notebook 02.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..core import cache
from ..core.config import BabelConfig, load_config
from ..core.paths import results_dir, run_dir
from ..core.progress import tqdm
from ..data import text as data
from ..kinds.expert_kinds import kind_of
from ..models.loading import load_model
from ..record.counting import LanguageCounts
from . import stages

log = logging.getLogger("babel_utils.run.distributed")  # also when run as __main__

CHUNK_BYTES = 64 << 20  # block counts are all-reduced in pieces of at most this size


def is_distributed() -> bool:
    """Whether a torch.distributed process group is up (torchrun + init_process_group)."""
    return dist.is_available() and dist.is_initialized()


def shard_rows(n_rows: int, batch_size: int, rank: int, world: int) -> slice:
    """The contiguous rows of rank `rank` of `world`: whole batches, consecutive ranks adjacent."""
    n_batches = math.ceil(n_rows / batch_size)
    lo, hi = rank * n_batches // world, (rank + 1) * n_batches // world
    return slice(min(lo * batch_size, n_rows), min(hi * batch_size, n_rows))


def _comm_device(group: Any = None) -> torch.device:
    """Where collective tensors must live: the current GPU under NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def record_counts_distributed(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              count_mask: torch.Tensor, labels: np.ndarray, n_experts: int,
                              batch_size: int = 8, desc: str = "record", group: Any = None,
                              **options: Any) -> LanguageCounts:
    """`counting.record_counts` (or a native model's router counts) split over the processes of a
    torch.distributed group (module doc).

    Every rank passes the same full inputs (the packing is deterministic) and gets the same, complete
    result. Without an initialised process group this is `record_counts`.
    """
    kind = kind_of(model)
    if not is_distributed():
        return kind.record(model, input_ids, attention_mask, count_mask, [(labels, n_experts)], batch_size=batch_size,
                           desc=desc, **options)[0]
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    rows = shard_rows(input_ids.shape[0], batch_size, rank, world)
    offset = int(count_mask[:rows.start].sum())  # counted tokens before this shard, in stream order
    counter = kind.counter(model, labels, n_experts, start=offset, **options)
    bar = {"disable": True} if rank else {}
    for start in tqdm(range(rows.start, rows.stop, batch_size), desc=desc, unit="batch", **bar):
        stop = min(start + batch_size, rows.stop)
        counter.add_batch(input_ids[start:stop], attention_mask[start:stop], count_mask[start:stop])
    local = counter.result()
    n_local = local.n_tokens

    device = _comm_device(group)
    totals = torch.cat([counter.counts.reshape(-1), torch.tensor([n_local], device=counter.counts.device)])
    totals = totals.to(device=device, dtype=torch.int64)
    dist.all_reduce(totals, group=group)
    totals = totals.cpu()
    n_tokens = int(totals[-1])
    expected = int(count_mask.sum())
    if n_tokens != expected:
        raise RuntimeError(f"The ranks counted {n_tokens} tokens where the count mask holds {expected}: "
                           "every rank must pass the same input_ids, attention_mask and count_mask.")
    shape = (counter.n_layers, counter.n_experts)
    block_counts, block_tokens = _gather_blocks(local, offset, n_tokens, counter.block, shape, device, group)
    return LanguageCounts(counts=totals[:-1].view(shape).numpy(), n_tokens=n_tokens,
                          block_counts=block_counts, block_tokens=block_tokens)


def _gather_blocks(local: LanguageCounts, offset: int, n_tokens: int, block: int, shape: tuple[int, int],
                   device: torch.device, group: Any) -> tuple[np.ndarray, np.ndarray]:
    """The global per-block counts [n_blocks, L, E] (int32) and tokens per block, on every rank."""
    if block <= 0:
        return np.zeros((0, *shape), dtype=np.int32), np.zeros(0, dtype=np.int64)
    n_blocks = math.ceil(n_tokens / block)
    size = shape[0] * shape[1]
    mine = torch.from_numpy(local.block_counts).reshape(-1, size)
    first = offset // block  # global index of this rank's first block
    out = np.empty((n_blocks, size), dtype=np.int32)
    step = max(1, CHUNK_BYTES // (4 * size))
    for lo in range(0, n_blocks, step):  # the same chunks on every rank: collectives stay in step
        hi = min(lo + step, n_blocks)
        buf = torch.zeros((hi - lo, size), dtype=torch.int32)
        a, b = max(lo, first), min(hi, first + mine.shape[0])
        if a < b:
            buf[a - lo:b - lo] = mine[a - first:b - first]
        buf = buf.to(device)
        dist.all_reduce(buf, group=group)
        out[lo:hi] = buf.cpu().numpy()
    tokens = np.full(n_blocks, block, dtype=np.int64)
    if n_blocks:
        tokens[-1] = n_tokens - (n_blocks - 1) * block
    return out.reshape(n_blocks, *shape), tokens


# --------------------------------------------------------------------------- the torchrun entry point


def _broadcast(obj: Any) -> Any:
    """Rank 0's object on every rank (the object itself without a process group)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _narrow_gpus(local_rank: int, gpus_per_rank: int) -> None:
    """Leave this rank GPUs [local_rank * G, (local_rank + 1) * G) of the node; before CUDA starts."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
    else:
        ids = [str(i) for i in range(int(os.environ.get("LOCAL_WORLD_SIZE", "1")) * gpus_per_rank)]
    mine = ids[local_rank * gpus_per_rank:(local_rank + 1) * gpus_per_rank]
    if len(mine) < gpus_per_rank:
        raise SystemExit(f"--gpus-per-rank {gpus_per_rank} with local rank {local_rank} needs GPUs "
                         f"{local_rank * gpus_per_rank}..{(local_rank + 1) * gpus_per_rank - 1} of {ids}: "
                         "use --nproc_per_node = (GPUs of the node) / (GPUs per rank).")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)


def _placement(cfg: BabelConfig, launched: bool, local_rank: int, gpus_per_rank: int) -> tuple[str, str]:
    """(device, device_map) of this process's model."""
    if not launched:
        return cfg.device, cfg.device_map  # one process: exactly what notebook 02 loads
    if not torch.cuda.is_available():
        return "cpu", ""
    if gpus_per_rank > 1:
        torch.cuda.set_device(0)  # the first of this rank's GPUs holds the embeddings
        return "cuda:0", cfg.device_map or "auto"
    if cfg.device_map:
        log.warning("device_map=%r ignored: each process holds the whole model on cuda:%d "
                    "(--gpus-per-rank G spreads it over G GPUs per process)", cfg.device_map, local_rank)
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}", ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m babel_utils.run.distributed",
        description="Record every language's expert counts (notebook 02) over the processes of torchrun "
                    "and store them in the stage cache, where notebook 02 loads them.")
    parser.add_argument("config", help="YAML config, e.g. configs/gpu-llama3-8b.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set token_budget=100000")
    parser.add_argument("--gpus-per-rank", type=int, default=1,
                        help="GPUs per process; > 1 spreads each model copy over them with device_map=auto")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Record and cache every language of a config; under torchrun the work is shared by all ranks."""
    args = _parser().parse_args(argv)
    launched = "RANK" in os.environ or is_distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    if launched and args.gpus_per_rank > 1:
        _narrow_gpus(local_rank, args.gpus_per_rank)
    cfg = load_config(args.config, args.set)
    device, device_map = _placement(cfg, launched, local_rank, args.gpus_per_rank)
    own_group = launched and not is_distributed()
    if own_group:
        if device.startswith("cuda"):
            dist.init_process_group("nccl", device_id=torch.device(device))
        else:
            dist.init_process_group("gloo")
    try:
        rank = dist.get_rank() if is_distributed() else 0
        world = dist.get_world_size() if is_distributed() else 1
        if rank:
            os.environ["TQDM_DISABLE"] = "1"
        _record_all(cfg, rank, world, device, device_map)
        if is_distributed():
            dist.barrier()
    finally:
        if own_group:
            dist.destroy_process_group()
    return 0


def _record_all(cfg: BabelConfig, rank: int, world: int, device: str, device_map: str) -> None:
    model, tokenizer = load_model(cfg.model, cfg.dtype, device, device_map)
    log.info("%s on %d process(es); this one on %s%s", cfg.model, world, device,
             f" (device_map={device_map})" if device_map else "")
    payload: Any = None
    if rank == 0:  # only rank 0 needs the run folder: other nodes may not share its file system
        try:
            payload = stages.load_labels(cfg, model, results_dir(run_dir(cfg.run_name)))
        except (FileNotFoundError, ValueError) as err:
            payload = f"{type(err).__name__}: {err}"
    labels = _broadcast(payload)
    if isinstance(labels, str):
        raise SystemExit(f"Cannot read the expert labels of notebook 01: {labels}")
    budget = data.token_budget(cfg, tokenizer)
    todo = [lang for lang in cfg.languages if not cache.is_cached(cfg, "record", language=lang, budget=budget)] if rank == 0 else None
    todo = _broadcast(todo)  # rank 0's cache decides
    if rank == 0:
        done = [lang for lang in cfg.languages if lang not in todo]
        log.info("Token budget %d per language; already cached: %s; to record: %s",
                 budget, done or "none", todo or "none")
    for lang in todo:
        begin = time.perf_counter()
        packed = data.calibration_batches(cfg, tokenizer, lang, budget)
        counts = record_counts_distributed(model, packed.input_ids, packed.attention_mask,
                                           data.count_mask(packed, tokenizer.bos_token_id), labels,
                                           cfg.n_experts, desc=f"record {lang}", **stages.record_options(cfg))
        if rank == 0:
            cache.cached(cfg, "record", counts.state_dict, language=lang, budget=budget)
            log.info("record %s: %d tokens, %d rows over %d process(es), %.1f s", lang, counts.n_tokens,
                     packed.input_ids.shape[0], world, time.perf_counter() - begin)


if __name__ == "__main__":
    raise SystemExit(main())
