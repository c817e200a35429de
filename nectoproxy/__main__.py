"""``python -m nectoproxy``: the same as the ``nectoproxy`` command."""

from __future__ import annotations

import sys

from nectoproxy.cli import main

sys.exit(main())
