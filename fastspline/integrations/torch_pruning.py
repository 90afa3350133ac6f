"""The spline redundancy score as a Torch-Pruning ``Importance``.

Torch-Pruning (``pip install torch-pruning``) traces arbitrary graphs (residual
adds, concatenations, ...) into *groups* of coupled channels and removes the
lowest-scoring channels of each group physically. :class:`SplineImportance`
scores a group's channels the spline way (PAPER.md §4): each channel's node code
is the sign pattern of its pre-activation over probe inputs x positions — the
output of every BatchNorm in the group (the paper's hook), or of the group's
conv/linear layers when it has no BatchNorm; coupled layers' codes are
concatenated. The closest pair by redundancy distance (``min(d, 1 - d)`` with
``complement``) loses its less important channel (|gamma| summed over the
group's BatchNorms, else the filters' L2 norm), repeatedly
(:func:`fastspline.pruning.spline_order`). A channel's score is the normalised
distance at which it was removed, plus ``rank / (2 n L)`` so equal distances
keep the greedy's order; the last channel left scores above every other. Lower
scores are pruned first, so ``pruning_ratio`` cuts the most redundant channels,
and with ``global_pruning=True`` the distances compare across groups.

Only the scores come from fastspline: Torch-Pruning removes the channels,
without merge compensation (use :mod:`fastspline.pruning` for merges on
:mod:`fastspline.models`); re-estimate BatchNorm statistics afterwards with
:func:`fastspline.pruning.recalibrate_bn`.

Example::

    imp = SplineImportance(model, probe_x)
    pruner = tp.pruner.MetaPruner(model, example_inputs=probe_x[:1], importance=imp,
                                  pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

try:
    import torch_pruning as tp
    from torch_pruning.pruner import function as tp_function
except ImportError as exc:  # the optional dependency is missing: say how to get it
    raise ImportError(
        "fastspline.integrations.torch_pruning needs Torch-Pruning: pip install 'fastspline[prune]' (or torch-pruning)"
    ) from exc

from fastspline import backends
from fastspline.codes import codes as region_codes
from fastspline.pruning import _complement, _whole_inputs, spline_order

__all__ = ["SplineImportance"]

_NORMS = (nn.modules.batchnorm._BatchNorm,)
_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)


class SplineImportance(tp.importance.Importance):
    """Spline redundancy scores for Torch-Pruning groups (see the module doc).

    Args:
        model: the model being pruned (the one given to the pruner).
        probe: probe inputs (a tensor, an ``(x, y)`` pair or a DataLoader, as
            :func:`fastspline.codes`).
        complement: treat a channel and its mirror (complement code) as redundant.
        neighbours: neighbour-list length of the greedy (speed only).
        batch_size, backend: as :func:`fastspline.codes`.

    Codes of every BatchNorm, conv and linear output are computed in one pass
    over the probe when first needed and again whenever a parameter or buffer of
    the model changed (a pruning step, training, ``recalibrate_bn``, a loaded state).
    When some layer cannot be coded (its output has no batch dim, or not every input
    reaches it), each group's layers are coded on their own instead. A module called
    several times per forward has the positions of every call in its codes.
    """

    def __init__(
        self,
        model: nn.Module,
        probe: Any,
        *,
        complement: bool = True,
        neighbours: int = 16,
        batch_size: int = 256,
        backend: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"SplineImportance: model must be an nn.Module, got {type(model).__name__}")
        if probe is None:
            raise ValueError("SplineImportance: probe is None; give probe inputs")
        # What codes() would refuse at the first pruning step, refused here instead.
        if isinstance(probe, (str, bytes, dict)) or not isinstance(probe, (torch.Tensor, Iterable)):
            raise TypeError(
                "SplineImportance: probe must be a tensor, an (x, y) pair, a DataLoader or an iterable of batches, "
                f"got {type(probe).__name__}"
            )
        if isinstance(probe, torch.Tensor) and (probe.dim() == 0 or probe.shape[0] == 0):
            raise ValueError(f"SplineImportance: probe must hold at least one input, got shape {tuple(probe.shape)}")
        if isinstance(probe, (tuple, list)) and (not probe or (isinstance(probe[0], torch.Tensor) and probe[0].numel() == 0)):
            raise ValueError("SplineImportance: probe is empty")
        if not isinstance(complement, bool):
            raise TypeError(f"SplineImportance: complement must be a bool, got {type(complement).__name__}")
        if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1:
            raise ValueError(f"SplineImportance: neighbours must be an int >= 1, got {neighbours!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"SplineImportance: batch_size must be an int >= 1, got {batch_size!r}")
        if backend is not None and backend not in backends.names():
            raise ValueError(f"SplineImportance: backend must be None or one of {backends.names()}, got {backend!r}")
        self.model = model
        self.probe = _whole_inputs(probe)  # an (x, y) pair of whole tensors: its inputs, as pruning.plan takes it
        if isinstance(self.probe, Iterator):  # a generator: kept, as the codes are made again after each change
            self.probe = list(self.probe)
            if not self.probe:
                raise ValueError("SplineImportance: probe is empty")
        self.complement = complement
        self.neighbours = neighbours
        self.batch_size = batch_size
        self.backend = backend
        self._codes: dict[int, tuple[torch.Tensor, int, int]] = {}
        self._state: tuple | None = None
        self._all_coded = False  # whether one pass coded every layer (else: only the groups' layers)

    def _state_key(self) -> tuple:
        # Shape, storage and in-place version of every tensor the forward pass reads:
        # pruning changes shapes, training and load_state_dict write in place.
        tensors = (*self.model.parameters(), *self.model.buffers())
        return tuple((tuple(t.shape), t.data_ptr(), t._version) for t in tensors)

    def _node_codes(self, module: nn.Module, sources: list[nn.Module]) -> tuple[torch.Tensor, int, int]:
        """(unit-major codes [C, P * ceil(N/64)], bits N*P, N) of ``module``'s output; a module
        called several times in one forward has the positions of every call."""
        key = self._state_key()
        if key != self._state:
            self._codes, self._state, self._all_coded = {}, key, False
            try:
                self._code(None)
                self._all_coded = True
            except ValueError:
                pass  # a layer the probe cannot code (output not batched, not every input reaches it)
        if not self._all_coded and id(module) not in self._codes:
            self._code(sources)  # this group's layers only: an error now names one of them
        if id(module) not in self._codes:
            raise ValueError(f"SplineImportance: {type(module).__name__} was not reached by the probe's forward pass")
        return self._codes[id(module)]

    def _code(self, modules: list[nn.Module] | None) -> None:
        """Codes of ``modules`` (None: every BatchNorm, conv and linear) in one pass, into the cache."""
        named = {name: m for name, m in self.model.named_modules() if isinstance(m, _NORMS + _LINEAR)}
        if modules is not None:
            wanted = {id(m) for m in modules}
            named = {name: m for name, m in named.items() if id(m) in wanted and id(m) not in self._codes}
        if not named:
            return
        rc = region_codes(self.model, self.probe, layers=list(named), progress=False,
                          batch_size=self.batch_size, backend=self.backend)  # fmt: skip
        for name, m in named.items():
            calls, call = [], name
            while call in rc:  # a shared module's calls: name, name#1, name#2, ...
                calls.append(call)
                call = f"{name}#{len(calls)}"
            parts = []
            for call in calls:
                layer = rc[call]
                if isinstance(m, nn.Linear) and len(layer.unit_shape) > 1:
                    # A linear layer's channels are its output's last dim (x [N, *, in]), the rest positions.
                    units = rc.unit_major(call, per_channel=False, backend=self.backend)  # unit = position * C + c
                    channels = layer.unit_shape[-1]
                    words = units.reshape(-1, channels, units.shape[1]).transpose(0, 1).reshape(channels, -1)
                else:
                    words = rc.unit_major(call, backend=self.backend)
                parts.append((words.cpu(), layer.n_units // words.shape[0]))
            if parts:
                words = torch.cat([w for w, _ in parts], dim=1).contiguous()
                positions = sum(p for _, p in parts)
                self._codes[id(m)] = (words, rc.n_samples * positions, rc.n_samples)

    @torch.no_grad()
    def __call__(self, group: Any, **kwargs: Any) -> torch.Tensor | None:
        n = len(group[0].idxs)
        norms, linears = [], []
        for i, (dep, idxs) in enumerate(group):
            module, handler = dep.target.module, dep.handler
            roots = group[i].root_idxs
            if any(r is None for r in roots) or len(roots) != len(idxs):
                continue
            if handler == tp_function.prune_batchnorm_out_channels and isinstance(module, _NORMS):
                norms.append((module, list(idxs), list(roots)))
            elif handler in (tp_function.prune_conv_out_channels, tp_function.prune_linear_out_channels) and isinstance(
                module, _LINEAR
            ):
                linears.append((module, list(idxs), list(roots)))
        sources = norms or linears
        if not sources:
            return None  # nothing to code: Torch-Pruning skips the group
        rows, comps, bits = [], [], 0
        importance = torch.zeros(n, dtype=torch.float64)
        modules = [m for m, _, _ in sources]
        for module, idxs, roots in sources:
            words, n_bits, n_samples = self._node_codes(module, modules)
            placed = torch.zeros(n, words.shape[1], dtype=torch.int64)
            placed[roots] = words[idxs]
            rows.append(placed)
            comps.append(_complement(placed, n_samples, n_bits // n_samples))
            bits += n_bits
            if isinstance(module, _NORMS):
                if module.weight is not None:
                    importance[roots] += module.weight.detach().abs().cpu().double()[idxs]
                else:  # affine=False: gamma is 1 for every channel
                    importance[roots] += 1.0
            else:
                weight = module.weight.detach()
                if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
                    # [in, out / groups, *k]: each output channel's filter, [out, in / groups * k].
                    groups = module.groups
                    weight = weight.reshape(groups, -1, *weight.shape[1:]).transpose(1, 2).reshape(module.out_channels, -1)
                importance[roots] += weight.flatten(1).norm(dim=1).cpu().double()[idxs]
        codes = torch.cat(rows, dim=1).contiguous()
        complement = torch.cat(comps, dim=1).contiguous()
        scores = torch.full((n,), 1.0 + 1.0 / bits, dtype=torch.float64)
        steps = spline_order(
            codes, bits, importance.numpy(), floor=1, complement=self.complement,
            neighbours=self.neighbours, complement_codes=complement,
        )  # fmt: skip
        for rank, (victim, _, distance, _) in enumerate(steps):
            scores[victim] = distance / bits + rank / (2.0 * n * bits)
        return scores
