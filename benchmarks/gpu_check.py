"""The GPU check of issue 14: one command that measures every GPU target and prints one table.

    PYTHONPATH=. python benchmarks/gpu_check.py --out $OUT/gpu_check.json   # the GPU run (<= 8 min on an H200)
    python benchmarks/gpu_check.py --tiny                                   # every code path, tiny, CPU, seconds
    python benchmarks/gpu_check.py --tiny --device cuda                     # the same paths on a GPU, seconds

Parts (`--parts 1,3` selects some):
  1. recording: bare forward of a random Llama-2-7B-shaped body (bf16) in tokens/s and as a share of the
     GPU's dense bf16 peak; babel's recording (counting.record_counts) and the naive way (hooks keep every
     activation, counted afterwards) on the same batches, with ratios and peak memory; projections of
     9 languages x 1M tokens from the measured recording rate.
  2. balanced split (clustering.split_model) of every layer on the device, and one layer again on the CPU:
     are the labels equal (adjusted Rand index if not)?
  3. masked evaluation (apply.apply_row_masks + scoring.perplexity_many, as stages._evaluate does it)
     against the same evaluation without masks.
  4. physically pruned models (surgery.physically_prune) at 25 % and 50 % of the experts against the dense one.
  5. a model placed by accelerate (device_map: GPU + CPU, on the CPU: CPU + disk): counts equal to a plain load?
  6. the smoke pipeline's notebooks (configs/smoke.yaml, a tiny model) executed with papermill on the device.

Every part is wrapped: a failing part writes its error into its row and the next part runs. The JSON
(`--out`) is rewritten after every part, so a time-out keeps what was measured. Progress lines with
timestamps go to stderr; the table goes to stdout. Exit status 1 when any row holds an error.
With `--tiny` the aims are still compared, but only as information.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as `python benchmarks/gpu_check.py` without installing the package
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from babel_utils.core.config import BabelConfig  # noqa: E402
from babel_utils.core.languages import PAPER_LANGUAGES  # noqa: E402
from babel_utils.core.timing import Timing, paired_median_ms, synchronize, timed
from babel_utils.data import text as data
from babel_utils.evaluate import scoring
from babel_utils.models import adapters  # noqa: E402
from babel_utils.prune import apply, surgery
from babel_utils.prune import masks as pruning
from babel_utils.record.counting import expert_scores, n_selected, record_counts, select, zscore  # noqa: E402
from babel_utils.run import stages
from babel_utils.split import clustering, kmeans

log = logging.getLogger("gpu_check")

# Random-initialised Llama shapes (transformers LlamaConfig keywords); "tiny" is the --tiny stand-in.
SHAPES: dict[str, dict[str, int]] = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=259),
}
# Published architecture shapes of the projection targets (no weights needed: only their FLOPs per token).
PROJECTION_SHAPES: dict[str, dict[str, int]] = {
    "Llama-2-7B shape": SHAPES["llama2-7b"],
    "Llama-3-8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256),
    "Llama-3-70B": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=128256),
}
PROJECTION_TOKENS = 9 * 1_000_000  # 9 languages x 1M tokens

# Vendor spec-sheet dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, matched in order as substrings of
# torch.cuda.get_device_name(); `--peak-tflops` overrides.
BF16_DENSE_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0),
)

INIT_STD = 0.02  # std of the random weights (uniform: as fast to draw as it gets)
PLACED_LAYERS = ("model.layers.2", "model.layers.3")  # part 5: these layers go to the CPU (GPU run) or disk

# (resolved) defaults of the full run and of --tiny
FULL_DEFAULTS = dict(shape="llama2-7b", batch_size=8, seq_len=2048, batches=2, n_experts=256, notebooks="")
TINY_DEFAULTS = dict(shape="tiny", batch_size=2, seq_len=64, batches=2, n_experts=16, notebooks="01")


# --------------------------------------------------------------------------- the table


@dataclass
class Row:
    """One measured figure: its value, unit, aim (where one exists), whether it meets it, notes, error."""

    part: int
    name: str
    value: Any = None
    unit: str = ""
    aim: str = ""
    passed: bool | None = None
    notes: str = ""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict ("pass" for `passed`)."""
        out = asdict(self)
        out["pass"] = out.pop("passed")
        out["value"] = _jsonable(self.value)
        return out


