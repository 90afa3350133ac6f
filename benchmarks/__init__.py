"""The benchmark scripts, installed as ``fastspline.benchmarks`` so that ``fastspline bench
NAME`` can run them; each is a plain script (``python benchmarks/bench_ops.py --quick``)."""
