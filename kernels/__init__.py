"""Triton kernels of fastspline, installed as ``fastspline.kernels``.

Only fastspline.ops reaches them, through the ``triton`` backend. Run on a GPU,
or on the CPU with ``TRITON_INTERPRET=1`` set before triton is imported.
"""