def _jsonable(value: Any) -> Any:
    """numpy scalars as Python numbers; NaN and infinities as None."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def meets(value: float, aim: str) -> bool:
    """Whether `value` meets an aim written as '<= 1.05', '< 10', '> 1' or '== 2'."""
    op, target = aim.split()
    ops: dict[str, Callable[[float, float], bool]] = {
        "<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
        "==": lambda a, b: a == b}
    return bool(ops[op](float(value), float(target)))


class Table:
    """The rows of the run; written to JSON after every part."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta, self.rows = out, meta, []

    def add(self, part: int, name: str, value: Any, unit: str = "", aim: str = "", notes: str = "") -> Row:
        """Append a measured row; its pass/fail is computed where it has an aim and a value."""
        passed = meets(value, aim) if aim and value is not None else None
        row = Row(part, name, value, unit, aim, passed, notes)
        self.rows.append(row)
        return row

    def skip(self, part: int, name: str, why: str, unit: str = "") -> Row:
        """Append a row that was not measured, saying why ('skipped: ...')."""
        row = Row(part, name, None, unit, notes=f"skipped: {why}")
        self.rows.append(row)
        return row

    def fail(self, part: int, name: str, err: BaseException) -> Row:
        """Append a row holding an error (the part's or one step's)."""
        tail = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:]).strip()
        row = Row(part, name, None, error=f"{type(err).__name__}: {err}", notes=tail[-600:])
        self.rows.append(row)
        return row

    def sorted_rows(self) -> list[Row]:
        """The rows by part (parts run in EXECUTION_ORDER), in their order within a part."""
        return sorted(self.rows, key=lambda r: r.part)

    def save(self) -> None:
        """Write the JSON atomically (meta and rows)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        rows = [r.to_json() for r in self.sorted_rows()]
        tmp.write_text(json.dumps({"meta": self.meta, "rows": rows}, indent=1))
        os.replace(tmp, self.out)


def format_value(value: Any) -> str:
    """A short printable value."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


def format_table(rows: list[Row], informational: bool) -> str:
    """The rows as one plain-text table (notes last, unabridged)."""
    head = ("part", "name", "value", "unit", "aim", "pass", "notes")
    pass_label = "pass (info)" if informational else "pass"
    cells = [(str(r.part), r.name, format_value(r.value), r.unit, r.aim,
              "-" if r.passed is None else str(r.passed),
              (f"ERROR {r.error} | {r.notes}" if r.error else r.notes).replace("\n", " | ")) for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(head[:-1])]
    widths[5] = max(widths[5], len(pass_label))
    names = (*head[:5], pass_label)
    lines = ["  ".join(h.ljust(w) for h, w in zip(names, widths)) + "  notes"]
    lines.append("  ".join("-" * w for w in widths) + "  -----")
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell[:-1], widths)) + "  " + cell[-1] for cell in cells]
    return "\n".join(lines)


# --------------------------------------------------------------------------- models, FLOPs, timing


def llama_config(shape: Mapping[str, int], seq_len: int = 2048) -> Any:
    """A transformers LlamaConfig of a shape."""
    from transformers import LlamaConfig

    return LlamaConfig(**shape, max_position_embeddings=max(4096, seq_len))


