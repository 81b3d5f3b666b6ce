"""Writing and reading results: tables, arrays and JSON, always atomically, with a JSON sidecar."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .paths import REPO_ROOT

SUFFIXES = {"table": ".parquet", "array": ".npy", "json": ".json"}


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file in the same folder, then rename: no half-written file survives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """Fill a folder through a temp folder beside it, then rename: a killed run leaves no half-filled folder
    (a folder left by an older, killed run is replaced)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        write(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_table(path: Path, df: pd.DataFrame) -> None:
    """Write a DataFrame as parquet atomically."""
    atomic_write(path, lambda p: df.to_parquet(p, index=False))


def read_table(path: Path) -> pd.DataFrame:
    """Read a parquet table."""
    return pd.read_parquet(path)


def write_array(path: Path, array: np.ndarray) -> None:
    """Write a numpy array as .npy atomically."""
    def _save(p: Path) -> None:
        with open(p, "wb") as fh:
            np.save(fh, np.asarray(array))
    atomic_write(path, _save)


def read_array(path: Path) -> np.ndarray:
    """Read a .npy array."""
    return np.load(path)


def kind_of(obj: Any) -> str:
    """Which storage kind an object takes: table, array or json."""
    if isinstance(obj, pd.DataFrame):
        return "table"
    if isinstance(obj, np.ndarray):
        return "array"
    return "json"


WRITERS = {"table": write_table, "array": write_array, "json": write_json}
READERS = {"table": read_table, "array": read_array, "json": read_json}


def save(folder: Path, name: str, obj: Any, made_with: Any = None) -> Path:
    """Save a result under `folder/name.<suffix>` by its kind; returns the path. `made_with` (JSON-able: the
    parameters that made it) lands beside it as `name.made_with.json`, read back by `made_with`."""
    kind = kind_of(obj)
    path = Path(folder) / f"{name}{SUFFIXES[kind]}"
    record = Path(folder) / f"{name}.made_with.json"
    record.unlink(missing_ok=True)  # never an old record beside new data, even if killed in between
    WRITERS[kind](path, obj)
    if made_with is not None:
        write_json(record, made_with)
    return path


def made_with(folder: Path, name: str) -> Any:
    """The parameters a result was saved with (`save(..., made_with=)`), or None if none were recorded."""
    record = Path(folder) / f"{name}.made_with.json"
    return read_json(record) if record.exists() else None


def find(folder: Path, name: str) -> Path | None:
    """The stored file of a result, whatever its kind, or None."""
    for suffix in SUFFIXES.values():
        path = Path(folder) / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def load(folder: Path, name: str) -> Any:
    """Load a result saved by `save`; a clear error says which upstream notebook makes it."""
    path = find(folder, name)
    if path is None:
        raise FileNotFoundError(f"No result {name!r} in {folder}. Run the notebook that writes it "
                                "first (babel run CONFIG runs them in order).")
    kind = {v: k for k, v in SUFFIXES.items()}[path.suffix]
    return READERS[kind](path)


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The checkout's commit (with '+dirty' for uncommitted changes), or 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the results."""
    versions = {}
    for name in ["torch", "transformers", "numpy", "pandas", "scipy", "scikit-learn", "gguf", "babel-utils"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sidecar(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The provenance record written beside every cached result."""
    from .machine import machine_info

    return {
        "config": config,
        "versions": package_versions(),
        "machine": machine_info(),
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
