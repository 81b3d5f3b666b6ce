"""What code made a cached result: a fingerprint of the babel_utils modules a stage runs and of the packages
they compute with, so that a stage's cache entry never outlives the code that made it (cache.stage_key).

A stage's modules are the roots named in STAGE_CODE and every babel_utils module they import, directly or
through others (imports inside functions included). Each module counts by its syntax tree without comments
and docstrings: editing a comment or a docstring keeps every cache entry, editing a line of code renews the
entries of every stage that runs it.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGE = "babel_utils"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The modules whose functions compute each cached stage (models.loading: how the weights are loaded and dequantized;
# data.text: which tokens are read). Their imports are followed, so a root names only where the work starts.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "split": ("models.loading", "kinds.expert_kinds"),
    "record": ("models.loading", "data.text", "kinds.expert_kinds"),
    "tuning": ("models.loading", "analyse.tuning"),
    "pruning": ("prune.methods",),
    "eval": ("models.loading", "data.text", "evaluate.tasks", "prune.methods", "kinds.expert_kinds"),
}
# The packages whose arithmetic the stages run: a new version may change a result's last bits or more.
LIBRARIES: tuple[str, ...] = ("torch", "transformers", "numpy", "gguf")


def _module_path(name: str, root: Path) -> Path | None:
    """The file of a babel_utils module by its dotted name below the package ("kmeans", "core.config")."""
    base = root.joinpath(*name.split(".")) if name else root
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(name: str, root: Path) -> set[str]:
    """The babel_utils modules one module imports (relative or absolute, at any depth of the file)."""
    path = _module_path(name, root)
    package = name.split(".")[:-1] if path is not None and path.name != "__init__.py" else name.split(".")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            bases = [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
            found |= {b.split(".", 1)[1] if "." in b else "" for b in bases}
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            parts = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
        elif (node.module or "").split(".")[0] == PACKAGE:
            parts = node.module.split(".")[1:]
        else:
            continue
        base = ".".join(parts)
        found.add(base)
        found |= {f"{base}.{a.name}".lstrip(".") for a in node.names}  # `from . import kmeans` names a module
    return {m for m in found if _module_path(m, root) is not None}


def stage_modules(stage: str, root: Path = PACKAGE_DIR) -> list[str]:
    """Every babel_utils module a stage's computation can run, sorted."""
    if stage not in STAGE_CODE:
        raise ValueError(f"Unknown stage {stage!r}; stages with code: {', '.join(STAGE_CODE)}.")
    seen: set[str] = set()
    todo = list(STAGE_CODE[stage])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_imported(name, root) - seen)
    return sorted(seen)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """The tree with the docstring of the module, each class and each function removed."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _code_digest(path: Path) -> str:
    """sha256 of a module's code: its syntax tree, without comments, docstrings or layout."""
    tree = _without_docstrings(ast.parse(path.read_text(encoding="utf-8")))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the packages the stages compute with."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@lru_cache(maxsize=None)
def code_fingerprint(stage: str, root: Path = PACKAGE_DIR) -> str:
    """Short hash of the code a stage runs: its babel_utils modules' code and the libraries' versions."""
    digest = hashlib.sha256()
    for name in stage_modules(stage, root):
        digest.update(f"{name}:{_code_digest(_module_path(name, root))}\n".encode())
    for name, version in library_versions().items():
        digest.update(f"{name}=={version}\n".encode())
    return digest.hexdigest()[:16]
