"""The README's two quick-start commands, read from the README itself so CI cannot drift from it.

``python .ci/readme_commands.py`` prints two shell assignments, ``START_CMD=...`` (install and
start the proxy) and ``TEST_CMD=...`` (install the test dependencies and run the suite), for
``eval`` in ``.ci/run``. ``tests/test_packaging.py`` reads the test command the same way.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start(text: str) -> tuple[str, str]:
    """The (start, test) commands: the first two shell blocks under ``## Quick start``."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
    if section is None:
        raise SystemExit("README.md has no '## Quick start' section")
    blocks = [block.strip() for block in
              re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", section.group(1), re.DOTALL | re.MULTILINE)]
    if len(blocks) < 2 or any("\n" in block for block in blocks[:2]):
        raise SystemExit("README.md's quick start must have two one-line sh blocks")
    start, test = blocks[:2]
    if "pytest" not in test or "pytest" in start:
        raise SystemExit("README.md's quick start: the second command must be the test command")
    return start, test


def main() -> None:
    start, test = quick_start(README.read_text(encoding="utf-8"))
    sys.stdout.write(f"START_CMD={shlex.quote(start)}\nTEST_CMD={shlex.quote(test)}\n")


if __name__ == "__main__":
    main()