def no_init() -> ContextManager[None]:
    """transformers' no_init_weights (construction without the default initialisation), where it exists."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return nullcontext()
    return no_init_weights()


def random_llama(shape: str, device: torch.device, dtype: torch.dtype, seed: int, seq_len: int) -> nn.Module:
    """A random-initialised Llama built directly on `device` in `dtype` (weights' values do not change speed)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device), no_init():
        model = AutoModelForCausalLM.from_config(llama_config(SHAPES[shape], seq_len), dtype=dtype)
    model = model.to(dtype)  # a no-op where from_config honoured dtype
    bound = INIT_STD * 3 ** 0.5
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.uniform_(-bound, bound)
    return model.eval().requires_grad_(False)


def random_labels(n_layers: int, d_ff: int, n_experts: int, seed: int = 0) -> np.ndarray:
    """Random balanced expert labels [n_layers, d_ff] (the split does not change speed)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(np.arange(d_ff) % n_experts) for _ in range(n_layers)])


def head_dim(cfg: Any) -> int:
    """Attention head width of a config."""
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def matmul_params(cfg: Any) -> int:
    """Weights of the decoder layers' matrix products (q, k, v, o, gate, up, down): no embeddings, no LM head."""
    d, width, hd = cfg.hidden_size, cfg.intermediate_size, head_dim(cfg)
    attention = 2 * d * cfg.num_attention_heads * hd + 2 * d * cfg.num_key_value_heads * hd
    return int(cfg.num_hidden_layers * (attention + 3 * d * width))


def body_linear_params(model: nn.Module) -> int:
    """The same count read off a built model: weights of every nn.Linear in the body."""
    return sum(m.weight.numel() for m in adapters.body(model).modules() if isinstance(m, nn.Linear))


def flops_per_token(cfg: Any, seq_len: int, params: int | None = None) -> float:
    """Forward FLOPs per token of the body: 2 * P + 4 * n_layers * n_heads * head_dim * seq_len.

    2 * P: one multiply-add per matrix weight; 4 * L * (heads * head_dim) * T: the two attention products
    (Q K^T and A V) of a sequence of T tokens, without halving for the causal mask (PaLM's MFU convention).
    """
    p = matmul_params(cfg) if params is None else params
    return 2.0 * p + 4.0 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim(cfg) * seq_len


def projected_hours(tokens_per_s: float, measured_cfg: Any, target_cfg: Any, seq_len: int,
                    tokens: int = PROJECTION_TOKENS) -> float:
    """Hours to record `tokens` on `target_cfg` at the FLOP rate measured on `measured_cfg`.

    hours = tokens / (tokens_per_s * F_measured / F_target) / 3600, F = flops_per_token(cfg, seq_len):
    the target is assumed to run at the same FLOP/s as the measured shape (a 70B model needs several
    GPUs; then this is the aggregate rate of all of them).
    """
    rate = tokens_per_s * flops_per_token(measured_cfg, seq_len) / flops_per_token(target_cfg, seq_len)
    return tokens / rate / 3600.0


def bf16_peak_tflops(device: torch.device, override: float = 0.0) -> tuple[float | None, str]:
    """The device's dense bf16 peak (TFLOP/s) and where it came from."""
    if override > 0:
        return override, "given by --peak-tflops"
    if device.type != "cuda":
        return None, f"no bf16 peak known for {device.type}; pass --peak-tflops"
    name = torch.cuda.get_device_name(device)
    for key, peak in BF16_DENSE_PEAK_TFLOPS:
        if key in name:
            return peak, f"spec-sheet dense bf16 peak of {key} (device {name!r})"
    return None, f"no bf16 peak in the table for {name!r}; pass --peak-tflops"


def free_memory(device: torch.device) -> None:
    """Release cached GPU memory (between parts)."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- shared state


@dataclass
class Setup:
    """Options of the run and the random model shared by parts 1-4 (built once, on first use)."""

    args: argparse.Namespace
    device: torch.device
    dtype: torch.dtype
    start: float = field(default_factory=time.monotonic)
    _model: nn.Module | None = None
    _model_error: BaseException | None = None
    build_seconds: float = 0.0

    @property
    def tiny(self) -> bool:
        """Whether this is the --tiny run."""
        return bool(self.args.tiny)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.start

    def model(self) -> nn.Module:
        """The random model of `--shape` (a failed build fails every later part the same way, at once)."""
        if self._model_error is not None:
            raise RuntimeError(f"building the model failed before: {self._model_error}")
        if self._model is None:
            start = time.perf_counter()
            try:
                self._model = random_llama(self.args.shape, self.device, self.dtype, self.args.seed,
                                           self.args.seq_len)
            except BaseException as err:
                self._model_error = err
                raise
            synchronize(self.device)
            self.build_seconds = time.perf_counter() - start
            log.info("built %s (%s, %s) in %.1f s", self.args.shape, self.device, self.dtype, self.build_seconds)
        return self._model

    def release(self) -> None:
        """Drop the shared model (parts 5 and 6 use tiny models)."""
        self._model = None
        free_memory(self.device)

    def token_batches(self, vocab: int) -> torch.Tensor:
        """`batches * batch_size` random rows of `seq_len` token ids on the device (fixed seed)."""
        gen = torch.Generator().manual_seed(self.args.seed)
        rows = self.args.batches * self.args.batch_size
        return torch.randint(3, vocab, (rows, self.args.seq_len), generator=gen).to(self.device)

    def shape_note(self, model: nn.Module) -> str:
        """One phrase describing the model and the batches."""
        cfg = model.config
        return (f"{self.args.shape}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, d_ff "
                f"{cfg.intermediate_size}, {str(self.dtype).removeprefix('torch.')} on {self.device}, attention "
                f"{getattr(cfg, '_attn_implementation', None)}; "
                f"{self.args.batches} batches of {self.args.batch_size} x {self.args.seq_len} tokens")


# --------------------------------------------------------------------------- part 1: recording


def naive_counts(model: nn.Module, ids: torch.Tensor, labels: np.ndarray, n_experts: int, k: int) -> torch.Tensor:
    """Without babel: forward hooks keep every down_proj input, scored and counted after the forward."""
    acts: list[torch.Tensor] = []
    handles = [down.register_forward_pre_hook(lambda m, a: acts.append(a[0].detach()))
               for down in adapters.down_projs(model)]
    try:
        with torch.inference_mode():
            adapters.body(model)(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    with torch.inference_mode():
        labs = [torch.as_tensor(lab, device=ids.device) for lab in labels]
        scores = torch.stack([zscore(expert_scores(a.reshape(-1, a.shape[-1]), lab, n_experts, "abs"))
                              for a, lab in zip(acts, labs)], dim=1)
        chosen = select(scores, k, "cross_layer")
        return torch.bincount(chosen.reshape(-1), minlength=len(labels) * n_experts)


def recording_contenders(s: Setup, model: nn.Module, ids: torch.Tensor, labels: np.ndarray
                         ) -> dict[str, Callable[[], Any]]:
    """The three ways to run the same batches: bare body forward, babel's recording, the naive hooks."""
    b, n_experts = s.args.batch_size, s.args.n_experts
    ones = torch.ones_like(ids)
    count_mask = torch.ones_like(ids, dtype=torch.bool)
    options = {k: v for k, v in stages.record_options(BabelConfig()).items() if k != "batch_size"}
    k = n_selected(len(labels), n_experts, options["top_fraction"], "cross_layer")
    body = adapters.body(model)

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, len(ids), b):
                body(input_ids=ids[start:start + b], attention_mask=ones[start:start + b], use_cache=False)

    def babel() -> np.ndarray:
        return record_counts(model, ids, ones, count_mask, labels, n_experts, batch_size=b, desc="record",
                             **options).counts

    def naive() -> np.ndarray:
        total = sum(naive_counts(model, ids[start:start + b], labels, n_experts, k)
                    for start in range(0, len(ids), b))
        return total.view(len(labels), n_experts).cpu().numpy()

    return {"bare": bare, "babel": babel, "naive": naive}


