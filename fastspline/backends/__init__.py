"""Backend registry: one place that knows which kernel implementations exist.

A backend is a module exposing the op functions of :mod:`fastspline.backends.reference`
with the same signatures, plus ``NAME`` and ``DEVICE_TYPES`` (a tuple of
torch device types it runs on, or ``None`` for any). Backends are imported
lazily, only when first used, and an import failure is remembered with its
reason so that it is reported once and clearly. Only :mod:`fastspline.ops`
calls into backends.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from types import ModuleType

import torch

logger = logging.getLogger("fastspline")

# name -> module path; order is the preference order within a device type.
_MODULES: dict[str, str] = {
    "cpu": "fastspline.backends.cpu",
    "cuda": "fastspline.backends.cuda",
    "reference": "fastspline.backends.reference",
    "triton": "fastspline.backends.triton",
}
# device type -> the backend tried first for it (others fall back to the reference).
_DEVICE_DEFAULT: dict[str, str] = {"cpu": "cpu", "cuda": "cuda"}
_loaded: dict[str, ModuleType] = {}
_failed: dict[str, str] = {}
_warned: set[str] = set()


def names() -> list[str]:
    """Every backend fastspline knows, available or not."""
    return list(_MODULES)


def load(name: str) -> ModuleType:
    """The backend module ``name``; raises RuntimeError saying why it cannot load."""
    if name not in _MODULES:
        raise ValueError(f"backend must be one of {names()}, got {name!r}")
    if name in _loaded:
        return _loaded[name]
    if name in _failed:
        raise RuntimeError(f"fastspline backend {name!r} is not available: {_failed[name]}")
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:  # the compiled extension is missing or unloadable
        _failed[name] = f"{type(exc).__name__}: {exc}"
        raise RuntimeError(f"fastspline backend {name!r} is not available: {_failed[name]}") from exc
    except ValueError as exc:  # it loads but refuses a setting (FASTSPLINE_ISA=...): an error, never a fallback
        raise ValueError(f"fastspline backend {name!r} refused its environment settings: {exc}") from exc
    _loaded[name] = module
    return module


def available() -> dict[str, str | None]:
    """Map each backend to None when it loads, else to the reason it does not."""
    out: dict[str, str | None] = {}
    for name in _MODULES:
        try:
            load(name)
            out[name] = None
        except RuntimeError:
            out[name] = _failed[name]
        except ValueError as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


def plain_cpu(t: object) -> bool:
    """A dense, not lazily negated, plain ``torch.Tensor`` (no subclass: no FakeTensor) on the
    CPU with memory behind it (not autograd's zero tensor): what the cpu backend's unchecked
    fast paths (``ops``) may read as raw memory."""
    return (
        type(t) is torch.Tensor and t.is_cpu and t.layout is torch.strided and not t.is_nested and not t.is_neg()
        and not t._is_zerotensor()
    )


def supports(module: ModuleType, device_type: str) -> bool:
    return module.DEVICE_TYPES is None or device_type in module.DEVICE_TYPES


def select(device_type: str) -> str:
    """The backend used for tensors on ``device_type`` when the caller names none."""
    preferred = _DEVICE_DEFAULT.get(device_type)
    if preferred is not None:
        try:
            load(preferred)
            return preferred
        except RuntimeError:
            if preferred not in _warned:
                _warned.add(preferred)
                message = (
                    f"fastspline: backend {preferred!r} is not available ({_failed[preferred]}); "
                    f"using the pure-torch 'reference' backend for {device_type} tensors (correct, slow)"
                )
                logger.warning(message)
                warnings.warn(message, RuntimeWarning, stacklevel=_user_stacklevel())
    return "reference"


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside fastspline, for the caller of this
    function (Python 3.11 has no ``skip_file_prefixes``)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
