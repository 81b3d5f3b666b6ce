"""Running the notebooks in order with papermill, one run folder per config."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

from ..core.config import FIELD_NAMES, BabelConfig, load_config, save_config
from ..core.paths import NOTEBOOKS_DIR, figures_dir, results_dir, run_dir, run_figures_dir
from ..core.progress import tqdm

log = logging.getLogger(__name__)

# Executed notebooks are documentation: no progress bars or hub chatter in their outputs.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class RunResult:
    """Where a run put its executed notebooks, results and figures, and how long each notebook took."""

    run_dir: Path
    notebooks: list[Path]
    seconds: dict[str, float]


def notebooks(only: Sequence[str] = ()) -> list[Path]:
    """The numbered notebooks in order, optionally only those whose number is in `only`."""
    found = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        known = {nb.name[:2] for nb in found}
        unknown = sorted(set(only) - known)
        if unknown:
            raise ValueError(f"--only names unknown notebook number(s) {unknown}; known: {sorted(known)}.")
        found = [nb for nb in found if nb.name[:2] in only]
    return found


def notebook_parameters(cfg: BabelConfig, notebook: Path) -> dict[str, Any]:
    """The config values of the parameters a notebook declares in its `parameters` cell."""
    import papermill as pm  # imported where used: the rest of the runner works without it

    with papermill_quiet():
        declared = pm.inspect_notebook(str(notebook))
    values = cfg.to_dict()
    return {name: values[name] for name in declared if name in FIELD_NAMES}


@contextmanager
def papermill_quiet() -> Iterator[None]:
    """papermill's INFO lines (input, output, working directory, kernel: four per notebook, each redrawing the
    run's progress bar) off for the block; the runner says once per notebook what finished and when."""
    papermill_log = logging.getLogger("papermill")
    level = papermill_log.level
    papermill_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        papermill_log.setLevel(level)


def quiet_environment() -> "contextlib.AbstractContextManager[None]":
    """Set QUIET_ENV for the kernels started inside, restoring the environment after."""
    return environment(QUIET_ENV)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block (kernels started inside inherit them), restoring them after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def preflight(cfg: BabelConfig) -> None:
    """Check what can be checked before any notebook runs: model name, n_experts, the similarity metric, the
    pruning methods 08 evaluates on tasks, the tuning settings, and the text of every language."""
    from ..analyse import instruction_data, similarity, tuning
    from ..data import text as data
    from ..models import adapters, loading
    from ..prune import methods

    adapters.check_n_experts(loading.model_config(cfg.model), cfg.n_experts, cfg.model)
    similarity.check_metric(cfg.similarity_metric)
    for name in cfg.task_methods:
        methods.check_method(name)
    if not cfg.tuned_model:
        tuning.check_tuning_config(cfg)
        instruction_data.directions(cfg.languages)
    for lang in cfg.languages:
        data.calibration_texts(cfg, lang)
        data.heldout_texts(cfg, lang)


# The notebooks whose results each notebook reads: with jobs > 1, a notebook starts once these are done,
# beside others that are ready (03-07 need only 01-02).
READS: dict[str, tuple[str, ...]] = {"01": (), "02": ("01",), "03": ("02",), "04": ("02",), "05": ("02",),
                                     "06": ("02",), "07": ("02",), "08": ("07",)}


def run(config: str | Path | BabelConfig, overrides: Mapping[str, Any] | Sequence[str] = (),
        only: Sequence[str] = (), publish: bool = False, jobs: int = 1) -> RunResult:
    """Execute the notebooks on one config into `runs/<run_name>/`; stages reuse cached results. With jobs > 1
    up to that many notebooks run side by side once what they read is done (for many cores or tiny models:
    each kernel still uses torch's threads)."""
    cfg = config if isinstance(config, BabelConfig) else load_config(config, overrides)
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: give the number of notebooks to run side by side (1 or more).")
    selected = notebooks(only)
    preflight(cfg)  # bad input fails here, before a run folder or a result exists
    out = run_dir(cfg.run_name)
    for folder in (out, results_dir(out), run_figures_dir(out)):
        folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    write_environment(out)
    done: dict[Path, tuple[Path, float]] = {}
    parameters = {nb: notebook_parameters(cfg, nb) for nb in selected}  # before any thread starts (it sets a log level)
    bar = tqdm(total=len(selected), desc=cfg.run_name, unit="notebook")  # before quiet_environment turns bars off

    def one(notebook: Path) -> None:
        log.debug("Executing %s in %s", notebook.name, out)
        start = time.perf_counter()
        remove_figures(run_figures_dir(out), notebook)  # a figure the notebook no longer draws does not linger
        target = execute(notebook, out, parameters[notebook])
        done[notebook] = (target, time.perf_counter() - start)
        log.info("%s done in %s", notebook.name, minutes(done[notebook][1]))
        if publish:
            shutil.copyfile(target, notebook)
            publish_figures(run_figures_dir(out), figures_dir(cfg.run_name), notebook)

    with logging_redirect_tqdm(), quiet_environment(), papermill_quiet(), bar:
        if jobs == 1:
            for notebook in selected:
                bar.set_postfix_str(notebook.name)
                one(notebook)
                bar.update()
        else:
            _side_by_side(selected, one, jobs, bar)
    return RunResult(run_dir=out, notebooks=[done[nb][0] for nb in selected],
                     seconds={nb.name: done[nb][1] for nb in selected})