def add_projections(table: Table, s: Setup, model: nn.Module, tokens_per_s: float) -> None:
    """Rows: hours to record 9 x 1M tokens, from the measured recording rate, scaled by FLOPs per token."""
    measured = model.config
    origin = ("the tiny model's rate (meaningless; the code path only)" if s.tiny
              else "the measured babel recording rate")
    for name, shape in PROJECTION_SHAPES.items():
        hours = projected_hours(tokens_per_s, measured, llama_config(shape), s.args.seq_len)
        table.add(1, f"projection: 9 x 1M tokens, {name}, hours", hours, "h",
                  notes=f"PROJECTION, not measured: 9e6 / (rate x F_measured / F_target) / 3600 from {origin}, "
                        f"F = flops_per_token at seq {s.args.seq_len}; same FLOP/s assumed"
                        + ("; 70B needs >= 2 such GPUs (aggregate rate)" if "70B" in name else ""))


def part_record(table: Table, s: Setup) -> None:
    """Part 1: bare forward, babel's recording and the naive hooks on the same batches."""
    model = s.model()
    ids = s.token_batches(model.config.vocab_size)
    labels = random_labels(adapters.n_layers(model), adapters.d_ff(model), s.args.n_experts, s.args.seed)
    fns = recording_contenders(s, model, ids, labels)
    n_tokens = ids.numel()
    first = timed({"bare": fns["bare"], "babel": fns["babel"]}, s.device, s.args.repeats)
    bare, babel = first["bare"], first["babel"]
    setup = s.shape_note(model) + f"; median of {s.args.repeats} interleaved after 1 warm-up"
    table.add(1, "record: bare forward, tokens/s", n_tokens / bare.seconds, "tokens/s",
              notes=f"body (embeddings + decoder layers, no LM head); {setup}")
    add_utilisation(table, s, model, bare.seconds)
    table.add(1, "record: babel recording, tokens/s", n_tokens / babel.seconds, "tokens/s",
              notes="counting.record_counts with the default recording options (abs, zscore, cross-layer "
                    "top 10 %, bootstrap blocks of 32)")
    table.add(1, "record: babel recording / bare forward", babel.seconds / bare.seconds, "x", "<= 1.05",
              notes=f"{babel.seconds * 1000:.1f} ms vs {bare.seconds * 1000:.1f} ms")
    add_peak(table, "record: peak memory, bare forward", bare, s)
    add_peak(table, "record: peak memory, babel recording", babel, s)
    add_projections(table, s, model, n_tokens / babel.seconds)
    try:
        pair = timed({"bare": fns["bare"], "naive": fns["naive"]}, s.device, s.args.repeats)
    except Exception as err:  # e.g. out of memory: the activations of every layer are kept
        free_memory(s.device)
        table.fail(1, "record: naive hooks", err)
        return
    naive = pair["naive"]
    table.add(1, "record: naive hooks, tokens/s", n_tokens / naive.seconds, "tokens/s",
              notes="forward pre-hooks on down_proj keep every activation; scored, z-scored, top-k after the forward")
    table.add(1, "record: naive hooks / bare forward", naive.seconds / pair["bare"].seconds, "x",
              notes=f"bare timed again beside it: {pair['bare'].seconds * 1000:.1f} ms")
    add_peak(table, "record: peak memory, naive hooks", naive, s)
    table.add(1, "record: babel counts equal naive counts", bool(np.array_equal(babel.result, naive.result)),
              notes="same batches, every token counted")


def add_utilisation(table: Table, s: Setup, model: nn.Module, seconds: float) -> None:
    """Row: the bare forward's FLOP rate as a share of the device's dense bf16 peak."""
    params = body_linear_params(model)
    flops = flops_per_token(model.config, s.args.seq_len, params) * s.args.batches * s.args.batch_size * s.args.seq_len
    peak, origin = bf16_peak_tflops(s.device, s.args.peak_tflops)
    formula = (f"FLOPs = tokens x (2 x P_body + 4 x L x d_attn x T) = {flops:.3e}, P_body = {params:,} matmul "
               f"weights (no embeddings, no LM head), attention not halved for the causal mask; "
               f"{flops / seconds / 1e12:.1f} TFLOP/s")
    if peak is None:
        table.add(1, "record: bare forward, share of bf16 dense peak", None, "%",
                  notes=f"not measured: {origin}; {formula}")
        return
    table.add(1, "record: bare forward, share of bf16 dense peak", 100 * flops / seconds / (peak * 1e12), "%",
              notes=f"{formula}; peak {peak:g} TFLOP/s: {origin}")


def add_peak(table: Table, name: str, timing: Timing, s: Setup) -> None:
    """Row: peak GPU memory of one contender (torch.cuda.max_memory_allocated, weights included)."""
    if timing.peak_gib is None:
        table.add(1, name, None, "GiB", notes="not measured: torch.cuda.max_memory_allocated needs CUDA")
        return
    table.add(1, name, timing.peak_gib, "GiB", notes="torch.cuda.max_memory_allocated over the timed runs, "
                                                     "weights included")


