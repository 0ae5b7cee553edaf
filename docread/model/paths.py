"""Where docread keeps files of its own: one cache folder, `$DOCREAD_CACHE` or the platform's user cache.

Model weights stay in the standard Hugging Face cache; this folder is for what docread itself derives
(e.g. a quantized copy of a base). Every caller asks `cache_dir()`, so one variable moves all of it.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "docread"
CACHE_ENV = "DOCREAD_CACHE"  # overrides the platform's location (~/.cache/docread on Linux)


def cache_dir(*parts: str, create: bool = False) -> Path:
    """docread's cache folder, or `parts` below it; made (with parents) when `create`."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        root = Path(override).expanduser()
    else:  # imported only here: with $DOCREAD_CACHE set, platformdirs need not be installed
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir(APP_NAME, appauthor=False))
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
