"""Adapters that plug fastspline's spline scores into other pruning libraries.

- :mod:`fastspline.integrations.torch_pruning`: :class:`SplineImportance`, a
  Torch-Pruning ``Importance`` (needs the ``prune`` extra: ``pip install fastspline[prune]``).
"""