def minutes(seconds: float) -> str:
    """A duration as a reader says it: '48 s', '8 min 39 s'."""
    whole = round(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60} s"


def _figures_of(folder: Path, notebook: Path) -> list[Path]:
    """The figures in `folder` that a notebook draws: their names start with its number ("05_...")."""
    return sorted(folder.glob(f"{notebook.name[:2]}_*.p[dn][fg]")) if folder.is_dir() else []


def remove_figures(folder: Path, notebook: Path) -> None:
    """Remove a notebook's figures from a folder before it runs again."""
    for path in _figures_of(folder, notebook):
        path.unlink()


def publish_figures(run_figures: Path, repository_figures: Path, notebook: Path) -> None:
    """Replace a notebook's figures in the repository (figures/<run name>/) by those of its run: only
    `babel run --publish` (make notebooks) writes there, so a user's run leaves the checkout as it was."""
    repository_figures.mkdir(parents=True, exist_ok=True)
    remove_figures(repository_figures, notebook)
    for path in _figures_of(run_figures, notebook):
        shutil.copyfile(path, repository_figures / path.name)


def _side_by_side(selected: list[Path], one: Any, jobs: int, bar: Any) -> None:
    """Run one(notebook) for every notebook, up to `jobs` at once, each after the selected ones it reads."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    keys = [nb.name[:2] for nb in selected]
    # what each waits for: its READS among the selected ones (a notebook not in READS: every one before it)
    needs = {key: [r for r in READS[key] if r in keys] if key in READS else keys[:i] for i, key in enumerate(keys)}
    finished: set[str] = set()
    waiting = list(selected)
    with ThreadPoolExecutor(jobs) as pool:
        running: dict[Any, Path] = {}
        while waiting or running:
            ready = [nb for nb in waiting if all(r in finished for r in needs[nb.name[:2]])]
            for notebook in ready[:jobs - len(running)]:
                waiting.remove(notebook)
                running[pool.submit(one, notebook)] = notebook
            bar.set_postfix_str(", ".join(nb.name for nb in running.values()))
            complete, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in complete:
                future.result()  # a failed notebook stops the run (the others in flight finish first)
                finished.add(running.pop(future).name[:2])
                bar.update()


def write_environment(out: Path) -> None:
    """Record beside the run's config.yaml what can change its floats: package versions, CPU kernels, threads."""
    from ..core.machine import machine_info
    from ..core.results import git_commit, package_versions, write_json

    write_json(out / "environment.json", {"versions": package_versions(), "machine": machine_info(),
                                          "git_commit": git_commit()})


def local_kernel_manager(sockets: Path) -> type:
    """A kernel manager whose kernels talk over local (IPC) sockets in the folder `sockets`: nothing listens
    on a TCP port, and ipykernel has no "running over TCP without encryption" to warn about."""
    from jupyter_client.manager import AsyncKernelManager

    class LocalKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", str(sockets / "kernel"))
            super().__init__(**kwargs)

    return LocalKernelManager


class NotebookFailed(RuntimeError):
    """A notebook of a run raised; names the notebook, the cell and the error."""

    def __init__(self, notebook: Path, saved: Path, cell: int | None, error: str, source: str = "") -> None:
        self.notebook, self.saved, self.cell, self.error = notebook, saved, cell, error
        first_line = source.strip().splitlines()[0] if source.strip() else ""
        where = (f"cell {cell}" + (f" ({first_line})" if first_line else "")) if cell is not None else "set-up"
        super().__init__(f"{notebook.name} failed at {where}: {error} (executed copy: {saved})")


def execute(notebook: Path, out: Path, parameters: dict[str, Any]) -> Path:
    """Execute one notebook into `out/`; a failed execution goes to `out/failed/`, never beside good ones."""
    import papermill as pm

    target, partial = out / notebook.name, out / f".{notebook.stem}.partial.ipynb"
    try:
        with tempfile.TemporaryDirectory(prefix="babel-kernel-") as sockets:
            pm.execute_notebook(str(notebook), str(partial), parameters=parameters, cwd=str(NOTEBOOKS_DIR),
                                kernel_name="python3", progress_bar=False, log_output=False,
                                kernel_manager_class=local_kernel_manager(Path(sockets)))
    except Exception as err:
        failed = out / "failed" / notebook.name
        failed.parent.mkdir(exist_ok=True)
        if partial.exists():
            os.replace(partial, failed)
        cell = getattr(err, "cell_index", None)  # index in the executed notebook
        summary = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
        raise NotebookFailed(notebook, failed, cell, summary, getattr(err, "source", "")) from err
    os.replace(partial, target)
    stale = out / "failed" / notebook.name
    stale.unlink(missing_ok=True)
    return target


def sweep(configs: Sequence[str | Path], overrides: Sequence[str] = (), only: Sequence[str] = ()) -> list:
    """Run several configs in turn, continuing past failures; returns each run's status."""
    from .report import RunStatus

    statuses = []
    for config in configs:
        try:
            result = run(config, overrides, only=only)
            statuses.append(RunStatus(str(config), result.run_dir))
        except NotebookFailed as err:
            statuses.append(RunStatus(str(config), err.saved.parent.parent, str(err)))
        except (ValueError, FileNotFoundError) as err:
            statuses.append(RunStatus(str(config), None, str(err)))
        if statuses[-1].error:
            log.error("%s failed: %s", config, statuses[-1].error)
    return statuses
