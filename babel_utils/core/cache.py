"""Stage results cached on disk, keyed by a hash of the parameters and the code that made them."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import results
from .config import BabelConfig, section_fields
from .fingerprint import code_fingerprint
from .paths import stage_cache_dir

log = logging.getLogger(__name__)
T = TypeVar("T")

# The config sections (config.SECTIONS) each stage's results depend on: their fields key its cache, beside the
# fingerprint of the code the stage runs (fingerprint.STAGE_CODE). Evaluations are keyed by their task's
# sections (tasks.Task.reads) plus the task, the mask, labels and language.
RECORDING: tuple[str, ...] = ("model", "text", "calibration", "scoring", "record")  # what one pass over a text shares
STAGE_READS: dict[str, tuple[str, ...]] = {
    "split": ("model", "split", "seed"),
    "record": RECORDING + ("split", "seed"),
    # the offline tuning's instructions come from the bundled UDHR whatever the text section says
    "tuning": ("model", "languages", "calibration", "heldout", "seed", "tuning"),
    "pruning": RECORDING + ("split", "seed", "languages", "high_frequency", "pruning"),
    # an evaluation is keyed by its own task's sections (tasks.Task.reads); the table of 08 by all of them
    "eval": ("model", "batching", "scoring", "head", "text", "heldout", "heldout_eval", "mgsm", "xcsqa"),
}


# The run results that later notebooks read, with the stage whose parameters made them and their notebook.
UPSTREAM: dict[str, tuple[str, str]] = {
    "labels": ("split", "01_split"),
    "expert_kind": ("split", "01_split"),
    "frequencies": ("record", "02_record"),
    "masks": ("pruning", "07_pruning"),
    "pruning_eval": ("eval", "08_pruning_eval"),
}


class OtherCodeWarning(UserWarning):
    """An upstream result in a run folder was made by other code than the installed babel_utils."""


def provenance(cfg: BabelConfig, name: str) -> dict[str, Any]:
    """What an upstream result records about its making (results.save(..., made_with=provenance(cfg, name))):
    its stage's parameters and the fingerprint of its stage's code (`code`)."""
    stage, _ = UPSTREAM[name]
    return json.loads(json.dumps({**stage_params(cfg, stage), "code": code_fingerprint(stage)}, default=str))


def check_provenance(folder: Path, cfg: BabelConfig, name: str) -> None:
    """Stop, naming the parameter, when an upstream result in a run folder was made with other parameters
    than `cfg` says (a notebook run alone with papermill on changed upstream values): never mix silently.
    Say so (an OtherCodeWarning) when it was made by other code than the stage's code now."""
    made = results.made_with(folder, name)
    if made is None:
        log.warning("%s in %s records no parameters (made before babel recorded them): not checked", name, folder)
        return
    now = provenance(cfg, name)
    stage, notebook = UPSTREAM[name]
    if made.get("code", now["code"]) != now["code"]:
        warnings.warn(f"{name} in {folder} was made by other code than this babel_utils runs for {notebook} "
                      f"(stage {stage!r}: code {made['code']}, now {now['code']}). Rerun {notebook} and what "
                      f"follows it (`babel run CONFIG`: stages whose code did not change are reused).",
                      OtherCodeWarning, stacklevel=2)
    differ = [key for key in now if key != "code" and key in made and made[key] != now[key]]
    if differ:
        key, (_, notebook) = differ[0], UPSTREAM[name]
        also = f" (also {', '.join(differ[1:])})" if differ[1:] else ""
        raise ValueError(
            f"{name} in {folder} was made by {notebook} with {key}={made[key]!r}, but this notebook's config has "
            f"{key}={now[key]!r}{also}. Rerun {notebook} (and what follows it) with {key}={now[key]!r}, for example "
            f"`babel run CONFIG --set {key}=...` (cached stages are reused), or set {key} back to {made[key]!r}.")


def stage_params(cfg: BabelConfig, stage: str, fields: tuple[str, ...] | None = None, **extra: Any) -> dict[str, Any]:
    """The parameters that key a stage's cache: the fields of the sections it reads (STAGE_READS; or `fields`
    for a stage whose results say themselves what they depend on, as evaluations do) plus any extra keys."""
    if fields is None and stage not in STAGE_READS:
        raise ValueError(f"Unknown stage {stage!r}; known stages: {', '.join(STAGE_READS)}.")
    full = cfg.to_dict()
    params = {k: full[k] for k in (section_fields(*STAGE_READS[stage]) if fields is None else fields)}
    params.update(extra)
    return params


def params_key(cfg: BabelConfig, stage: str, **extra: Any) -> str:
    """Short hash of a stage's parameters alone (what names a committed artifact, an input like the weights)."""
    blob = json.dumps({"stage": stage, **stage_params(cfg, stage, **extra)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_key(cfg: BabelConfig, stage: str, **extra: Any) -> str:
    """Short hash of a stage's parameters and of the code that computes it (fingerprint.code_fingerprint)."""
    params = stage_params(cfg, stage, **extra)
    blob = json.dumps({"stage": stage, "code": code_fingerprint(stage), **params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_dir(cfg: BabelConfig, stage: str, **extra: Any) -> Path:
    """The cache folder of one stage's results for these parameters."""
    return stage_cache_dir() / stage / stage_key(cfg, stage, **extra)


def is_cached(cfg: BabelConfig, stage: str, **extra: Any) -> bool:
    """Whether a complete result of this stage and these parameters is on disk."""
    return (stage_dir(cfg, stage, **extra) / "meta.json").exists()


def cached(cfg: BabelConfig, stage: str, compute: Callable[[], dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Load a stage's named results if these parameters made them before, else compute and store them.

    `compute` returns {name: table | array | JSON-able}. Each result lands atomically, and the JSON sidecar
    (`meta.json`: the stage's parameters and code fingerprint, the full config, package versions, git commit)
    is written last, so only a complete stage counts as cached and a killed run recomputes just that stage.
    """
    folder = stage_dir(cfg, stage, **extra)
    meta = folder / "meta.json"
    if is_cached(cfg, stage, **extra):
        log.info("%s: cached in %s", stage, folder)
    else:
        log.info("%s: computing (cache key %s)", stage, folder.name)
        values = compute()
        for name, value in values.items():
            results.save(folder, name, value)
        results.write_json(meta, results.sidecar(cfg.to_dict(), stage=stage, names=sorted(values),
                                                 params=stage_params(cfg, stage, **extra),
                                                 code=code_fingerprint(stage)))
    # Always return what was stored, so a first run and a cached rerun see exactly the same objects.
    names = results.read_json(meta)["names"]
    return {name: results.load(folder, name) for name in names}
