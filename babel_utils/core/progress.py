"""Progress bars: tqdm.auto, switched off by TQDM_DISABLE=1 (the runner sets it for executed notebooks).

tqdm's notebook bar ignores TQDM_DISABLE, so every bar of the package goes through here.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm as _tqdm


def tqdm(*args: Any, **kwargs: Any) -> _tqdm:
    """A tqdm.auto progress bar, disabled when the environment sets TQDM_DISABLE."""
    kwargs.setdefault("disable", os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false"))
    return _tqdm(*args, **kwargs)
