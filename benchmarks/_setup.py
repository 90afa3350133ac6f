"""Lets the bench_*.py scripts import fastspline: the installed package, or else the
checkout they sit in. Import it before fastspline:

    import _setup  # noqa: F401
    import fastspline
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    import fastspline  # noqa: F401
except ImportError:
    # Not installed: benchmark the checkout this folder sits in.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
