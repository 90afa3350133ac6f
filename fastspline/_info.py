"""What was built and what runs: compiler, instruction set, CUDA."""
from __future__ import annotations

from typing import Any


def build_info() -> dict[str, Any]:
    """Describe the compiled extensions.

    Keys: ``cpu_extension`` (bool), ``compiler``, ``openmp``, ``isa`` (in use),
    ``supported_isas``, ``cuda_built`` (bool), ``cuda`` (details or the reason
    it is missing), ``backends`` (name -> None if loadable, else why not).
    """
    from fastspline import backends

    info: dict[str, Any] = {"backends": backends.available()}
    try:
        from fastspline import _C
    except ImportError as exc:
        info.update(cpu_extension=False, cpu_error=str(exc), compiler=None, openmp=None, isa=None, supported_isas=[])
    else:
        info.update(cpu_extension=True, **_C.build_info(), isa=_C.isa(), supported_isas=list(_C.supported_isas()))
    try:
        from fastspline import _cuda
    except ImportError as exc:
        info.update(cuda_built=False, cuda=f"not built: {exc}")
    else:
        info.update(cuda_built=True, cuda=_cuda.build_info())
    return info
