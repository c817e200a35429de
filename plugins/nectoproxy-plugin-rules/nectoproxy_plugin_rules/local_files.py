"""map_local: which file a request path names, never anything outside the mapped folder."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from nectoproxy_plugin_rules.model import MapLocal


def find_local_file(local: MapLocal, pathname: str) -> Path | None:
    """The file to serve for ``pathname`` (the request path without its query), or None.

    The path is percent-decoded (so ``%2e%2e`` is ``..``), ``strip_prefix`` is removed, and
    the result is resolved (``..``, symbolic links) before it is checked to lie inside the
    folder: anything that ends up outside is not found, whichever way it was spelled.
    """
    if not local.is_dir:
        return local.root if local.root.is_file() else None
    relative = unquote(pathname, errors="replace")
    if local.strip_prefix and relative.startswith(local.strip_prefix):
        relative = relative[len(local.strip_prefix):]
    if "\x00" in relative:
        return None
    try:
        candidate = (local.root / relative.lstrip("/")).resolve()
        if candidate.is_dir():
            candidate = (candidate / local.index).resolve()
    except (OSError, ValueError, RuntimeError):  # bad names, symlink loops
        return None
    if not candidate.is_relative_to(local.root) or not candidate.is_file():
        return None
    return candidate