# --------------------------------------------------------------------------- part 2: balanced split


def part_split(table: Table, s: Setup) -> None:
    """Part 2: split every layer on the device; layer 0 once more on the CPU, labels compared."""
    from sklearn.metrics import adjusted_rand_score

    model = s.model()
    n_experts, iters, seed = s.args.n_experts, s.args.kmeans_iters, s.args.seed
    if s.device.type == "cuda":  # warm up kernels and the allocator on a small problem (as bench_split.py)
        kmeans.balanced_kmeans_batch(torch.randn(2, n_experts * 8, 64, device=s.device), n_experts, iters=2)
        synchronize(s.device)
    start = time.perf_counter()
    result = clustering.split_model(model, n_experts, iters=iters, seed=seed)
    synchronize(s.device)
    seconds = time.perf_counter() - start
    layers = result.layers
    n_layers, width = result.labels.shape
    aim = "< 10"
    table.add(2, "split: all layers on the device, seconds", seconds, "s", aim,
              notes=f"wall time of clustering.split_model (per-layer objectives included), {n_layers} layers of "
                    f"up_proj {width} x {model.config.hidden_size} -> {n_experts} experts, {iters} iterations at "
                    f"most, on {s.device} ({int(layers['batch_layers'].max())} layer(s) per batch); warm-up excluded")
    table.add(2, "split: K-Means search alone, seconds", float(layers["seconds"].sum()), "s", aim,
              notes="the sum of split_model's own per-batch timings (balanced_kmeans_batch only)")
    table.add(2, "split: mean objective", float(layers["objective"].mean()),
              notes=f"mean cosine to the centroid; random balanced split {layers['objective_random'].mean():.4f}")
    x = adapters.ffn_weights(model, 0).up.detach().float().cpu()
    start = time.perf_counter()
    cpu = kmeans.balanced_kmeans(x, n_experts, iters=iters, seed=seed, cpu_threads=s.args.cpu_threads or None)
    cpu_seconds = time.perf_counter() - start
    cpu_labels = cpu.labels.numpy()
    equal = bool(np.array_equal(result.labels[0], cpu_labels))
    what = "a second CPU run (the device is the CPU)" if s.device.type == "cpu" else f"the {s.device} run"
    table.add(2, "split: layer 0 labels on the device equal the CPU's", equal,
              notes=f"kmeans.balanced_kmeans of the same float32 matrix on the CPU against {what}; "
                    f"objectives {layers['objective'].iloc[0]:.6f} vs {cpu.objective:.6f}")
    table.add(2, "split: layer 0 adjusted Rand index, device vs CPU",
              float(adjusted_rand_score(result.labels[0], cpu_labels)),
              notes="1.0 = the same partition (labels may still be numbered differently)")
    table.add(2, "split: one layer on the CPU, seconds", cpu_seconds, "s",
              notes=f"{s.args.cpu_threads or torch.get_num_threads()} CPU thread(s)")


# --------------------------------------------------------------------------- part 3: masked evaluation


def eval_texts(min_chars: int) -> list[str]:
    """UDHR articles of the paper's languages, repeated until they hold at least `min_chars` characters."""
    articles = [text for lang in PAPER_LANGUAGES for text in data.udhr_articles(lang).values()]
    texts: list[str] = []
    while sum(map(len, texts)) < min_chars:
        texts += articles
    return texts


def part_masked_eval(table: Table, s: Setup) -> None:
    """Part 3: perplexity under one static mask (apply_row_masks, as stages._evaluate) against no mask."""
    from babel_utils.models.loading import byte_tokenizer

    model = s.model()
    tokenizer = byte_tokenizer()  # token ids < 259 fit every vocabulary; the texts' content does not matter here
    b, t = s.args.batch_size, s.args.seq_len
    max_tokens = s.args.batches * b * (t - 1)  # exactly `batches` full batches of packed rows
    texts = eval_texts(2 * max_tokens)
    labels = random_labels(adapters.n_layers(model), adapters.d_ff(model), s.args.n_experts, s.args.seed)
    freqs = np.random.default_rng(s.args.seed).random((len(labels), s.args.n_experts))
    masks = pruning.sorting_mask(freqs, 0.25, "global")[None]

    def unmasked() -> dict[str, float]:
        return scoring.perplexity_many(model, tokenizer, texts, max_tokens, t, b, 1, None)[0]

    def masked() -> dict[str, float]:
        with apply.apply_row_masks(model, labels, masks) as select_rows:
            return scoring.perplexity_many(model, tokenizer, texts, max_tokens, t, b, 1, select_rows)[0]

    found = timed({"unmasked": unmasked, "masked": masked}, s.device, s.args.repeats)
    plain, under = found["unmasked"], found["masked"]
    n_tokens = int(under.result["n_tokens"])
    note = (f"scoring.perplexity_many (body + LM head on the scored positions), {s.args.batches} batches of "
            f"{b} x {t}; mask: 25 % of experts pruned (random frequencies)")
    table.add(3, "masked eval: unmasked evaluation, tokens/s", n_tokens / plain.seconds, "tokens/s", notes=note)
    table.add(3, "masked eval: masked evaluation, tokens/s", n_tokens / under.seconds, "tokens/s",
              notes="apply.apply_row_masks entered per pass (its set-up included), select() before every batch")
    differs = under.result["nll_sum"] != plain.result["nll_sum"]
    table.add(3, "masked eval: masked / unmasked", under.seconds / plain.seconds, "x", "<= 1.05",
              notes=f"{under.seconds * 1000:.1f} ms vs {plain.seconds * 1000:.1f} ms; the mask changes the NLL: "
                    f"{differs} ({under.result['nll_sum']:.6g} vs {plain.result['nll_sum']:.6g})")


