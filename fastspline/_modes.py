"""Switch a model to eval mode and put every submodule's own mode back (codes, training, pruning).

``model.eval()`` walks the module tree in Python and sets each flag through
``nn.Module.__setattr__``: about 14 us for a 9-module MLP, and as much again to
restore, a fifth of ``codes()``' fixed cost per call (measured during development).
When no module overrides ``train``/``eval`` (on its class or the instance) or
``__setattr__``, the flags are set directly (the same effect); otherwise ``model.eval()``
and ``setattr`` run as usual.
"""
from __future__ import annotations

from collections.abc import Iterable

from torch import nn

_set_flag = object.__setattr__


def training_modes(model: nn.Module, modules: Iterable[nn.Module] | None = None) -> list[tuple[nn.Module, bool]]:
    """Each submodule (``model`` included) with its ``training`` flag, to restore later;
    ``modules``: ``model.modules()`` when the caller has already listed them."""
    return [(module, module.training) for module in (model.modules() if modules is None else modules)]


def _plain(module: nn.Module) -> bool:
    """No train/eval override (on the class or the instance) and no own __setattr__."""
    kind = type(module)
    return (
        kind.train is nn.Module.train
        and kind.eval is nn.Module.eval
        and kind.__setattr__ is nn.Module.__setattr__
        and "train" not in module.__dict__
        and "eval" not in module.__dict__
    )


def set_eval(model: nn.Module, modes: list[tuple[nn.Module, bool]]) -> None:
    """``model.eval()``; ``modes`` from :func:`training_modes` lists its modules."""
    if not all(_plain(module) for module, _ in modes):
        model.eval()
        return
    for module, training in modes:
        if training:
            _set_flag(module, "training", False)


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Put back the flags :func:`training_modes` recorded (an own ``__setattr__`` sees every write)."""
    for module, training in modes:
        if type(module).__setattr__ is not nn.Module.__setattr__:
            module.training = training
        elif module.training != training:
            _set_flag(module, "training", training)
