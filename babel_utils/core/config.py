"""The run configuration: one frozen dataclass holding every parameter of docs/method.md and its default."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from .languages import PAPER_LANGUAGES, UnknownLanguageError, resolve_languages

# Allowed values of the enumerated parameters; validation messages name them.
CHOICES: dict[str, tuple[Any, ...]] = {
    "dtype": ("auto", "float32", "bfloat16", "float16"),
    "head_dtype": ("float32", "bfloat16"),  # models/lm_head.py defines each by its arithmetic
    "text_source": ("udhr", "hf", "files"),
    "split_method": ("kmeans", "random", "contiguous"),
    "cluster_matrix": ("up", "gate", "gate+up"),
    "score": ("abs", "relu", "signed"),
    "normalize": ("zscore", "none"),
    "selection": ("cross_layer", "per_layer"),
    "prune_layer_mode": ("global", "per_layer"),
    "linkage_method": ("single", "complete", "average", "weighted", "centroid", "median", "ward"),  # scipy's
}


# The parameters come in sections, each a frozen dataclass named for what it decides. A cached stage's key is
# the fields of the sections it reads (cache.STAGE_READS), an evaluation task's those of its sections
# (tasks.Task.reads), and a notebook's own knobs the fields of its sections (NOTEBOOK_SECTIONS): a new field
# lands in one section and every key and parameters cell that should see it does.


@dataclass(frozen=True)
class RunParams:
    """What names the run and where it computes; no result depends on it."""

    run_name: str = "default"
    device: str = "auto"  # "auto" = cuda if present, else cpu
    device_map: str = ""  # "auto" spreads a model too large for one GPU (accelerate)


@dataclass(frozen=True)
class ModelParams:
    """The model studied and the precision it computes in."""

    model: str = "gemma-3-270m"  # built-in offline name, hub id or local directory
    dtype: str = "float32"


@dataclass(frozen=True)
class BatchingParams:
    """Rows per forward pass (the padding of an evaluation batch depends on it)."""

    batch_size: int = 8


@dataclass(frozen=True)
class HeadParams:
    """The precision of the LM head in every scored log-probability (held-out text, gold answers, choices)."""

    # float32: exact logits, as reproducible as the body's float32 activations (bits per byte 5e-7 apart between
    # CPUs). bfloat16 (models/lm_head.py: h and W rounded to bfloat16, float32 sums, logits rounded to bfloat16) is 1.4x
    # as fast where the CPU multiplies bfloat16 itself, but its rounding turns the body's last-bit noise into
    # differences of up to 2e-4 between CPUs (BENCHMARKS.md, "The LM head"). Generation is not affected.
    head_dtype: str = "float32"


@dataclass(frozen=True)
class LanguageParams:
    """The languages of the run."""

    languages: tuple[str, ...] = PAPER_LANGUAGES  # codes and groups (all, paper, family:X, ...), resolved to codes


@dataclass(frozen=True)
class EvalLanguageParams:
    """The languages of 06-08, whose cost grows with every language (a subset of `languages`)."""

    eval_languages: tuple[str, ...] = ()  # codes and groups like `languages`; () = every language of the run


@dataclass(frozen=True)
class TextParams:
    """Where the text comes from and how it is packed (docs/method.md section 3, issue 2 section 3)."""

    text_source: str = "udhr"
    text_dataset: str = ""  # hub id or local path, for text_source="hf"
    text_dataset_config: str = ""  # may contain {lang}
    text_split: str = "train"
    text_column: str = "text"
    text_files: Mapping[str, str] = field(default_factory=dict)  # lang -> path, text_source="files"
    heldout_fraction: float = 0.2  # share of a non-UDHR text held out for evaluation
    seq_len: int = 256  # tokens per packed sequence


@dataclass(frozen=True)
class CalibrationParams:
    """The text the activation statistics are computed on."""

    calib_articles: tuple[int, int] = (1, 20)  # UDHR articles for the activation statistics


@dataclass(frozen=True)
class HeldoutParams:
    """The text evaluations (and the tuning's held-out loss) are computed on."""

    heldout_articles: tuple[int, int] = (21, 30)  # UDHR articles for evaluation


@dataclass(frozen=True)
class SeedParams:
    """The seed of the split's k-means and of the offline tuning."""

    seed: int = 0


@dataclass(frozen=True)
class SplitParams:
    """How each FFN is split into experts (docs/method.md section 2, notebook 01)."""

    n_experts: int = 256
    split_method: str = "kmeans"
    cluster_matrix: str = "up"
    kmeans_iters: int = 20
    kmeans_swap_rounds: int = 1000  # budget of the exact swap refinement; it stops earlier at a local optimum


@dataclass(frozen=True)
class SplitRaceParams:
    """01's race of our balanced k-means against k-means-constrained."""



@dataclass(frozen=True)
class ScoringParams:
    """How an expert's activation is scored, by the recording and by dynamic top-k pruning."""

    score: str = "abs"


@dataclass(frozen=True)
class RecordParams:
    """Which experts a token selects and over how much text they are counted (docs/method.md section 3, notebook 02)."""

    token_budget: int = 0  # calibration tokens per language; 0 = the smallest language's count
    normalize: str = "zscore"
    selection: str = "cross_layer"
    top_fraction: float = 0.10
    bootstrap_block: int = 32  # tokens per block of the per-block counts used for bootstraps; 0 = none


@dataclass(frozen=True)
class HeatmapParams:
    """03's heatmaps drawn one by one at full size (the grid shows every language)."""

    # codes and groups like `languages`; () = every language up to figures.style.MANY_LANGUAGES, else the paper's
    # nine among them (at 500 languages one file each would be 2,000 files and minutes of drawing)
    heatmap_languages: tuple[str, ...] = ()


@dataclass(frozen=True)
class HighFrequencyParams:
    """What counts as a high-frequency expert (notebooks 04 and 07)."""

    high_freq_threshold: float = 0.05


@dataclass(frozen=True)
class SweepParams:
    """04's sweep around high_freq_threshold."""

    sweep_thresholds: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class FamilyParams:
    """04's shared and own experts per family, against random groups of as many languages (analyse/families.py)."""

    family_min_languages: int = 2  # families with fewer of the run's languages are not summarised
    family_samples: int = 1000  # random groups per family size


@dataclass(frozen=True)
class SimilarityParams:
    """05's language similarity: divergences, tests, dendrogram and the expert grid (docs/method.md section 4)."""

    kl_smoothing: float = 1e-6
    n_permutations: int = 10000
    n_bootstrap: int = 200
    expert_grid: tuple[int, ...] = (64, 128, 256, 512)
    # swap budget of the grid's other granularities (the run's own n_experts keeps kmeans_swap_rounds):
    # 4 rounds leave the objective ~2-3 % short of the local optimum at a third of the time (BENCHMARKS.md)
    expert_grid_swap_rounds: int = 4
    similarity_metric: str = "pearson"  # metric of the dendrogram, the tests and the grid (similarity.METRICS)
    linkage_method: str = "average"  # hierarchical clustering (scipy's linkage method)
    alpha: float = 0.05  # significance level of the sentences


@dataclass(frozen=True)
class TuningParams:
    """06's instruction-tuned model: named, or made offline (babel_utils/analyse/tuning.py)."""

    tuned_model: str = ""  # instruction-tuned variant for 06 ("" = make one offline)
    tuning_steps: int = 30  # AdamW steps
    tuning_lr: float = 1e-3
    tuning_batch: int = 8  # instructions per step
    tuning_max_tokens: int = 96  # tokens per instruction (prompt + target)
    tuning_params: str = "layers"  # which linear maps: layers (attention and FFN of every layer) | mlp | attention
    tuning_rank: int = 4  # LoRA rank; 0 = full fine-tune of those weights


@dataclass(frozen=True)
class PruningParams:
    """The masks of 07 (docs/method.md section 5)."""

    prune_ratios: tuple[float, ...] = (0.10, 0.25, 0.50)
    prune_layer_mode: str = "global"
    random_seeds: tuple[int, ...] = (0, 1, 2)
    dynamic_top_k: int = 0  # experts kept per layer and token; 0 = n_experts * (1 - 0.25)


@dataclass(frozen=True)
class OverlapParams:
    """07's comparison of the languages' masks."""

    overlap_ratio: float = 0.25  # ratio at which the sorting masks are compared (nearest of prune_ratios)


@dataclass(frozen=True)
class HeldoutEvalParams:
    """How much held-out text 08 scores, in blocks for the paired bootstrap."""

    # held-out tokens per language for every mask of the main comparison (UDHR articles 21-30 hold 700-1000
    # in each of the paper's nine languages); 162 evaluations of 512 tokens fit 2 CPU cores; GPU: 65536
    eval_max_tokens: int = 512
    # tokens per block of the paired bootstrap (the same blocks both sides): about a clause, so that
    # neighbouring blocks are close to independent, and 32 blocks per language at 512 tokens
    eval_block_tokens: int = 16


@dataclass(frozen=True)
class IntervalParams:
    """08's intervals: a finding is stated only when its interval says so."""

    eval_bootstrap: int = 1000  # bootstrap resamples of every interval
    interval_level: float = 0.95  # coverage of the intervals


@dataclass(frozen=True)
class MgsmParams:
    """MGSM (docs/method.md sections 5.2 and 5.4)."""

    mgsm_dir: str = ""  # "" = paths.mgsm_dir(); a hub id loads the Hugging Face form
    mgsm_n: int = 25  # problems per language scored by the gold answer's log-likelihood (0 = all 250)
    mgsm_generate_n: int = 4  # of those, problems answered by greedy generation (accuracy); 0 = all mgsm_n
    gen_max_new_tokens: int = 32  # greedy generation (stops early at a new "Question"); GPU: 256


@dataclass(frozen=True)
class XcsqaParams:
    """X-CSQA (docs/method.md sections 5.2 and 5.4)."""

    xcsqa_dataset: str = ""  # "" = skip; "INK-USC/xcsr" or a local folder in its schema
    xcsqa_n: int = 50


@dataclass(frozen=True)
class ComparisonParams:
    """Which comparisons 08 makes beyond the main one."""

    task_ratio: float = 0.25  # MGSM and X-CSQA on the unpruned model and the masks of task_methods here
    task_methods: tuple[str, ...] = ("sorting", "random")  # random = its first seed; add layerwise on a GPU
    cross_language_ratio: float = 0.25  # every language's sorting mask on every language at this ratio
    cross_language_max_tokens: int = 128  # held-out tokens of that matrix (81 evaluations); 0 = eval_max_tokens
    split_compare_methods: tuple[str, ...] = ("random", "contiguous")  # other expert splits compared
    split_compare_languages: tuple[str, ...] = ("en", "hi", "zh")  # languages of that comparison (in languages)
    split_compare_ratio: float = 0.25
    split_compare_max_tokens: int = 128  # held-out tokens of that comparison; 0 = eval_max_tokens


@dataclass(frozen=True)
class TimingParams:
    """08's timed forward passes."""

    timing_tokens: int = 256
    timing_repeats: int = 3


SECTIONS: dict[str, type] = {
    "run": RunParams, "model": ModelParams, "batching": BatchingParams, "head": HeadParams,
    "languages": LanguageParams,
    "evaluation_languages": EvalLanguageParams, "text": TextParams, "calibration": CalibrationParams,
    "heldout": HeldoutParams, "seed": SeedParams, "split": SplitParams, "split_race": SplitRaceParams,
    "scoring": ScoringParams, "record": RecordParams, "heatmaps": HeatmapParams,
    "high_frequency": HighFrequencyParams, "sweep": SweepParams, "families": FamilyParams,
    "similarity": SimilarityParams, "tuning": TuningParams, "pruning": PruningParams, "overlap": OverlapParams,
    "heldout_eval": HeldoutEvalParams, "intervals": IntervalParams, "mgsm": MgsmParams, "xcsqa": XcsqaParams,
    "comparisons": ComparisonParams, "timing": TimingParams,
}


@dataclass(frozen=True)
class BabelConfig(TimingParams, ComparisonParams, XcsqaParams, MgsmParams, IntervalParams, HeldoutEvalParams,
                  OverlapParams, PruningParams, TuningParams, SimilarityParams, FamilyParams, SweepParams,
                  HighFrequencyParams, HeatmapParams, RecordParams, ScoringParams, SplitRaceParams, SplitParams,
                  SeedParams, HeldoutParams, CalibrationParams, TextParams, EvalLanguageParams, LanguageParams, HeadParams,
                  BatchingParams, ModelParams, RunParams):
    """Every parameter of a run, with the defaults docs/method.md states: the union of the sections (bases listed
    last-first because a dataclass collects its bases' fields in reverse order; `to_dict` follows SECTIONS)."""

    def __post_init__(self) -> None:
        _coerce_sequences(self)
        validate(self)

    def replace(self, **changes: Any) -> "BabelConfig":
        """A copy with some parameters changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every parameter, section by section (the order of SECTIONS)."""
        values = dataclasses.asdict(self)
        return json.loads(json.dumps({name: values[name] for name in FIELD_NAMES}))


def _coerce_sequences(cfg: BabelConfig) -> None:
    """YAML and papermill give lists; the frozen config keeps tuples and plain dicts."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(f.default, tuple):
            object.__setattr__(cfg, f.name, _sequence(value))
        elif f.name == "text_files":
            object.__setattr__(cfg, f.name, dict(value or {}))
    _resolve_language_setting(cfg)


def _sequence(value: Any) -> tuple:
    """A list parameter as a tuple. papermill's -p passes text ("en", "0.1", "[0.1, 0.25]", "1,20"): read as
    YAML, or split at commas; a single value is a one-element list."""
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, list):
            return tuple(parsed)
        return tuple(yaml.safe_load(part.strip()) for part in value.split(",")) if "," in value else (parsed,)
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _resolve_language_setting(cfg: BabelConfig) -> None:
    """`languages` and the subsets of it (`eval_languages`, `heatmap_languages`) as tuples of table codes:
    groups expanded, aliases made codes (so cache keys see concrete codes); a string is split at commas
    ("all", "paper, de"). In a subset a group means its languages among the run's."""
    object.__setattr__(cfg, "languages", _resolve("languages", cfg.languages))
    for key in ("eval_languages", "heatmap_languages"):
        object.__setattr__(cfg, key, _resolve(key, getattr(cfg, key), within=cfg.languages))


def _resolve(key: str, spec: Any, within: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The codes of one language setting, or an error naming the key and the closest matches."""
    try:
        return resolve_languages(spec, within)
    except UnknownLanguageError as err:
        raise ValueError(f"Config key {key!r} names unknown language(s) {err.unknown}: {err.hint}") from None


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ValueError(f"Config key {key!r} has the bad value {value!r}; allowed: {allowed}.")


def validate(cfg: BabelConfig) -> None:
    """Check every parameter; the error names the key and the allowed values."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            _fail(key, getattr(cfg, key), ", ".join(map(str, allowed)))
    for key in ["calib_articles", "heldout_articles", "expert_grid", "prune_ratios", "random_seeds",
                "sweep_thresholds"]:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in getattr(cfg, key)):
            _fail(key, getattr(cfg, key), f"a list of numbers (from papermill, pass lists with -y, e.g. "
                                          f"-y '{{{key}: {list(getattr(BabelConfig, key))}}}')")
    if not cfg.languages:
        _fail("languages", cfg.languages, "a non-empty list of codes or groups (`babel languages` lists them)")
    for key in ("eval_languages", "heatmap_languages"):
        outside = [c for c in getattr(cfg, key) if c not in cfg.languages]
        if outside:
            _fail(key, getattr(cfg, key), f"languages of the run (`languages`); {outside} are not")
    if not isinstance(cfg.family_min_languages, int) or cfg.family_min_languages < 2:
        _fail("family_min_languages", cfg.family_min_languages,
              "an integer >= 2 (a family needs two languages to share experts)")
    if cfg.eval_languages and cfg.token_budget == 0 and set(cfg.eval_languages) != set(cfg.languages):
        _fail("token_budget", 0, "an explicit number of tokens when eval_languages is a subset (0 means the smallest "
                                 "language's count, which would differ between 02 on every language and 06 on the "
                                 "subset), e.g. the tokens per language 02 counted")
    positive = ["n_experts", "kmeans_iters", "family_samples", "batch_size", "seq_len", "n_permutations",
                "n_bootstrap", "eval_max_tokens", "eval_block_tokens", "eval_bootstrap", "gen_max_new_tokens",
                "timing_tokens", "timing_repeats"]
    for key in positive:
        if not isinstance(getattr(cfg, key), int) or getattr(cfg, key) < 1:
            _fail(key, getattr(cfg, key), "an integer >= 1")
    for key in ["kmeans_swap_rounds", "expert_grid_swap_rounds", "token_budget", "dynamic_top_k", "mgsm_n",
                "mgsm_generate_n", "xcsqa_n", "seed", "bootstrap_block", "cross_language_max_tokens",
                "split_compare_max_tokens"]:
        if not isinstance(getattr(cfg, key), int) or getattr(cfg, key) < 0:
            _fail(key, getattr(cfg, key), "an integer >= 0")
    for method in cfg.split_compare_methods:
        if method not in CHOICES["split_method"]:
            _fail("split_compare_methods", cfg.split_compare_methods, ", ".join(CHOICES["split_method"]))
    for key in ["alpha", "overlap_ratio", "task_ratio", "cross_language_ratio", "split_compare_ratio", "interval_level"]:
        if not 0.0 < getattr(cfg, key) < 1.0:
            _fail(key, getattr(cfg, key), "a number in (0, 1)")
    if not 0.0 < cfg.top_fraction <= 1.0:
        _fail("top_fraction", cfg.top_fraction, "a number in (0, 1]")
    if not 0.0 < cfg.high_freq_threshold <= 1.0:
        _fail("high_freq_threshold", cfg.high_freq_threshold, "a number in (0, 1]")
    if not 0.0 < cfg.heldout_fraction < 1.0:
        _fail("heldout_fraction", cfg.heldout_fraction, "a number in (0, 1)")
    for ratio in cfg.prune_ratios:
        if not 0.0 <= ratio < 1.0:
            _fail("prune_ratios", ratio, "ratios in [0, 1)")
    for key in ["calib_articles", "heldout_articles"]:
        if len(getattr(cfg, key)) != 2:
            _fail(key, getattr(cfg, key), "[first, last] article numbers within 1..30")
        lo, hi = getattr(cfg, key)
        if not 1 <= lo <= hi <= 30:
            _fail(key, (lo, hi), "[first, last] article numbers within 1..30")
    if cfg.text_source == "udhr":
        (c0, c1), (h0, h1) = cfg.calib_articles, cfg.heldout_articles
        if not (c1 < h0 or h1 < c0):
            _fail("heldout_articles", cfg.heldout_articles,
                  f"a range that does not overlap calib_articles {cfg.calib_articles}")
    if cfg.text_source == "hf" and not cfg.text_dataset:
        _fail("text_dataset", cfg.text_dataset, "a dataset id or local path when text_source is 'hf'")
    if cfg.text_source == "files":
        missing = [lang for lang in cfg.languages if lang not in cfg.text_files]
        if missing:
            _fail("text_files", dict(cfg.text_files), f"a path for every language; missing {missing}")


def section_fields(*sections: str) -> tuple[str, ...]:
    """The config fields of some sections (names of SECTIONS), in their order."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"Unknown config section(s) {unknown}; known: {', '.join(SECTIONS)}.")
    return tuple(f.name for s in sections for f in fields(SECTIONS[s]))


FIELD_NAMES: tuple[str, ...] = section_fields(*SECTIONS)


def _check_keys(keys: Any, origin: str) -> None:
    unknown = sorted(set(keys) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"Unknown config key(s) {unknown} in {origin}. "
                         f"Known keys: {', '.join(FIELD_NAMES)}.")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `key=value` override; the value is read as YAML (numbers, lists, strings)."""
    if "=" not in text:
        raise ValueError(f"Override {text!r} is not of the form key=value (e.g. n_experts=128).")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""  # `key=` sets the empty string


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | list[str] = ()) -> BabelConfig:
    """Load a YAML config (or the defaults), apply overrides, validate."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Config file {path} does not exist; see configs/ for examples.")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"Config file {path} must hold a mapping of key: value.")
        _check_keys(values, str(path))
    if not isinstance(overrides, Mapping):
        overrides = dict(parse_override(o) for o in overrides)
    _check_keys(overrides, "the overrides")
    values.update(overrides)
    return BabelConfig(**values)


RUN_SELECTOR: tuple[str, ...] = ("run_name", "config_file", "overrides")  # first in every parameters cell

# Each notebook's own knobs are the fields of its sections: its parameters cell declares the run selector and
# these, nothing else (a test checks it). Every other field is a value of the run (model, languages, text, ...),
# read from its config.
NOTEBOOK_SECTIONS: dict[str, tuple[str, ...]] = {
    "01": ("split", "seed", "split_race"),
    "02": ("record", "scoring"),
    "03": ("heatmaps",),
    "04": ("sweep", "families"),
    "05": ("similarity",),
    "06": ("tuning",),
    "07": ("pruning", "overlap"),
    "08": ("head", "heldout_eval", "intervals", "mgsm", "xcsqa", "comparisons", "timing"),
}
NOTEBOOK_KNOBS: dict[str, tuple[str, ...]] = {nb: section_fields(*s) for nb, s in NOTEBOOK_SECTIONS.items()}
# The notebooks that run on `eval_languages` (a value of the run, like `languages`: 07's masks and 08's
# evaluations must see the same subset, so it is no notebook's knob).
EVALUATION_NOTEBOOKS: tuple[str, ...] = ("06", "07", "08")


def run_config_path(run_name: str) -> Path:
    """Where a run's config lives: runs/<run_name>/config.yaml (written by `babel run`), else the shipped
    configs/<run_name>.yaml (so a notebook opened in JupyterLab works before any run)."""
    from .paths import CONFIGS_DIR, run_dir

    for path in (run_dir(run_name) / "config.yaml", CONFIGS_DIR / f"{run_name}.yaml"):
        if path.exists():
            return path
    raise FileNotFoundError(
        f"No config for run {run_name!r}: neither {run_dir(run_name) / 'config.yaml'} (written by `babel run`) "
        f"nor {CONFIGS_DIR / (run_name + '.yaml')} exists. Run `babel run CONFIG` first, or set config_file.")


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, list, tuple, dict)) or value is None


def for_notebook(namespace: Mapping[str, Any], notebook: str) -> BabelConfig:
    """The config of notebook `notebook` ("01".."08"): its run's config (`config_file`, else
    `run_config_path(run_name)`), then that notebook's knobs as its parameters cell sets them, then
    `overrides`; validated. Another config key set in the namespace (papermill's -p) is an error, not ignored."""
    knobs = NOTEBOOK_KNOBS[notebook]
    stray = [k for k in FIELD_NAMES if k in namespace and k not in knobs and k != "run_name" and _plain(namespace[k])]
    if stray:
        key = stray[0]
        raise ValueError(f"{key!r} is not a parameter of notebook {notebook} (its own: {', '.join(knobs) or 'none'}) "
                         f"but a value of the run's config. Set it with overrides, e.g. papermill -y "
                         f"'{{overrides: {{{key}: ...}}}}', or for the whole run: `babel run CONFIG --set {key}=...`.")
    run_name = namespace.get("run_name", "default")
    source = namespace.get("config_file") or run_config_path(run_name)
    overrides = namespace.get("overrides") or {}
    if isinstance(overrides, str):  # papermill's -p passes text
        overrides = yaml.safe_load(overrides) or {}
    if not isinstance(overrides, Mapping):
        raise ValueError(f"overrides={overrides!r} must map config keys to values, e.g. "
                         "-y '{overrides: {top_fraction: 0.2}}'.")
    own = {k: namespace[k] for k in knobs if k in namespace}
    cfg = load_config(source, {**own, **overrides, "run_name": run_name})
    return evaluation_view(cfg) if notebook in EVALUATION_NOTEBOOKS else cfg


def evaluation_view(cfg: BabelConfig) -> BabelConfig:
    """The config of 06-08: `languages` narrowed to `eval_languages` where that is set, so their stages, cache
    keys and tables are exactly those of a run on the subset."""
    return cfg.replace(languages=cfg.eval_languages) if cfg.eval_languages else cfg


def describe(cfg: BabelConfig) -> str:
    """Every value of a config, one `key: value` per line (what each executed notebook folds under its summary)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True, width=120).rstrip()


@dataclass(frozen=True)
class ConfigSummary:
    """What a notebook ran on, in two lines, with every value of the config folded below (in HTML, as Jupyter and
    the documentation show it) or named by its file (as text)."""

    cfg: BabelConfig

    def lines(self) -> list[str]:
        """The summary: model, languages, experts, text; where the parameters and the full config are."""
        cfg, n = self.cfg, len(self.cfg.languages)
        languages = ", ".join(cfg.languages) if n <= 12 else f"{', '.join(cfg.languages[:8])}, ... ({n} in all)"
        budget = f"{cfg.token_budget} calibration tokens" if cfg.token_budget else "the smallest language's tokens"
        return [f"Run {cfg.run_name!r}: {cfg.model} ({cfg.dtype}), {n} languages ({languages}), {cfg.n_experts} "
                f"experts per layer, text {cfg.text_source} ({budget} per language), seed {cfg.seed}.",
                f"This notebook's own knobs are its parameters cell; all {len(FIELD_NAMES)} values of the config are "
                f"in runs/{cfg.run_name}/config.yaml."]

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        from html import escape

        head, tail = self.lines()
        return (f"<p>{escape(head)}<br>{escape(tail)}</p><details><summary>Every value of the config "
                f"({len(FIELD_NAMES)})</summary><pre>{escape(describe(self.cfg))}</pre></details>")


def summary(cfg: BabelConfig) -> ConfigSummary:
    """What a notebook ran on: a two-line summary with the whole config folded under it."""
    return ConfigSummary(cfg)


def save_config(cfg: BabelConfig, path: str | Path) -> None:
    """Write the full config as YAML (atomically)."""
    from .results import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))