# --------------------------------------------------------------------------- part 4: physical pruning


def part_pruned(table: Table, s: Setup) -> None:
    """Part 4: body forward of physically pruned copies (25 %, 50 % of experts) against the dense model."""
    model = s.model()
    ids = s.token_batches(model.config.vocab_size)[: s.args.batch_size]
    labels = random_labels(adapters.n_layers(model), adapters.d_ff(model), s.args.n_experts, s.args.seed)
    freqs = np.random.default_rng(s.args.seed).random((len(labels), s.args.n_experts))
    models = {"dense": model}
    for ratio in (0.25, 0.50):
        models[f"pruned {ratio:.0%}"] = surgery.physically_prune(model, labels,
                                                                 pruning.sorting_mask(freqs, ratio, "per_layer"))
    try:
        fns = {name: (lambda m=m: adapters.body(m)(input_ids=ids, use_cache=False)) for name, m in models.items()}
        times = paired_median_ms(fns, s.device, warmup=1, repeats=s.args.repeats)
    finally:
        del models
        free_memory(s.device)
    dense = times["dense"]
    table.add(4, "pruned: dense body forward, ms", dense, "ms",
              notes=f"one batch of {s.args.batch_size} x {s.args.seq_len}; pruning.paired_median_ms, median of "
                    f"{s.args.repeats} interleaved")
    for ratio in ("25%", "50%"):
        ms = times[f"pruned {ratio}"]
        table.add(4, f"pruned {ratio}: body forward, ms", ms, "ms",
                  notes=f"surgery.physically_prune, {ratio} of each layer's experts removed (per-layer sorting)")
        table.add(4, f"pruned {ratio}: speed-up over dense", dense / ms, "x", "> 1",
                  notes=f"{(1 - ms / dense) * 100:.0f} % less time")


# --------------------------------------------------------------------------- part 5: device_map


def placement(device: torch.device, n_layers: int) -> dict[str, Any]:
    """A device_map: layers 2 and 3 on the CPU beside a GPU, or on disk beside the CPU."""
    main: Any = (device.index or 0) if device.type == "cuda" else "cpu"
    away = "cpu" if device.type == "cuda" else "disk"
    modules = ["model.embed_tokens", *(f"model.layers.{i}" for i in range(n_layers)), "model.norm",
               "model.rotary_emb", "lm_head"]
    return {name: away if name in PLACED_LAYERS else main for name in modules}


def part_device_map(table: Table, s: Setup) -> None:
    """Part 5: counts of a model placed by accelerate against the same model on one device."""
    from babel_utils.models.loading import load_model

    with tempfile.TemporaryDirectory(prefix="gpu_check_tiny_") as folder:
        model, tokenizer = load_model("tiny-llama", device="cpu", seed=s.args.seed)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        n_layers = adapters.n_layers(model)
        texts = list(data.udhr_articles("en").values())
        packed = data.pack_tokens(tokenizer, texts, 128, 1024)
        mask = data.count_mask(packed, tokenizer.bos_token_id)
        labels = random_labels(n_layers, adapters.d_ff(model), 16, s.args.seed)

        def counts(m: nn.Module) -> Any:
            return record_counts(m, packed.input_ids, packed.attention_mask, mask, labels, 16, batch_size=2,
                                 block=16, desc="device_map")

        plain = counts(load_model(folder, device=str(s.device))[0])
        device_map = placement(s.device, n_layers)
        placed = load_model(folder, device=str(s.device), device_map=device_map)[0]
        found = counts(placed)
        weights = [str(d.weight.device) for d in adapters.down_projs(placed)]
        moved = sum(w != str(s.device) and not (s.device.type == "cuda" and w.startswith("cuda")) for w in weights)
        hf_map = getattr(placed, "hf_device_map", {})
        del placed
    equal = (found.n_tokens == plain.n_tokens and np.array_equal(found.counts, plain.counts)
             and np.array_equal(found.block_counts, plain.block_counts))
    how = ("accelerate runs CPU-placed layers on the GPU, their weights streamed in for each forward"
           if s.device.type == "cuda" else "disk-offloaded layers' weights are read in for each forward")
    table.add(5, "device_map: counts equal the single-device counts", bool(equal),
              notes=f"tiny-llama ({n_layers} layers), {plain.n_tokens} UDHR tokens; counts, n_tokens and block "
                    f"counts compared with a plain load on {s.device}; {how}")
    table.add(5, "device_map: layers whose weights are elsewhere", moved, "layers", f"== {len(PLACED_LAYERS)}",
              notes=f"down_proj weights on {weights}; hf_device_map of the placed layers: "
                    f"{ {k: v for k, v in hf_map.items() if k in PLACED_LAYERS} }")


