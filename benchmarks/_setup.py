"""Lets the bench_*.py scripts import fastspline: the installed package, or else the
checkout they sit in; and says where they write results. Import it before fastspline:

    import _setup  # noqa: F401
    import fastspline
    from _setup import RESULTS_DIR
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# The scripts' default folder for their JSON: FASTSPLINE_BENCH_RESULTS (`fastspline bench
# --results` sets it), else results/ beside the scripts.
RESULTS_DIR = Path(os.environ.get("FASTSPLINE_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")

try:
    import fastspline  # noqa: F401
except ImportError:
    # Not installed: benchmark the checkout this folder sits in.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
