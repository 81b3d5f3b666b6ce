"""babel_utils: the library behind the babel notebooks, one subpackage per stage of the study.

From the bottom up: core (config, paths, languages, cache, results), models (loading, architecture table, hooks,
LM head), data (text), split (01), record (02), prune (07), kinds (split or native experts), analyse (03-06) and
evaluate (08), figures, run (the cached stages, 08's comparisons, the `babel` command, reproduction checks). A
subpackage imports only those below it (pyproject.toml's import-linter contract); its __init__ is its face, the
names the notebooks call: `from babel_utils import core, models, run`.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"
