"""Host name patterns, as every host list in the configuration takes them."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """Whether ``host`` matches one of ``patterns``: exact names (case-insensitive),
    ``*.example.com`` (the name itself and any subdomain) and shell globs."""
    host = host.lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern.startswith("*.") and (host.endswith(pattern[1:]) or host == pattern[2:]):
            return True
        if host == pattern or fnmatch.fnmatchcase(host, pattern):
            return True
    return False
