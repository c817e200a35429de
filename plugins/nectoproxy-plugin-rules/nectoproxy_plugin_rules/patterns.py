"""Text patterns used by the matchers: a glob, or a regular expression written as ``/.../``."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    """``*.example.test`` (a glob: the whole value must match, ``*`` crosses ``/``) or
    ``/^/api/v[12]/`` (a regular expression: found anywhere in the value, as ``re.search``).

    Use ``(?i)`` inside a regular expression to ignore case.
    """

    text: str
    compiled: re.Pattern[str]
    is_regex: bool

    @classmethod
    def parse(cls, text: str, *, ignore_case: bool = False) -> Pattern:
        """Compile ``text``; raises ValueError with a readable reason."""
        flags = re.IGNORECASE if ignore_case else 0
        if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
            try:
                return cls(text, re.compile(text[1:-1], flags), True)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {text!r}: {exc}") from None
        return cls(text, re.compile(fnmatch.translate(text), flags), False)

    def matches(self, value: str) -> bool:
        if self.is_regex:
            return self.compiled.search(value) is not None
        return self.compiled.match(value) is not None
