"""Plots of the spline view: 2-D partitions, canvases, early-bird distances, pruning.

Every function builds a ``matplotlib.figure.Figure`` (no pyplot: no global
state, no backend switch; PNGs are rendered by Agg), returns it, and writes a
PNG when given ``path=`` (atomically: a temporary file renamed over it).
Needs matplotlib (``pip install fastspline[viz]``).

- :func:`partition_2d`: a model with 2-D inputs on a dense grid. Regions are
  coloured by their whole-network code (:func:`fastspline.codes.codes` +
  :func:`fastspline.ops.count_regions`); each unit's zero set is drawn where its
  bit flips between grid points (earlier layers grey, the newest dark, as in
  PAPER.md §1); the decision boundary is the zero set of the logit differences.
  The title gives the number of regions the grid visits.
- :func:`canvas_contours`: the paper's canvas view for CNNs: zero sets of chosen
  channels (at one spatial position) over the plane ``a * img0 + b * img1``,
  over the decision regions.
- :func:`earlybird_heatmap`: the epoch x epoch partition distances with the EB
  epoch marked; :func:`training_curves`: accuracy, EB distance and cumulative
  training FLOPs per epoch.
- :func:`pruning_report`: kept and removed units per layer of a
  :class:`fastspline.pruning.PrunePlan`, and before/after partitions for 2-D models.
- :func:`write_run_plots`: the PNGs of a run folder (what ``fastspline run`` and
  ``fastspline plot`` write).

Zero sets and regions come from the packed codes, so they are exact at the grid
points and drawn to the grid's resolution (a line is placed between two grid
points whose bits differ).
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fastspline import ops
from fastspline._files import atomic_write, load_torch_archive, read_json_object
from fastspline.codes import RegionCodes, codes, _uncompiled

if TYPE_CHECKING:  # matplotlib is an optional dependency, imported when a plot is made
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "partition_2d",
    "canvas_contours",
    "earlybird_heatmap",
    "training_curves",
    "pruning_report",
    "write_run_plots",
    "grid_2d",
    "read_history",
    "load_model",
    "takes_points",
    "labelled_canvas_pair",
]

DECISION_COLOUR = "#d62728"  # red: the decision boundary, in every plot
EB_COLOUR = "#ff7f0e"  # orange: the early-bird epoch
_DPI = 130


# ---------------------------------------------------------------- shared helpers


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("fastspline.viz needs matplotlib: pip install matplotlib (or fastspline[viz])") from exc
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path: str | os.PathLike | None, dpi: int, where: str) -> None:
    if path is None:
        return
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{where}: path must be a str or os.PathLike, got {type(path).__name__}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 1200:
        raise ValueError(f"{where}: dpi must be an int in [10, 1200], got {dpi!r}")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def _check_int(value: object, name: str, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{where}: {name} must be in [{low}, {high}], got {value}")
    return int(value)


def _check_model(model: object, where: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where}: model must be an nn.Module, got {type(model).__name__}")
    return model


def _check_title(title: object, where: str) -> str | None:
    if title is not None and not isinstance(title, str):
        raise TypeError(f"{where}: title must be a str or None, got {type(title).__name__}")
    return title


def _codes_and_logits(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[str | nn.Module] | None,
    *,
    device: torch.device | str | None,
    backend: str | None,
    batch_size: int,
    where: str,
) -> tuple[RegionCodes, torch.Tensor]:
    """Codes of ``inputs`` and the model's outputs ``[N, classes]`` from the same
    forward passes (a hook on the model keeps each batch's output)."""
    outputs: list[torch.Tensor] = []

    def keep(module: nn.Module, args: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{where}: model must return logits [N, classes], got {got}")
        outputs.append(out.detach().float().cpu())

    # The grid or canvas in the model's float dtype (they are built in float32).
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None and inputs.is_floating_point():
        inputs = inputs.to(dtype)
    handle = _uncompiled(model).register_forward_hook(keep)  # the module codes() runs
    try:
        rc = codes(model, inputs, layers, device=device, backend=backend, batch_size=batch_size, progress=False)
    except RuntimeError as exc:  # the model's own shape checks
        raise ValueError(
            f"{where}: {type(model).__name__} could not run on inputs of shape {tuple(inputs.shape[1:])}: {exc}"
        ) from exc
    finally:
        handle.remove()
    return rc, torch.cat(outputs)


def _decision_fields(logits: torch.Tensor) -> list[np.ndarray]:
    """Fields whose zero sets are the decision boundary: the logit of a single-output
    model, the logit difference of two classes, else each class's margin over the others."""
    values = logits.numpy()
    if values.shape[1] == 1:
        return [values[:, 0]]
    if values.shape[1] == 2:
        return [values[:, 1] - values[:, 0]]
    fields = []
    for c in range(values.shape[1]):
        others = np.delete(values, c, axis=1).max(axis=1)
        fields.append(values[:, c] - others)
    return fields


def _changes_sign(field: np.ndarray) -> bool:
    return bool(field.min() < 0 < field.max())


def _draw_decision_boundary(ax: Axes, xs: np.ndarray, ys: np.ndarray, logits: torch.Tensor, handles: list) -> None:
    """Draw the decision boundary on the ``len(ys) x len(xs)`` grid; add its legend
    entry only when some part of it is in view."""
    shown = [f for f in _decision_fields(logits) if _changes_sign(f)]
    for field in shown:
        ax.contour(xs, ys, field.reshape(len(ys), len(xs)), levels=[0.0], colors=[DECISION_COLOUR], linewidths=2.0)
    if shown:
        handles.append(_line_handle(DECISION_COLOUR, 2.0, "decision boundary"))


def _layer_greys(n_layers: int) -> list[str]:
    """Line colours of layers in forward order: earlier layers light grey, the newest near black."""
    if n_layers == 1:
        return ["0.1"]
    return [f"{0.5 - 0.45 * i / (n_layers - 1):.2f}" for i in range(n_layers)]


def _region_colours(n: int, seed: int = 0) -> np.ndarray:
    """``n`` light random colours (float RGB ``[n, 3]``): neighbouring regions differ,
    and dark lines stay readable on every one of them."""
    from matplotlib.colors import hsv_to_rgb

    rng = np.random.default_rng(seed)
    hsv = np.stack([rng.uniform(0.0, 1.0, n), rng.uniform(0.1, 0.32, n), rng.uniform(0.9, 1.0, n)], axis=1)
    return hsv_to_rgb(hsv)


def _draw_zero_sets(ax: Axes, xs: np.ndarray, ys: np.ndarray, bits: np.ndarray, colour: str, width: float) -> int:
    """Contour at 0.5 of each unit's bit image ``bits [ny, nx, units]`` (uint8); returns the units drawn."""
    drawn = 0
    for u in range(bits.shape[2]):
        image = bits[:, :, u]
        if image.min() == image.max():  # the unit's zero set misses the grid
            continue
        ax.contour(xs, ys, image.astype(np.float32), levels=[0.5], colors=[colour], linewidths=width)
        drawn += 1
    return drawn


def _line_handle(colour: str, width: float, label: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, linewidth=width, label=label)


# ---------------------------------------------------------------- 2-D partitions


def _check_bounds(bounds: object, where: str) -> tuple[float, float, float, float]:
    if isinstance(bounds, numbers.Real) and not isinstance(bounds, bool):
        bounds = (-bounds, bounds, -bounds, bounds)
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 4:
        raise ValueError(f"{where}: bounds must be (xmin, xmax, ymin, ymax) or a number r for [-r, r]^2, got {bounds!r}")
    values = []
    for v in bounds:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{where}: bounds must hold finite numbers, got {bounds!r}")
        values.append(float(v))
    xmin, xmax, ymin, ymax = values
    if not (xmin < xmax and ymin < ymax):
        raise ValueError(f"{where}: bounds need xmin < xmax and ymin < ymax, got {tuple(values)}")
    return xmin, xmax, ymin, ymax


def grid_2d(
    bounds: float | Sequence[float] = 5.0, resolution: int = 512
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The grid :func:`partition_2d` codes: ``(points, xs, ys)``.

    ``xs = linspace(xmin, xmax, resolution)``, ``ys`` likewise; ``points`` is float32
    ``[resolution**2, 2]`` with row ``i * resolution + j`` = ``(xs[j], ys[i])``.
    ``bounds``: ``(xmin, xmax, ymin, ymax)``, or ``r`` for ``[-r, r]^2``.
    """
    xmin, xmax, ymin, ymax = _check_bounds(bounds, "grid_2d")
    resolution = _check_int(resolution, "resolution", 2, 8192, "grid_2d")
    xs = torch.linspace(xmin, xmax, resolution, dtype=torch.float32)
    ys = torch.linspace(ymin, ymax, resolution, dtype=torch.float32)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1), xs, ys


def _scatter_data(ax: Axes, data: Any, where: str) -> None:
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors[:2]
    if isinstance(data, torch.Tensor):
        x, y = data, None
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    else:
        raise TypeError(f"{where}: data must be points [N, 2], an (x, y) pair of tensors or a TensorDataset, got {type(data).__name__}")
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"{where}: data points must have shape [N, 2], got {tuple(x.shape)}")
    points = x.detach().float().cpu().numpy()
    if y is None:
        ax.scatter(points[:, 0], points[:, 1], s=3, c="k", alpha=0.5, linewidths=0)
        return
    labels = y.detach().cpu().numpy()
    if labels.shape != (len(points),):
        raise ValueError(f"{where}: data labels must have shape [{len(points)}], got {tuple(labels.shape)}")
    ax.scatter(points[:, 0], points[:, 1], s=3, c=labels % 10, cmap="tab10", vmin=0, vmax=9, alpha=0.55, linewidths=0)


def _draw_partition(
    ax: Axes,
    model: nn.Module,
    bounds: tuple[float, float, float, float],
    resolution: int,
    *,
    layers: Sequence[str | nn.Module] | None,
    data: Any,
    device: torch.device | str | None,
    backend: str | None,
    batch_size: int,
    legend: bool,
    where: str,
) -> int:
    """Draw the partition of ``model`` on ``ax``; return the number of regions."""
    points, xs, ys = grid_2d(bounds, resolution)
    rc, logits = _codes_and_logits(model, points, layers, device=device, backend=backend, batch_size=batch_size, where=where)
    _, inverse, counts = ops.count_regions(rc.concatenated(), backend=backend)
    n_regions = int(counts.numel())
    image = _region_colours(n_regions)[inverse.numpy()].reshape(resolution, resolution, 3)
    xmin, xmax, ymin, ymax = bounds
    dx, dy = (xmax - xmin) / (resolution - 1), (ymax - ymin) / (resolution - 1)
    # Pixel centres on the grid points.
    ax.imshow(image, origin="lower", extent=(xmin - dx / 2, xmax + dx / 2, ymin - dy / 2, ymax + dy / 2), interpolation="nearest")
    x_np, y_np = xs.numpy(), ys.numpy()
    handles = []
    names = rc.names
    for name, colour in zip(names, _layer_greys(len(names))):
        layer = rc[name]
        bits = ops.unpack_bits(layer.words, layer.n_units, backend=backend).numpy().view(np.uint8)
        newest = name == names[-1]
        width = 1.1 if newest else 0.9
        drawn = _draw_zero_sets(ax, x_np, y_np, bits.reshape(resolution, resolution, layer.n_units), colour, width)
        handles.append(_line_handle(colour, width, f"{name} ({drawn}/{layer.n_units} units)"))
    _draw_decision_boundary(ax, x_np, y_np, logits, handles)
    if data is not None:
        _scatter_data(ax, data, where)
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect("equal")
    if legend:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8, frameon=False)
    return n_regions


def partition_2d(
    model: nn.Module,
    bounds: float | Sequence[float] = 5.0,
    resolution: int = 512,
    *,
    layers: Sequence[str | nn.Module] | None = None,
    data: Any = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = _DPI,
    device: torch.device | str | None = None,
    backend: str | None = None,
    batch_size: int = 65536,
) -> Figure:
    """The input-space partition of a model with 2-D inputs.

    Args:
        model: any ``nn.Module`` mapping ``[N, 2]`` to logits ``[N, classes]``.
        bounds: ``(xmin, xmax, ymin, ymax)``, or ``r`` for ``[-r, r]^2`` (the X task: 5).
        resolution: grid points per side (the grid of :func:`grid_2d`).
        layers: passed to :func:`fastspline.codes.codes` (default every ReLU-like layer).
        data: optional points to scatter: ``[N, 2]``, ``(x, y)`` or a TensorDataset.
        title: text put before the region count in the title.
        path: write the PNG there.
        dpi: resolution of the PNG.
        device, backend, batch_size: passed to ``codes``.

    Returns:
        the Figure. Its title ends with ``"<R> regions on a <n>x<n> grid"``, R the
        number of distinct whole-network codes on the grid
        (``count_regions`` of the concatenated codes of every layer).
    """
    where = "partition_2d"
    model = _check_model(model, where)
    box = _check_bounds(bounds, where)
    resolution = _check_int(resolution, "resolution", 2, 8192, where)
    title = _check_title(title, where)
    fig = _figure(6.0, 6.6)
    ax = fig.add_subplot()
    n_regions = _draw_partition(
        ax, model, box, resolution, layers=layers, data=data, device=device, backend=backend,
        batch_size=batch_size, legend=True, where=where,
    )
    ax.set_title(f"{title + ': ' if title else ''}{n_regions} regions on a {resolution}×{resolution} grid", fontsize=11)
    _save(fig, path, dpi, where)
    return fig


# ---------------------------------------------------------------- canvas


def _pick_layers(rc: RegionCodes, layers: Sequence[str | int] | None, where: str) -> list[str]:
    """Names of ``rc`` chosen by name or index (negative indices count from the end)."""
    if layers is None:
        return rc.names
    if isinstance(layers, (str, int)) and not isinstance(layers, bool):
        layers = [layers]
    if not isinstance(layers, Sequence):
        raise TypeError(f"{where}: layers must be None or a sequence of layer names or indices, got {type(layers).__name__}")
    names = rc.names
    chosen: list[str] = []
    for item in layers:
        if isinstance(item, str):
            if item not in rc:
                raise ValueError(f"{where}: layers names {item!r}, which is not a coded layer; layers are {names}")
            chosen.append(item)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not -len(names) <= item < len(names):
                raise ValueError(f"{where}: layer index {item} is out of range for {len(names)} layers {names}")
            chosen.append(names[int(item)])
        else:
            raise TypeError(f"{where}: layers must hold layer names or indices, got {type(item).__name__} {item!r}")
    if not chosen:
        raise ValueError(f"{where}: layers is empty; pass None for every layer")
    return list(dict.fromkeys(chosen))


def _position_index(unit_shape: tuple[int, ...], position: str | Sequence[int], where: str) -> int:
    """Flat offset of one spatial position inside a channel (0 for layers without spatial dims)."""
    spatial = unit_shape[1:]
    if not spatial:
        return 0
    if position == "center":
        coords = [s // 2 for s in spatial]
    elif isinstance(position, Sequence) and not isinstance(position, str) and len(position) == len(spatial):
        coords = []
        for p, s in zip(position, spatial):
            if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p < s:
                raise ValueError(f"{where}: position {tuple(position)} is outside the spatial shape {spatial}")
            coords.append(int(p))
    else:
        raise ValueError(f"{where}: position must be 'center' or {len(spatial)} ints for spatial shape {spatial}, got {position!r}")
    return int(np.ravel_multi_index(coords, spatial))


def canvas_contours(
    model: nn.Module,
    img0: torch.Tensor,
    img1: torch.Tensor,
    layers: Sequence[str | int] | None = None,
    *,
    n: int = 100,
    channels: int | Sequence[int] = 4,
    position: str | Sequence[int] = "center",
    labels: tuple[Any, Any] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = _DPI,
    device: torch.device | str | None = None,
    backend: str | None = None,
    batch_size: int = 1024,
) -> Figure:
    """The paper's canvas view: the plane ``x(a, b) = a * img0 + b * img1``,
    ``a, b`` in [0, 1] (:func:`fastspline.data.canvas`), coloured by the predicted
    class, with the zero sets of chosen channels and the decision boundary.

    Args:
        model: a classifier taking inputs shaped like ``img0``.
        img0, img1: two inputs of the same shape (e.g. :func:`fastspline.data.canvas_pair`).
        layers: which coded layers to draw, by name or index in forward order
            (default every layer found by :func:`fastspline.codes.codes`).
        n: canvas points per side (``n * n`` forward passes).
        channels: per layer, an int k (the first k channels whose zero set crosses
            the canvas) or the channel indices to draw.
        position: the spatial position of a conv channel whose sign is drawn:
            ``"center"`` or one index per spatial dim (the official code draws
            chosen (channel, row, column) units the same way).
        labels: the classes of ``img0`` and ``img1``, shown at their corners.
        title: text put before the region count in the title.
        path, dpi: write the PNG.
        device, backend, batch_size: passed to ``codes``.

    Returns:
        the Figure; its title gives the number of distinct whole-network codes on the canvas.
    """
    from fastspline.data import canvas

    where = "canvas_contours"
    model = _check_model(model, where)
    n = _check_int(n, "n", 2, 2048, where)
    title = _check_title(title, where)
    if not isinstance(img0, torch.Tensor) or not isinstance(img1, torch.Tensor):
        raise TypeError(f"{where}: img0 and img1 must be tensors, got {type(img0).__name__}, {type(img1).__name__}")
    if img0.shape != img1.shape or not img0.is_floating_point():
        raise ValueError(
            f"{where}: img0 and img1 must be floating tensors of one shape, got {img0.dtype} {tuple(img0.shape)} "
            f"and {img1.dtype} {tuple(img1.shape)}"
        )
    if labels is not None and (not isinstance(labels, (tuple, list)) or len(labels) != 2):
        raise ValueError(f"{where}: labels must be a pair (label of img0, label of img1), got {labels!r}")
    probe = canvas(img0.detach().float().cpu(), img1.detach().float().cpu(), n)
    rc, logits = _codes_and_logits(model, probe, None, device=device, backend=backend, batch_size=batch_size, where=where)
    names = _pick_layers(rc, layers, where)
    n_regions = rc.count_regions(backend=backend)

    fig = _figure(6.4, 6.6)
    ax = fig.add_subplot()
    steps = np.linspace(0.0, 1.0, n)
    half = 0.5 / (n - 1)
    # One output: class 1 where the logit is positive (the decision field of _decision_fields).
    predicted = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)
    predicted = predicted.numpy().reshape(n, n)
    from matplotlib.colors import ListedColormap, to_rgb

    palette = [f"C{i}" for i in range(10) if i != 3]  # C3 is red, the decision boundary's colour
    class_colours = np.array([to_rgb(palette[c % len(palette)]) for c in range(max(logits.shape[1], 2))])
    light = 1.0 - 0.3 * (1.0 - class_colours)  # pale class colours under the lines
    ax.imshow(
        predicted, origin="lower", extent=(-half, 1 + half, -half, 1 + half), interpolation="nearest",
        cmap=ListedColormap(light), vmin=-0.5, vmax=len(light) - 0.5,
    )
    handles = []
    from matplotlib.patches import Patch

    for c in sorted(set(predicted.flatten().tolist())):
        handles.append(Patch(facecolor=light[c], edgecolor="0.6", label=f"predicted class {c}"))
    layer_colours = [f"C{i % 10}" for i in range(len(names))] if len(names) > 1 else ["k"]
    layer_colours = [c if c != "C3" else "k" for c in layer_colours]  # C3 is red: kept for the decision boundary
    for name, colour in zip(names, layer_colours):
        layer = rc[name]
        offset = _position_index(layer.unit_shape, position, where)
        n_channels = layer.unit_shape[0] if layer.unit_shape else 1  # a [N] activation: one unit
        per_channel = math.prod(layer.unit_shape[1:])
        bits = ops.unpack_bits(layer.words, layer.n_units, backend=backend).numpy().view(np.uint8)
        if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
            if channels < 1:
                raise ValueError(f"{where}: channels must be >= 1 or a sequence of channel indices, got {channels}")
            crossing = [c for c in range(n_channels) if bits[:, c * per_channel + offset].min() != bits[:, c * per_channel + offset].max()]
            chosen = crossing[: int(channels)]
        elif isinstance(channels, Sequence) and not isinstance(channels, str):
            chosen = []
            for c in channels:
                if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < n_channels:
                    raise ValueError(f"{where}: channel {c!r} is out of range for layer {name!r} with {n_channels} channels")
                chosen.append(int(c))
        else:
            raise TypeError(f"{where}: channels must be an int or a sequence of ints, got {type(channels).__name__}")
        units = bits[:, [c * per_channel + offset for c in chosen]].reshape(n, n, len(chosen))
        drawn = _draw_zero_sets(ax, steps, steps, units, colour, 1.1)
        where_text = "" if per_channel == 1 else f" at {position if isinstance(position, str) else tuple(position)}"
        handles.append(_line_handle(colour, 1.1, f"{name}: {drawn} of {n_channels} channels{where_text}"))
    _draw_decision_boundary(ax, steps, steps, logits, handles)
    first, second = ("img0", "img1") if labels is None else (f"img0 (class {labels[0]})", f"img1 (class {labels[1]})")
    ax.annotate(first, (1, 0), xytext=(-4, 4), textcoords="offset points", ha="right", va="bottom", fontsize=8,
                bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})
    ax.annotate(second, (0, 1), xytext=(4, -4), textcoords="offset points", ha="left", va="top", fontsize=8,
                bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("a (weight of img0)")
    ax.set_ylabel("b (weight of img1)")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8, frameon=False)
    ax.set_title(f"{title + ': ' if title else ''}{n_regions} regions on a {n}×{n} canvas", fontsize=11)
    _save(fig, path, dpi, where)
    return fig


# ---------------------------------------------------------------- early bird and training


def read_history(source: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """A run's ``history.json`` payload: from a run folder, the file itself, or a dict (returned as is)."""
    if isinstance(source, dict):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"read_history: source must be a run folder, a history.json path or a dict, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        path = path / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"read_history: no {path} (a run folder written by `fastspline train` has history.json)")
    return read_json_object(path, "read_history")


class _Detector:
    """What the EB plots need of one detector, from any of the accepted sources."""

    def __init__(self, name: str, matrix: np.ndarray | None, epoch: int | None, threshold: float | None,
                 distances: dict[int, float]) -> None:
        self.name = name
        self.matrix = matrix
        self.epoch = epoch
        self.threshold = threshold
        self.distances = distances


def _as_matrix(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        matrix = value.detach().double().cpu().numpy()
    else:
        try:
            matrix = np.array([[math.nan if v is None else v for v in row] for row in value], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: a distance history must be a square matrix of numbers/None ({exc})") from exc
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{where}: a distance history must be square [E + 1, E + 1], got shape {matrix.shape}")
    return matrix


def _detectors(history: Any, where: str) -> list[_Detector]:
    """Detectors of a run payload / run path, an EB detector (or a list of them), or a bare matrix."""
    from fastspline.earlybird import MaskEarlyBird, SplineEarlyBird

    if isinstance(history, (SplineEarlyBird, MaskEarlyBird)):
        history = [history]
    if isinstance(history, (list, tuple)) and history and all(isinstance(d, (SplineEarlyBird, MaskEarlyBird)) for d in history):
        return [_Detector(d.name, d.history.numpy(), d.epoch, d.threshold, dict(d.distances)) for d in history]
    nested = isinstance(history, (list, tuple)) and bool(history) and all(isinstance(r, (list, tuple)) for r in history)
    if isinstance(history, (torch.Tensor, np.ndarray)) or nested:
        return [_Detector("distance", _as_matrix(history, where), None, None, {})]
    if isinstance(history, (str, os.PathLike, dict)):
        payload = read_history(history)
        found = payload.get("earlybird")
        if not isinstance(found, dict) or not found:
            raise ValueError(f"{where}: the run has no early-bird results (history.json lacks 'earlybird'; trained with --eb none?)")
        result = []
        for name, summary in found.items():
            if not isinstance(summary, dict):
                raise ValueError(f"{where}: earlybird[{name!r}] must be a JSON object, got {type(summary).__name__}")
            matrix = _as_matrix(summary["history"], where) if summary.get("history") is not None else None
            distances = {int(e): float(d) for e, d in (summary.get("distances") or {}).items() if d is not None}
            result.append(_Detector(name, matrix, summary.get("epoch"), summary.get("threshold"), distances))
        return result
    raise TypeError(
        f"{where}: history must be a run folder, a history.json path or payload, an early-bird detector (or a list), "
        f"or a distance matrix (tensor, array or list of rows), got {type(history).__name__}"
    )


def earlybird_heatmap(
    history: Any,
    *,
    detectors: Sequence[str] | None = None,
    eb_epoch: int | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = _DPI,
) -> Figure:
    """Epoch x epoch distance heatmap(s) with the early-bird epoch marked (the EB picture).

    Args:
        history: a run folder or its ``history.json`` (path or loaded dict), a
            :class:`~fastspline.earlybird.SplineEarlyBird` / ``MaskEarlyBird`` (or a
            list of them), or a square matrix ``[E + 1, E + 1]`` (tensor, array or
            list of rows; NaN where not computed).
        detectors: names to draw (default every detector of the run with a matrix).
        eb_epoch: the EB epoch to mark when ``history`` is a bare matrix.
        title, path, dpi: figure title; write the PNG.

    Only pairs the detector compared have a value: with the default history depth
    (the window) that is a band around the diagonal; ``--history-depth`` (or
    ``SplineEarlyBird(history_depth=...)``) fills more of it. Epochs never stepped
    are left out.
    """
    where = "earlybird_heatmap"
    title = _check_title(title, where)
    found = [d for d in _detectors(history, where) if d.matrix is not None]
    if eb_epoch is not None:
        eb_epoch = _check_int(eb_epoch, "eb_epoch", 0, 10**6, where)
        for d in found:
            d.epoch = eb_epoch if d.epoch is None else d.epoch
    if detectors is not None:
        if isinstance(detectors, str):
            detectors = [detectors]
        known = [d.name for d in found]
        for name in detectors:
            if name not in known:
                raise ValueError(f"{where}: detectors names {name!r}; this history has {known}")
        found = [d for d in found if d.name in detectors]
    if not found:
        raise ValueError(f"{where}: no distance matrix to draw")
    fig = _figure(5.2 * len(found), 4.8)
    axes = fig.subplots(1, len(found), squeeze=False)[0]
    for ax, d in zip(axes, found):
        matrix = d.matrix
        stepped = [e for e in range(matrix.shape[0]) if not math.isnan(matrix[e, e])]
        if not stepped:
            raise ValueError(f"{where}: detector {d.name!r} has no stepped epoch (its diagonal is all NaN)")
        first, last = stepped[0], stepped[-1]
        shown = np.ma.masked_invalid(matrix[first : last + 1, first : last + 1])
        import matplotlib

        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e8e8e8")
        vmax = float(shown.max()) if shown.count() and float(shown.max()) > 0 else 1.0
        image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=vmax, origin="upper", interpolation="nearest",
                          extent=(first - 0.5, last + 0.5, last + 0.5, first - 0.5))
        label = "partition distance" if d.name == "spline" else f"{d.name} distance"
        fig.colorbar(image, ax=ax, shrink=0.85, label=label)
        if d.epoch is not None and first <= d.epoch <= last:
            ax.axhline(d.epoch, color=EB_COLOUR, linestyle="--", linewidth=1.4)
            ax.axvline(d.epoch, color=EB_COLOUR, linestyle="--", linewidth=1.4)
            ax.plot([d.epoch], [d.epoch], marker="*", markersize=16, color=EB_COLOUR, markeredgecolor="k")
            threshold = f", threshold {d.threshold:g}" if d.threshold is not None else ""
            heading = f"{d.name} EB at epoch {d.epoch}{threshold}"
        else:
            heading = f"{d.name}: EB not found" if d.name != "distance" else "distances"
        ax.set_title(heading, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("epoch")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    _save(fig, path, dpi, where)
    return fig


def _records(history: Any, where: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(per-epoch records, run payload or {}) of a History, a list of records or a run."""
    from fastspline.train import History

    if isinstance(history, History):
        return list(history.records), {}
    if isinstance(history, (list, tuple)):
        if not all(isinstance(r, dict) for r in history):
            raise TypeError(f"{where}: a list history must hold per-epoch record dicts")
        return list(history), {}
    if isinstance(history, (str, os.PathLike, dict)):
        payload = read_history(history)
        records = payload.get("records")
        if not isinstance(records, list):
            raise ValueError(f"{where}: the run payload has no 'records' list")
        return records, payload
    raise TypeError(
        f"{where}: history must be a fastspline.train.History, a list of records, or a run folder / history.json, "
        f"got {type(history).__name__}"
    )


def _flops_unit(peak: float) -> tuple[float, str]:
    for scale, unit in ((1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs")):
        if peak >= scale:
            return scale, unit
    return 1.0, "FLOPs"


def training_curves(
    history: Any,
    *,
    thresholds: dict[str, float] | None = None,
    eb_epochs: dict[str, int] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = _DPI,
) -> Figure:
    """Accuracy, early-bird distance and cumulative training FLOPs per epoch.

    Args:
        history: a :class:`fastspline.train.History`, a list of its records, or a run
            folder / ``history.json`` (path or dict; thresholds and EB epochs are read from it).
        thresholds: ``{detector: threshold}`` drawn on the distance panel (overrides the run's;
            None: not drawn).
        eb_epochs: ``{detector: epoch}`` marked on every panel (overrides the run's; None: not
            marked, e.g. ``detector.epoch`` of a detector that has not fired).
        title, path, dpi: figure title; write the PNG.

    The distance panel shows each ``"<detector>_distance"`` key of the records; the FLOPs
    panel adds the probe passes (``probe_flops``) on top of training when recorded.
    """
    where = "training_curves"
    title = _check_title(title, where)
    for name, value in (("thresholds", thresholds), ("eb_epochs", eb_epochs)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{where}: {name} must be a dict {{detector: value}} or None, got {type(value).__name__}")
    records, payload = _records(history, where)
    if not records:
        raise ValueError(f"{where}: the history has no epochs")
    marks: dict[str, int] = {}
    limits: dict[str, float] = {}
    for name, summary in (payload.get("earlybird") or {}).items():
        if isinstance(summary, dict):
            if summary.get("epoch") is not None:
                marks[name] = int(summary["epoch"])
            if summary.get("threshold") is not None:
                limits[name] = float(summary["threshold"])
    for name, epoch in (eb_epochs or {}).items():  # None: no EB (the detector has not fired)
        if epoch is None:
            marks.pop(name, None)
        else:
            marks[name] = _check_int(epoch, f"eb_epochs[{name!r}]", 0, 10**6, where)
    for name, limit in (thresholds or {}).items():
        if limit is None:
            limits.pop(name, None)
        elif isinstance(limit, bool) or not isinstance(limit, numbers.Real) or not math.isfinite(limit):
            raise TypeError(f"{where}: thresholds[{name!r}] must be a finite number or None, got {limit!r}")
        else:
            limits[name] = float(limit)
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
    detector_names = [k[: -len("_distance")] for k in records[-1] if k.endswith("_distance")]
    for r in records:
        for k in r:
            if k.endswith("_distance") and k[: -len("_distance")] not in detector_names:
                detector_names.append(k[: -len("_distance")])
    panels = 3 if detector_names else 2
    fig = _figure(4.6 * panels, 3.9)
    axes = fig.subplots(1, panels, squeeze=False)[0]

    order = {"spline": 0, "mask": 1}
    styles = [("k", "--"), ("0.45", ":"), ("0.45", "-.")]

    def mark(ax: Axes) -> None:
        for k, (name, epoch) in enumerate(sorted(marks.items(), key=lambda item: (order.get(item[0], 2), item[0]))):
            colour, style = styles[min(k, len(styles) - 1)]
            ax.axvline(epoch, color=colour, linestyle=style, linewidth=1.3, label=f"{name} EB (epoch {epoch})")

    def column(key: str) -> tuple[list[int], list[float]]:
        pairs = [(e, r.get(key)) for e, r in zip(epochs, records) if r.get(key) is not None]
        return [p[0] for p in pairs], [float(p[1]) for p in pairs]

    ax = axes[0]
    for key, label in (("train_acc", "train"), ("test_acc", "test")):
        xs, ys = column(key)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
    mark(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy", fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # no labelled line (keys not recorded, no EB): no legend, no warning
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    if detector_names:
        ax = axes[1]
        for k, name in enumerate(detector_names):
            xs, ys = column(f"{name}_distance")
            colour = ("C2", "C4", "C5", "C6")[min(k, 3)]
            line = ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=f"{name} distance")[0]
            if name in limits:
                ax.axhline(limits[name], color=line.get_color(), linestyle=":", linewidth=1.2, label=f"{name} threshold {limits[name]:g}")
        mark(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel("window distance")
        ax.set_title("early-bird distance", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    ax = axes[-1]
    xs, train_flops = column("cumulative_flops")
    if xs:
        probe = [float(r.get("probe_flops") or 0) for e, r in zip(epochs, records) if r.get("cumulative_flops") is not None]
        total = [t + p for t, p in zip(train_flops, probe)]
        scale, unit = _flops_unit(max(total))
        ax.plot(xs, [t / scale for t in train_flops], marker="o", markersize=3, label="training")
        if any(probe):
            ax.plot(xs, [t / scale for t in total], linestyle="--", label="training + probe passes")
        ax.set_ylabel(f"cumulative {unit}")
    mark(ax)
    ax.set_xlabel("epoch")
    ax.set_title("training FLOPs", fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # no labelled line (keys not recorded, no EB): no legend, no warning
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    _save(fig, path, dpi, where)
    return fig


# ---------------------------------------------------------------- pruning


class _LayerUnits:
    """Kept and removed units of one layer, from a PrunePlan or its dict forms."""

    def __init__(self, name: str, width: int, removed: list[int], merged: int | None) -> None:
        self.name = name
        self.width = width
        self.removed = removed
        self.merged = merged  # removed units merged into a kept twin; None when unknown


def _plan_layers(plan: Any, where: str) -> tuple[list[_LayerUnits], dict[str, Any], Any]:
    """(layers, plan fields, the PrunePlan or None) of a PrunePlan, ``to_dict()`` or ``summary()``."""
    from fastspline.pruning import PrunePlan

    if isinstance(plan, dict) and isinstance(plan.get("layers"), list) and plan["layers"] and "width_before" in plan["layers"][0]:
        try:
            plan = PrunePlan.from_dict(plan)
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"{where}: plan looks like PrunePlan.to_dict() but could not be read ({exc})") from exc
    if isinstance(plan, PrunePlan):
        layers = [
            _LayerUnits(l.name, l.width_before, l.removed_indices, sum(u.merged_into is not None for u in l.removed))
            for l in plan.layers
        ]
        return layers, plan.summary(), plan
    if isinstance(plan, dict) and isinstance(plan.get("layers"), list):
        layers = []
        for i, entry in enumerate(plan["layers"]):
            try:
                layers.append(_LayerUnits(str(entry["name"]), int(entry["before"]), [int(u) for u in entry["removed"]], None))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{where}: plan summary layer {i} lacks name/before/removed ({exc})") from exc
        return layers, plan, None
    raise TypeError(
        f"{where}: plan must be a fastspline.pruning.PrunePlan, its to_dict() or its summary(), got {type(plan).__name__}"
    )


def pruning_report(
    plan: Any,
    model: nn.Module | None = None,
    *,
    pruned: nn.Module | None = None,
    pruned_label: str = "after pruning",
    bounds: float | Sequence[float] = 5.0,
    resolution: int = 384,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = _DPI,
    backend: str | None = None,
) -> Figure:
    """Kept and removed units per layer of a pruning plan; for a model with 2-D inputs,
    its partition before and after pruning (removed units' zero sets disappear).

    Args:
        plan: a :class:`fastspline.pruning.PrunePlan`, its ``to_dict()``, or its
            ``summary()`` (as the pipeline's run JSON holds it: counts and removed
            indices, no merge details).
        model: the model the plan was made for. When it reads 2-D points
            (:func:`takes_points`), the partitions before and after are drawn; the
            "after" model is ``pruned`` if given, else ``fastspline.pruning.mask(plan, model)``
            (removed units zeroed, merges folded in: the function :func:`fastspline.pruning.apply`
            computes, at the original widths; needs a PrunePlan or its ``to_dict()``).
        pruned: the model after pruning (e.g. the physically smaller one from ``apply``).
        pruned_label: the title of its panel (e.g. ``"after pruning and retraining"``).
        bounds, resolution: the partitions' grid (see :func:`partition_2d`).
        title, path, dpi: figure title; write the PNG.
    """
    where = "pruning_report"
    title = _check_title(title, where)
    if not isinstance(pruned_label, str):
        raise TypeError(f"{where}: pruned_label must be a str, got {type(pruned_label).__name__}")
    layers, fields, full_plan = _plan_layers(plan, where)
    if not layers:
        raise ValueError(f"{where}: the plan has no layers")
    if model is not None:
        _check_model(model, where)
    if pruned is not None:
        _check_model(pruned, where)
    partitions = model is not None and takes_points(model)
    if partitions:
        box = _check_bounds(bounds, where)
        resolution = _check_int(resolution, "resolution", 2, 8192, where)
        if pruned is None:
            if full_plan is None:
                raise ValueError(
                    f"{where}: the partition after pruning needs the PrunePlan (or its to_dict()), or pruned=; "
                    "a plan summary has no merge details"
                )
            from fastspline.pruning import mask

            pruned = mask(full_plan, model)
    fig = _figure(11.0, 10.4 if partitions else 4.6)
    grid = fig.add_gridspec(2 if partitions else 1, 2, height_ratios=[1.0, 2.1] if partitions else [1.0])
    KEPT, REMOVED = "#1f77b4", "#ff7f0e"

    # Counts per layer.
    ax = fig.add_subplot(grid[0, 0])
    names = [l.name for l in layers]
    positions = np.arange(len(layers))
    kept = np.array([l.width - len(l.removed) for l in layers])
    removed = np.array([len(l.removed) for l in layers])
    ax.barh(positions, kept, color=KEPT, label="kept")
    ax.barh(positions, removed, left=kept, color=REMOVED, label="removed")
    for i, l in enumerate(layers):
        text = f"{kept[i]}/{l.width}"
        if l.merged:
            text += f" ({l.merged} merged)"
        ax.text(l.width, i, " " + text, va="center", fontsize=8)
    ax.set_yticks(positions, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(l.width for l in layers) * 1.45)
    ax.set_xlabel("units")
    ax.set_title("kept vs removed units per layer", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")

    # Which units: one row per layer, one cell per unit index.
    ax = fig.add_subplot(grid[0, 1])
    widest = max(l.width for l in layers)
    cells = np.full((len(layers), widest), np.nan)
    for i, l in enumerate(layers):
        cells[i, : l.width] = 1.0
        cells[i, l.removed] = 0.0
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap([REMOVED, KEPT]).with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(cells), cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for i in range(1, len(layers)):
        ax.axhline(i - 0.5, color="white", linewidth=2)
    ax.set_yticks(positions, names, fontsize=8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("unit index")
    ax.set_title("units by index", fontsize=10)
    ax.legend(handles=[Patch(color=KEPT, label="kept"), Patch(color=REMOVED, label="removed")], fontsize=8,
              loc="upper right", bbox_to_anchor=(1.0, -0.14), ncol=2, frameon=False)

    if partitions:
        for column, (label, net) in enumerate((("before pruning", model), (pruned_label, pruned))):
            ax = fig.add_subplot(grid[1, column])
            count = _draw_partition(
                ax, net, box, resolution, layers=None, data=None, device=None, backend=backend,
                batch_size=65536, legend=True, where=where,
            )
            ax.set_title(f"{label}: {count} regions", fontsize=10)
    heading = f"{fields.get('policy', 'pruning')}"
    if fields.get("ratio") is not None:
        heading += f", ratio {fields['ratio']:g}"
    units_before, units_after = sum(l.width for l in layers), int(kept.sum())
    heading += f": {units_after} of {units_before} units kept"
    if fields.get("flops_before") and fields.get("flops_after"):
        heading += f", forward FLOPs ÷{fields['flops_before'] / fields['flops_after']:.2f}"
    fig.suptitle(f"{title}: {heading}" if title else heading, fontsize=11)
    _save(fig, path, dpi, where)
    return fig


# ---------------------------------------------------------------- run folders


def load_model(path: str | os.PathLike) -> nn.Module:
    """A model saved as ``{"model": state_dict, "model_config": config, ...}`` (training
    checkpoints, ``eb-<detector>.pt``, the pipeline's pruned models), rebuilt with
    :func:`fastspline.models.build`, on the CPU, in eval mode."""
    from fastspline import models

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_model: path must be a str or os.PathLike, got {type(path).__name__}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"load_model: no file {os.fspath(path)!r}")
    # Checks the zip magic first: torch.load of a text file fails with "IndexError: pop from empty list".
    payload = load_torch_archive(path, "load_model", "model file")
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict) or not isinstance(payload.get("model_config"), dict):
        raise ValueError(f"load_model: {os.fspath(path)!r} lacks 'model' (a state dict) and 'model_config' (a fastspline model config)")
    model = models.build(payload["model_config"])
    model.load_state_dict(payload["model"])
    return model.eval()


def takes_points(model: nn.Module) -> bool:
    """Whether ``model`` reads 2-D points: its first layer with weights is ``nn.Linear(2, ...)``."""
    _check_model(model, "takes_points")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return module.in_features == 2
        if any(True for _ in module.parameters(recurse=False)):
            return False
    return False


def labelled_canvas_pair(dataset: torch.utils.data.TensorDataset, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """:func:`fastspline.data.canvas_pair` of ``dataset`` and the labels of the two inputs."""
    from fastspline.data import canvas_pair

    if not isinstance(dataset, torch.utils.data.TensorDataset) or len(dataset.tensors) < 2:
        raise TypeError(f"labelled_canvas_pair: dataset must be a TensorDataset of (x, y), got {type(dataset).__name__}")
    img0, img1 = canvas_pair(dataset, seed=seed)
    x, y = dataset.tensors[0], dataset.tensors[1]
    label0, label1 = (int(y[(x == img).flatten(1).all(1)][0]) for img in (img0, img1))
    return img0, img1, (label0, label1)


def write_run_plots(
    run_dir: str | os.PathLike,
    *,
    history: Any = None,
    model: nn.Module | None = None,
    plan: Any = None,
    pruned: nn.Module | None = None,
    pruned_label: str = "after pruning",
    dataset: torch.utils.data.TensorDataset | None = None,
    seed: int = 0,
    bounds: float | Sequence[float] = 5.0,
    resolution: int = 512,
    canvas_size: int = 64,
    title: str | None = None,
) -> list[Path]:
    """Write the PNGs of a run folder that the given objects allow; return their paths.

    - ``eb-heatmap.png`` and ``training-curves.png`` from ``history`` (a run payload,
      history.json path, ``History``, or records; default ``run_dir/history.json`` when
      it exists): the heatmap only when the run has early-bird distance matrices;
    - ``partition.png`` when ``model`` reads 2-D points (:func:`takes_points`), on
      ``bounds`` x ``resolution``, with ``dataset``'s points scattered; else ``canvas.png``
      on the canvas of two ``dataset`` inputs of different classes
      (:func:`fastspline.data.canvas_pair` with ``seed``), ``canvas_size`` points per side;
      ``title`` goes before the region count of either;
    - ``pruning.png`` from ``plan`` (:func:`pruning_report` with ``model``, ``pruned``
      and ``pruned_label``).
    """
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"write_run_plots: run_dir must be a path, got {type(run_dir).__name__}")
    if dataset is not None and not isinstance(dataset, torch.utils.data.TensorDataset):
        raise TypeError(f"write_run_plots: dataset must be a TensorDataset of (x, y), got {type(dataset).__name__}")
    if model is not None:
        _check_model(model, "write_run_plots")
    if pruned is not None:
        _check_model(pruned, "write_run_plots")
    folder = Path(run_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"write_run_plots: run_dir {os.fspath(folder)!r} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    if history is None and (folder / "history.json").is_file():
        history = folder / "history.json"
    written: list[Path] = []
    if history is not None:
        if isinstance(history, (str, os.PathLike)):
            history = read_history(history)
        has_matrices = isinstance(history, dict) and any(
            isinstance(s, dict) and s.get("history") for s in (history.get("earlybird") or {}).values()
        )
        if has_matrices:
            earlybird_heatmap(history, path=folder / "eb-heatmap.png")
            written.append(folder / "eb-heatmap.png")
        training_curves(history, path=folder / "training-curves.png")
        written.append(folder / "training-curves.png")
    if model is not None and takes_points(model):
        partition_2d(model, bounds, resolution, data=dataset, title=title, path=folder / "partition.png")
        written.append(folder / "partition.png")
    elif model is not None and dataset is not None:
        img0, img1, labels = labelled_canvas_pair(dataset, seed)
        canvas_contours(model, img0, img1, n=canvas_size, labels=labels, title=title, path=folder / "canvas.png")
        written.append(folder / "canvas.png")
    if plan is not None:
        pruning_report(plan, model, pruned=pruned, pruned_label=pruned_label, bounds=bounds, path=folder / "pruning.png")
        written.append(folder / "pruning.png")
    return written
