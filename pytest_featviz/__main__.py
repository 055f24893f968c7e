"""``python -m pytest_featviz``: the ``featviz`` command."""

from __future__ import annotations

import sys

from pytest_featviz.cli import main

sys.exit(main())
