"""Triton kernels of fastspline, installed as ``fastspline.kernels``.

Only fastspline.ops reaches them, through the ``triton`` backend
(fastspline/backends/triton.py). Run on a GPU, or on the CPU with
``TRITON_INTERPRET=1`` set before triton is imported.

- ``common``: popcount (libdevice on GPU, SWAR interpreted), the distance tile,
  the GPU/interpreter switch and interpreter block sizes;
- ``layout``: pack_signs, unpack_bits, bit_transpose;
- ``distance``: row-wise popcount / hamming / hamming_total, hamming_cdist;
- ``search``: hamming_topk, hamming_radius (count and fill passes);
- ``regions``: row boundaries of sorted codes for count_regions;
- ``bitonic``: sorting networks for the top-k lists (min/max compare-and-swap);
- ``cross_compile``: builds every kernel and autotune config for sm_80/sm_90
  without a GPU (``python -m fastspline.kernels.cross_compile``).
"""