# --------------------------------------------------------------------------- part 6: smoke notebooks


def missing_notebook_packages() -> list[str]:
    """Which of papermill, nbclient and ipykernel (needed to execute notebooks) are not installed."""
    import importlib.util

    return [name for name in ("papermill", "nbclient", "ipykernel") if importlib.util.find_spec(name) is None]


@contextmanager
def smoke_folders(runs_dir: str) -> Iterator[dict[str, str]]:
    """Fresh stage cache (a device-blind cache key must not hand back CPU results), runs and figures folders,
    and the repository on the kernels' PYTHONPATH (notebook 01 needs no
    k-means-constrained, which the GPU image lacks)."""
    from babel_utils.run.runner import environment

    with tempfile.TemporaryDirectory(prefix="gpu_check_smoke_") as tmp:
        root = Path(tmp)
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        values = {"BABEL_CACHE": str(root / "cache"), "BABEL_RUNS_DIR": runs_dir or str(root / "runs"),
                  "BABEL_FIGURES_DIR": str(root / "figures"), "PYTHONPATH": path}
        with environment(values):
            yield values


def smoke_config(device: torch.device) -> BabelConfig:
    """configs/smoke.yaml on the device (the --set device=... of `babel run`), in its own run folder."""
    from babel_utils.core.config import load_config
    from babel_utils.core.paths import CONFIGS_DIR

    return load_config(CONFIGS_DIR / "smoke.yaml", {"device": str(device), "run_name": "gpu-check-smoke"})


def notebook_params(cfg: BabelConfig, notebook: Path) -> dict[str, Any]:
    """runner.notebook_parameters of the notebook."""
    from babel_utils.run import runner
    return runner.notebook_parameters(cfg, notebook)


def run_notebooks(table: Table, s: Setup, selected: list[Path]) -> None:
    """Execute the notebooks in order as `babel run` does (runner.preflight, runner.execute), one row each."""
    from babel_utils.core.config import save_config
    from babel_utils.core.paths import results_dir, run_dir, run_figures_dir
    from babel_utils.run import runner

    cfg = smoke_config(s.device)
    runner.preflight(cfg)
    out = run_dir(cfg.run_name)
    for folder in (out, results_dir(out), run_figures_dir(out)):
        folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    done, longest, failed = 0, 0.0, ""
    with runner.quiet_environment():
        for notebook in selected:
            name = f"smoke: {notebook.name}, seconds"
            if failed:
                table.skip(6, name, f"an earlier notebook failed ({failed})", "s")
                continue
            if s.elapsed() + max(longest, 30.0) > s.args.budget_s:
                table.skip(6, name, f"time budget (--budget-s {s.args.budget_s:g}) nearly spent", "s")
                continue
            log.info("part 6: executing %s", notebook.name)
            start = time.perf_counter()
            try:
                runner.execute(notebook, out, notebook_params(cfg, notebook))
            except Exception as err:
                failed = notebook.name
                table.fail(6, name, err)
                continue
            seconds = time.perf_counter() - start
            longest = max(longest, seconds)
            done += 1
            table.add(6, name, seconds, "s", notes=f"papermill on {cfg.device}, kernel start included")
    table.add(6, "smoke: notebooks succeeded", done, "notebooks", f"== {len(selected)}",
              notes=f"configs/smoke.yaml with device={cfg.device}; fresh stage cache")


def part_smoke(table: Table, s: Setup) -> None:
    """Part 6: the smoke pipeline's notebooks on the device (papermill), or rows saying why they were skipped."""
    from babel_utils.core.paths import NOTEBOOKS_DIR

    only = {n.strip() for n in s.args.notebooks.split(",") if n.strip()}
    selected = [nb for nb in sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")) if not only or nb.name[:2] in only]
    missing = missing_notebook_packages()
    if missing:
        why = f"{', '.join(missing)} not installed"
        for notebook in selected:
            table.skip(6, f"smoke: {notebook.name}, seconds", why, "s")
        table.skip(6, "smoke: notebooks succeeded", why, "notebooks")
        return
    with smoke_folders(s.args.runs_dir):
        run_notebooks(table, s, selected)


# --------------------------------------------------------------------------- main


PARTS: dict[int, tuple[str, Callable[[Table, Setup], None]]] = {
    1: ("recording overhead", part_record),
    2: ("balanced split", part_split),
    3: ("masked evaluation", part_masked_eval),
    4: ("physically pruned speed", part_pruned),
    5: ("device_map counts", part_device_map),
    6: ("smoke notebooks", part_smoke),
}
# Bounded parts first: the split's search (part 2) and the notebooks (part 6) take the longest and vary most.
EXECUTION_ORDER = (1, 3, 4, 5, 2, 6)
SHARED_MODEL_PARTS = (1, 2, 3, 4, 5)  # the random model is kept until a part after these (part 5 does not use it)


def default_out() -> Path:
    """$OUT/gpu_check.json where OUT is set, else gpu_check.json here."""
    return Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; sizes left unset take the full run's or --tiny's defaults."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--parts", default="1,2,3,4,5,6", help="parts to run, e.g. 1,3")
    p.add_argument("--tiny", action="store_true", help="tiny shapes, on the CPU unless --device says otherwise")
    p.add_argument("--device", default="", help="cuda, cuda:1, cpu (default: cuda if available, else cpu; "
                   "--tiny: cpu)")
    p.add_argument("--out", default="", help="JSON file (default $OUT/gpu_check.json, else ./gpu_check.json)")
    p.add_argument("--shape", choices=list(SHAPES), default=None, help="random model (default llama2-7b; --tiny: tiny)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per batch (8; --tiny 2)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (2048; --tiny 64)")
    p.add_argument("--batches", type=int, default=None, help="batches per timed pass (2)")
    p.add_argument("--n-experts", type=int, default=None, help="experts per layer (256; --tiny 16)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median), after one warm-up")
    p.add_argument("--kmeans-iters", type=int, default=20)
    p.add_argument("--cpu-threads", type=int, default=0, help="torch threads of the CPU split (0 = torch's)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="dense bf16 peak of the device (0 = table)")
    p.add_argument("--notebooks", default=None, help="smoke notebooks by number, e.g. 01,02 (all; --tiny 01: the test suite runs every notebook on the smoke config anyway)")
    p.add_argument("--runs-dir", default="", help="keep the smoke run folder here (default: a temporary one)")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="parts and notebooks that would start after this many seconds are skipped")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for key, value in (TINY_DEFAULTS if args.tiny else FULL_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.device:
        args.device = "cpu" if args.tiny else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.shape == "llama2-7b" and not args.device.startswith("cuda"):
        p.error("the llama2-7b shape needs a GPU (13.5 GB of bf16 weights); use --tiny on the CPU")
    try:
        args.part_list = sorted({int(x) for x in args.parts.split(",") if x.strip()})
    except ValueError:
        p.error(f"--parts {args.parts!r}: give part numbers, e.g. 1,3")
    if not set(args.part_list) <= set(PARTS):
        p.error(f"--parts {args.parts!r}: parts are {', '.join(map(str, PARTS))}")
    return args


def run_meta(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """What ran where: versions, device, options."""
    import transformers

    meta = {"script": "benchmarks/gpu_check.py", "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "tiny": bool(args.tiny), "informational": bool(args.tiny) or device.type != "cuda",
            "device": str(device), "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": sys.version.split()[0],
            "options": {k: v for k, v in vars(args).items() if k != "part_list"}}
    if device.type == "cuda":
        meta["device_name"] = torch.cuda.get_device_name(device)
        meta["cuda"] = torch.version.cuda
    return meta


def run_part(table: Table, s: Setup, number: int) -> None:
    """One part, wrapped: its error becomes a row; the JSON is written after it."""
    title, fn = PARTS[number]
    if s.elapsed() > s.args.budget_s:
        table.skip(number, f"part {number} ({title})", f"time budget (--budget-s {s.args.budget_s:g}) spent")
        log.info("part %d (%s): skipped, time budget spent", number, title)
        table.save()
        return
    log.info("part %d (%s): starting at +%.0f s", number, title, s.elapsed())
    try:
        fn(table, s)
    except Exception as err:
        log.error("part %d (%s) failed: %s\n%s", number, title, err, traceback.format_exc())
        table.fail(number, f"part {number} ({title})", err)
    finally:
        free_memory(s.device)
        table.meta["seconds"] = round(s.elapsed(), 1)
        table.save()
    log.info("part %d (%s): done at +%.0f s", number, title, s.elapsed())


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts, print the table, write the JSON; 1 when a row holds an error."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out = Path(args.out) if args.out else default_out()
    setup = Setup(args, device, dtype)
    table = Table(out, run_meta(args, device, dtype))
    log.info("gpu_check: parts %s on %s (%s), shape %s; JSON -> %s", args.part_list, device, table.meta["dtype"],
             args.shape, out)
    for number in sorted(args.part_list, key=EXECUTION_ORDER.index):
        if number not in SHARED_MODEL_PARTS:
            setup.release()
        run_part(table, setup, number)
    setup.release()
    table.meta["model_build_seconds"] = round(setup.build_seconds, 1)
    table.meta["seconds"] = round(setup.elapsed(), 1)
    table.save()
    informational = table.meta["informational"]
    print(f"GPU check (issue 14): {table.meta.get('device_name', device)}, {table.meta['dtype']}, "
          f"torch {torch.__version__}; {table.meta['seconds']:.0f} s"
          + (" -- not a GPU run: aims are informational" if informational else ""))
    print(format_table(table.sorted_rows(), informational))
    print(f"JSON: {out}")
    return 1 if any(r.error for r in table.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
