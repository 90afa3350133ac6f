"""Bad-input catalogue: every public entry point, given bad input, raises a clear
error, leaves files intact and leaves the model as it was.

"Clear": the exception type is the documented one and the message names the
function (or class) and the argument and shows the value. "Files intact": a
failed save leaves the previous file byte for byte and no temporary file; a
failed load changes nothing. "Model as it was": train/eval mode of every
submodule, hooks (ours removed, the user's kept), requires_grad, parameters and
buffers, grad mode and the torch-function mode stack (see :class:`ModelState`).

The kernel ops' argument checks (dtypes, shapes, devices, k, r, n_bits, dim,
threshold, backend names) are catalogued in tests/test_errors.py; here are the
ops' remaining inputs (``out=``, NaN/inf activations) and everything above the
ops. :data:`CATALOGUE` maps each public name to the tests that cover it, and
``test_catalogue_covers_every_public_name`` fails when a module's ``__all__``
gains a name without an entry.
"""
from __future__ import annotations

import builtins
import contextlib
import errno
import importlib
import importlib.util
import io
import json
import math
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastspline as fs
from fastspline import backends, cli, data, models, train
from fastspline.codes import LayerCodes, RegionCodes
from fastspline.earlybird import MaskEarlyBird, SplineEarlyBird, bn_mask, probe_batch_size
from test_errors import raises

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- helpers


class ModelState:
    """What a call that fails (or only reads the model) must leave as it was."""

    def __init__(self, model: nn.Module) -> None:
        self.training = {name: m.training for name, m in model.named_modules()}
        self.hooks = {name: _hook_counts(m) for name, m in model.named_modules()}
        self.global_hooks = _global_hook_counts()
        self.requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        self.tensors = {name: t.detach().clone() for name, t in model.state_dict().items()}
        self.grad_enabled = torch.is_grad_enabled()
        self.function_modes = torch._C._len_torch_function_stack()

    def assert_same(self, model: nn.Module) -> None:
        after = ModelState(model)
        assert after.training == self.training, "train/eval mode changed"
        assert after.hooks == self.hooks, "hooks added or removed"
        assert after.global_hooks == self.global_hooks, "global module hooks added or removed"
        assert after.requires_grad == self.requires_grad, "requires_grad changed"
        assert after.tensors.keys() == self.tensors.keys()
        for name, t in self.tensors.items():  # bit for bit; NaN where it was NaN
            torch.testing.assert_close(after.tensors[name], t, rtol=0, atol=0, equal_nan=True, msg=f"{name} changed")
        assert after.grad_enabled == self.grad_enabled, "grad mode changed"
        assert after.function_modes == self.function_modes, "a TorchFunctionMode was left on the stack"


def _hook_counts(module: nn.Module) -> tuple[int, ...]:
    return tuple(
        len(getattr(module, attr))
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks")
    )


def _global_hook_counts() -> tuple[int, ...]:
    from torch.nn.modules import module as module_lib

    return tuple(len(getattr(module_lib, attr)) for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"))


@contextlib.contextmanager
def leaves_unchanged(model: nn.Module) -> Iterator[None]:
    """Checks the model after the block (put it outside ``pytest.raises``)."""
    before = ModelState(model)
    yield
    before.assert_same(model)


class Net(nn.Module):
    """BN + ReLU MLP with a user hook, a frozen layer and a submodule left in eval mode."""

    def __init__(self, inputs: int = 4, hidden: int = 70, classes: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, classes)
        self.fc1.weight.requires_grad_(False)
        self.bn1.eval()
        self.user_calls = 0
        self.fc2.register_forward_hook(self._count)

    def _count(self, module: nn.Module, args: Any, out: Any) -> None:
        self.user_calls += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act1(self.bn1(self.fc1(x))))


@pytest.fixture
def model() -> Net:
    torch.manual_seed(0)
    m = Net()
    m.bn1.eval()  # a mix of modes that must survive every call
    return m


X = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 3, (10,), generator=torch.Generator().manual_seed(2))


class FullDisk:
    """Simulates a full disk: writes through Python file objects opened for writing
    raise ``OSError(ENOSPC)`` once ``limit`` bytes have gone through (the first
    bytes do reach the file, so the failure is mid-write)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, limit: int = 100) -> None:
        self.limit = limit
        self.written = 0
        self.failures = 0
        real_open, real_fdopen = builtins.open, os.fdopen

        def wrap(f: Any, mode: str) -> Any:
            return _LimitedFile(f, self) if any(c in mode for c in "wax+") else f

        def patched_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            return wrap(real_open(file, mode, *args, **kwargs), mode)

        def patched_fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            return wrap(real_fdopen(fd, mode, *args, **kwargs), mode)

        monkeypatch.setattr(builtins, "open", patched_open)
        monkeypatch.setattr(io, "open", patched_open)
        monkeypatch.setattr(os, "fdopen", patched_fdopen)


class _LimitedFile:
    def __init__(self, f: Any, disk: FullDisk) -> None:
        self._f, self._disk = f, disk

    def write(self, data: Any) -> int:
        room = self._disk.limit - self._disk.written
        if len(data) > room:
            self._f.write(data[: max(room, 0)])
            self._disk.written = self._disk.limit
            self._disk.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.written += len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _LimitedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._f)


def folder_state(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (temporary files included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def small_codes() -> RegionCodes:
    words = torch.tensor([[1, 2], [3, 36], [0, 63]], dtype=torch.int64)  # 70 units: pad bits zero
    return RegionCodes({"a": LayerCodes(words, 70, (70,)), "b": LayerCodes(words[:, :1] & 7, 3, (3,))}, {"note": "x"})


def truncated(path: Path, keep: float = 0.5) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


# ---------------------------------------------------------------- kernel ops (beyond test_errors.py)

OUT_CASES = [
    ("dtype", lambda: torch.zeros(3, 5, dtype=torch.int64), ValueError),
    ("shape", lambda: torch.zeros(5, 3, dtype=torch.int32), ValueError),
    ("strided", lambda: torch.zeros(3, 10, dtype=torch.int32)[:, ::2], ValueError),
    ("device", lambda: torch.zeros(3, 5, dtype=torch.int32, device="meta"), ValueError),
    ("not a tensor", lambda: np.zeros((3, 5), dtype=np.int32), TypeError),
]


@pytest.mark.parametrize(("what", "make", "exc"), OUT_CASES, ids=[c[0] for c in OUT_CASES])
def test_cdist_out_must_fit(what, make, exc):
    a, b = torch.zeros(3, 2, dtype=torch.int64), torch.zeros(5, 2, dtype=torch.int64)
    out = make()
    before = out.clone() if isinstance(out, torch.Tensor) and out.device.type == "cpu" else None
    with raises(exc, "hamming_cdist: out must"):
        fs.hamming_cdist(a, b, out=out)
    if before is not None:
        assert torch.equal(out, before)  # refused before any write


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_pack_signs_nan_and_inf_activations_are_defined(backend):
    """Not errors for the op: NaN packs as 0 (documented), +-inf by their sign."""
    if backends.available()[backend] is not None:
        pytest.skip(f"backend {backend} unavailable")
    x = torch.tensor([[math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, -math.nan]])
    assert fs.unpack_bits(fs.pack_signs(x, backend=backend), 7).tolist() == [[False, True, False, False, False, True, False]]
    assert fs.pack_signs(x, threshold=math.inf, backend=backend).item() == 0
    assert fs.pack_signs(x, threshold=-math.inf, backend=backend).item() == 0b0111010


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_word_views_with_an_odd_stride_on_a_size_one_dim(backend):
    """Found by the fuzz run: one-word codes in a view whose last dim keeps stride 2
    (torch calls it contiguous) broke the reference backend's uint8 view."""
    if backends.available()[backend] is not None:
        pytest.skip(f"backend {backend} unavailable")
    buf = torch.tensor([7, 1, 5, 3], dtype=torch.int64)
    words = buf[1::2][:1].as_strided((1,), (2,))  # [1] with stride 2
    pairs = buf.as_strided((2, 1), (1, 2))  # rows 7 and 1, last-dim stride 2
    assert fs.popcount(words, backend=backend).item() == 1
    assert fs.hamming_cdist(pairs, pairs, backend=backend).tolist() == [[0, 2], [2, 0]]
    assert fs.hamming_radius(pairs[:1], pairs, 2, backend=backend)[1].tolist() == [0, 1]


def test_ops_accept_tensors_that_require_grad():
    x = torch.randn(4, 70, requires_grad=True)
    words = fs.pack_signs(x)
    assert words.dtype == torch.int64 and not words.requires_grad and x.grad is None


# ---------------------------------------------------------------- codes()

CODES_ARGUMENTS = [
    ("model", dict(model=lambda x: x), TypeError, "codes: model must be an nn.Module"),
    ("data-str", dict(data="inputs.pt"), TypeError, "codes: data must be a DataLoader"),
    ("data-dict", dict(data={"x": X}), TypeError, "codes: data must be", "got dict"),
    ("data-int", dict(data=3), TypeError, "codes: data must be", "got int"),
    ("data-0d", dict(data=torch.tensor(1.0)), ValueError, "codes: data must have a batch dimension"),
    ("batch-str", dict(data=["ab"]), TypeError, "codes: each batch must be a tensor", "got str"),
    ("batch-dict", dict(data=[{"y": X}]), ValueError, "codes: a dict batch needs an 'x' or 'input' tensor", "['y']"),
    ("batch-0d", dict(data=[torch.tensor(1.0)]), ValueError, "codes: a batch must have a batch dimension"),
    ("layers-name", dict(layers=["bn"]), ValueError, "codes: layers names 'bn'", "similar names: ['bn1']"),
    ("layers-foreign", dict(layers=[nn.ReLU()]), ValueError, "codes: layers holds a ReLU that is not part of the model"),
    ("layers-empty", dict(layers=[]), ValueError, "codes: layers is empty"),
    ("layers-item", dict(layers=[3]), TypeError, "codes: layers must hold module names or modules", "int 3"),
    ("layers-type", dict(layers=5), TypeError, "codes: layers must be None, a module name", "int"),
    ("empty-batch-with-layers", dict(layers=["fc1"], data=[X[:0]]), ValueError, "codes: data (list) yielded no samples"),
    ("where", dict(where="mid"), ValueError, "codes: where must be 'pre' or 'post'", "'mid'"),
    ("keep_on", dict(keep_on="gpu"), ValueError, "codes: keep_on must be 'cpu' or 'device'", "'gpu'"),
    ("batch_size-0", dict(batch_size=0), ValueError, "codes: batch_size must be >= 1", "got 0"),
    ("batch_size-float", dict(batch_size=1.5), TypeError, "codes: batch_size must be an int", "1.5"),
    ("batch_size-bool", dict(batch_size=True), TypeError, "codes: batch_size must be an int", "True"),
    ("max_samples-0", dict(max_samples=0), ValueError, "codes: max_samples must be >= 1", "got 0"),
    ("max_samples-str", dict(max_samples="3"), TypeError, "codes: max_samples must be an int or None", "'3'"),
    ("device-type", dict(device=3), TypeError, "codes: device must be a torch.device, a str or None", "int"),
    ("device-name", dict(device="gpu0"), ValueError, "codes: device 'gpu0' is not a torch device"),
    ("backend", dict(backend="nope"), ValueError, "pack_signs: backend must be one of", "'nope'"),
    ("empty-tensor", dict(data=torch.empty(0, 4)), ValueError, "codes: data (Tensor) yielded no samples"),
    ("empty-list", dict(data=[]), ValueError, "codes: data (list) yielded no samples"),
    ("empty-loader", dict(data=DataLoader(TensorDataset(torch.empty(0, 4)), batch_size=4)), ValueError,
     "codes: data (DataLoader) yielded no samples"),
    ("empty-batches", dict(data=[X[:0], X[:0]]), ValueError, "codes: data (list) yielded no samples"),
    ("wrong-width", dict(data=torch.randn(5, 6)), RuntimeError, "mat1 and mat2 shapes cannot be multiplied"),
    ("wrong-dtype", dict(data=X.double()), TypeError, "codes: the model failed on torch.float64 inputs; its parameters are torch.float32"),
    ("nan-input", dict(data=torch.full((3, 4), math.nan)), ValueError,
     "codes: layer 'act1' has NaN activations for inputs 0..2", "diverged model, or NaN inputs"),
    ("nan-second-batch", dict(data=[X, torch.full((2, 4), math.nan)]), ValueError, "has NaN activations for inputs 10..11"),
]


@pytest.mark.parametrize(("what", "kwargs", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in CODES_ARGUMENTS],
                         ids=[c[0] for c in CODES_ARGUMENTS])
def test_codes_bad_arguments(model, what, kwargs, exc, m):
    kwargs = dict(kwargs)
    target = kwargs.pop("model", model)
    data_arg = kwargs.pop("data", X)
    with leaves_unchanged(model), raises(exc, *m):
        fs.codes(target, data_arg, progress=False, **kwargs)


def test_codes_model_without_activations():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    with leaves_unchanged(model), raises(ValueError, "codes: found no piecewise-linear layer in Sequential", "register_activation", "layers="):
        fs.codes(model, X, progress=False)


def test_codes_modules_given_but_never_called(model):
    unused = nn.ReLU()
    model.spare = unused
    with leaves_unchanged(model), raises(ValueError, "codes: the modules ['spare'] given in layers= were not called"):
        fs.codes(model, X, layers=["spare"], progress=False)


class _Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class _Ints(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).long()


class _Flat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1)


@pytest.mark.parametrize(
    ("layer", "exc", "message"),
    [
        (_Pair(), TypeError, "codes: layer 'probe' produced tuple, not a tensor"),
        (_Ints(), TypeError, "codes: layer 'probe' produced a torch.int64 tensor, expected floating point"),
        (_Flat(), ValueError, "codes: layer 'probe' saw a tensor of shape (40,) whose first dim is not the batch of 10"),
    ],
    ids=["tuple", "int", "unbatched"],
)
def test_codes_layer_outputs_that_are_not_codes(layer, exc, message):
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(4, 4))
    model.add_module("probe", layer)
    with leaves_unchanged(model), raises(exc, message):
        fs.codes(model, X, layers=["probe"], progress=False)


class _Branchy(nn.Module):
    """ReLU reached only when the batch mean is positive: data-dependent control flow."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.fc(x))
        return self.act2(y) if x.mean() > 0 else y


class _Growing(nn.Module):
    """Units change with the batch: the layer's code length is not fixed."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x.repeat(1, x.shape[0]))


def test_codes_layer_reached_by_some_inputs_only():
    model = _Branchy()
    batches = [torch.ones(3, 4), -torch.ones(2, 4)]
    with leaves_unchanged(model), raises(ValueError, "codes: layer 'act2' was reached for 3 of 5 inputs", "control flow"):
        fs.codes(model, batches, progress=False)


def test_codes_layer_changing_shape_between_batches():
    model = _Growing()
    with leaves_unchanged(model), raises(ValueError, "codes: layer 'act' changed shape between batches: (12,) vs (8,)"):
        fs.codes(model, [torch.ones(3, 4), torch.ones(2, 4)], progress=False)


def test_codes_nan_weights_and_restored_state(model):
    with torch.no_grad():
        model.fc1.bias[5] = math.nan
    with leaves_unchanged(model), raises(ValueError, "codes: layer 'act1' has NaN activations"):
        fs.codes(model, X, progress=False)


def test_codes_infinite_activations_are_coded_by_sign():
    model = nn.Sequential(nn.ReLU())
    x = torch.tensor([[math.inf, -math.inf, 1.0]])
    rc = fs.codes(model, x, progress=False)
    assert fs.unpack_bits(rc["0"].words, 3).tolist() == [[True, False, True]]


def test_codes_forward_raising_midway_restores_everything(model):
    def batches() -> Iterator[torch.Tensor]:
        yield X
        yield torch.randn(2, 9)  # the second batch has the wrong width

    with leaves_unchanged(model), pytest.raises(RuntimeError, match="mat1 and mat2"):
        fs.codes(model, batches(), progress=False)
    # Functional interception (no activation modules) is removed too.
    functional = nn.Sequential(nn.Linear(4, 4), nn.Flatten())
    functional.forward = lambda x: torch.relu(nn.Sequential.forward(functional, x)) if x.shape[1] == 4 else x @ x
    with leaves_unchanged(functional), pytest.raises(RuntimeError):
        fs.codes(functional, batches(), progress=False)


# ---------------------------------------------------------------- LayerCodes / RegionCodes

def test_layer_codes_checks():
    words = torch.zeros(3, 2, dtype=torch.int64)
    with raises(ValueError, "LayerCodes: words must be int64 [N, W]", "torch.float32"):
        LayerCodes(words.float(), 70, (70,))
    with raises(ValueError, "LayerCodes: words must be int64 [N, W]", "(3,)"):
        LayerCodes(words[:, 0], 70, (70,))
    with raises(ValueError, "LayerCodes: words must be int64 [N, W]", "list"):
        LayerCodes([[0, 0]], 70, (70,))
    with raises(ValueError, "LayerCodes: n_units=70 but unit_shape (7, 9) has 63"):
        LayerCodes(words, 70, (7, 9))
    with raises(ValueError, "LayerCodes: 200 units need 4 words per code, words has shape (3, 2)"):
        LayerCodes(words, 200, (200,))


def test_region_codes_checks():
    rc = small_codes()
    with raises(TypeError, "RegionCodes: layer 'a' must be LayerCodes, got Tensor"):
        RegionCodes({"a": torch.zeros(3, 2, dtype=torch.int64)})
    with raises(ValueError, "RegionCodes: every layer must have the same number of samples, got [2, 3]"):
        RegionCodes({"a": rc["a"], "b": LayerCodes(torch.zeros(2, 1, dtype=torch.int64), 3, (3,))})
    with raises(KeyError, "RegionCodes: no layer 'c'; layers are ['a', 'b']"):
        rc["c"]
    with raises(KeyError, "no layer 'c'"):
        rc.unit_major("c")
    with raises(ValueError, "RegionCodes: no layers"):
        RegionCodes({}).concatenated()
    with raises(ValueError, "distance: reduce must be 'mean' or 'none', got 'max'"):
        rc.distance(rc, reduce="max")
    with raises(TypeError, "distance: other must be RegionCodes, got dict"):
        rc.distance({"a": rc["a"]})
    with raises(ValueError, "distance: the layers differ: ['a', 'b'] vs ['a']"):
        rc.distance(RegionCodes({"a": rc["a"]}))
    other = RegionCodes({"a": LayerCodes(torch.zeros(2, 2, dtype=torch.int64), 70, (70,)), "b": LayerCodes(torch.zeros(2, 1, dtype=torch.int64), 3, (3,))})
    with raises(ValueError, "distance: layer 'a' has codes (3, 2) of units (70,) vs (2, 2) of units (70,)"):
        rc.distance(other)
    with raises(RuntimeError, "device"):
        rc.to("gpu0")


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"t": torch.zeros(1)}, "RegionCodes.save: meta['t'] is a Tensor"),
        ({"s": {1, 2}}, "RegionCodes.save: meta['s'] is a set"),
        ({1: "a"}, "RegionCodes.save: meta keys must be str, got int 1"),
        ({"l": [1, object()]}, "RegionCodes.save: meta['l'][1] is a object"),
    ],
    ids=["tensor", "set", "int-key", "nested"],
)
def test_region_codes_save_refuses_unloadable_meta(tmp_path, meta, message):
    path = tmp_path / "codes.pt"
    small_codes().save(path)
    before = folder_state(tmp_path)
    rc = small_codes()
    rc.meta = meta
    with raises(TypeError, message):
        rc.save(path)
    assert folder_state(tmp_path) == before


def test_region_codes_save_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "codes.pt"
    small_codes().save(path)
    before = folder_state(tmp_path)
    disk = FullDisk(monkeypatch, limit=200)
    with pytest.raises(OSError) as info:
        small_codes().save(path)
    assert info.value.errno == errno.ENOSPC and disk.failures == 1
    monkeypatch.undo()
    assert folder_state(tmp_path) == before  # the old file intact, no temporary file left
    assert RegionCodes.load(path).names == ["a", "b"]


def test_region_codes_save_over_a_folder_or_under_a_file(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "file").write_text("keep")
    before = folder_state(tmp_path)
    with pytest.raises(IsADirectoryError):
        small_codes().save(tmp_path / "taken")
    with pytest.raises((NotADirectoryError, FileExistsError)):
        small_codes().save(tmp_path / "file" / "codes.pt")
    assert folder_state(tmp_path) == before


def _torch_file(path: Path, payload: Any) -> Path:
    torch.save(payload, path)
    return path


class _NotAllowed:
    pass


BAD_CODE_FILES = [
    ("text", lambda p: (p.write_text("hello"), p)[1], ValueError, "is not a fastspline codes file (not a torch.save archive)"),
    ("empty", lambda p: (p.write_bytes(b""), p)[1], ValueError, "is not a fastspline codes file"),
    ("truncated", lambda p: (small_codes().save(p), truncated(p))[1], ValueError, "is truncated or corrupt"),
    ("cut-to-header", lambda p: (small_codes().save(p), truncated(p, 0.02))[1], ValueError, "is truncated or corrupt"),
    ("foreign", lambda p: _torch_file(p, {"a": 1}), ValueError, "is a torch file but not a fastspline RegionCodes file"),
    ("object", lambda p: _torch_file(p, {"x": _NotAllowed()}), ValueError, "is truncated or corrupt (UnpicklingError"),
    ("version", lambda p: _torch_file(p, {"format": "fastspline.RegionCodes", "version": 2, "layers": [], "meta": {}}),
     ValueError, "has format version 2, this fastspline reads version 1"),
    ("no-layers", lambda p: _torch_file(p, {"format": "fastspline.RegionCodes", "version": 1, "meta": {}}),
     ValueError, "is malformed (layers or meta missing)"),
    ("bad-layer", lambda p: _torch_file(p, {"format": "fastspline.RegionCodes", "version": 1, "meta": {},
                                             "layers": [{"name": "a", "words": torch.zeros(2, 2), "n_units": 70, "unit_shape": [70]}]}),
     ValueError, "layer 0 of", "is malformed (LayerCodes: words must be int64"),
]


@pytest.mark.parametrize(("what", "make", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in BAD_CODE_FILES],
                         ids=[c[0] for c in BAD_CODE_FILES])
def test_region_codes_load_bad_files(tmp_path, what, make, exc, m):
    path = make(tmp_path / "codes.pt")
    before = folder_state(tmp_path)
    with raises(exc, "RegionCodes.load:", *m):
        RegionCodes.load(path)
    assert folder_state(tmp_path) == before


def test_region_codes_load_missing_or_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        RegionCodes.load(tmp_path / "missing.pt")
    with pytest.raises(IsADirectoryError):
        RegionCodes.load(tmp_path)


def test_region_codes_methods_on_empty_codes():
    empty = RegionCodes({})
    assert empty.count_regions() == 0 and empty.n_samples == 0 and empty.nbytes == 0


# ---------------------------------------------------------------- register_activation


@pytest.mark.parametrize(("value", "shown"), [(nn.ReLU(), "ReLU()"), (int, "<class 'int'>"), ("ReLU", "'ReLU'")],
                         ids=["instance", "not-a-module", "str"])
def test_register_activation_refuses_non_module_classes(value, shown):
    before = list(fs.codes.__globals__["ACTIVATIONS"])
    with raises(TypeError, "register_activation: cls must be an nn.Module subclass", shown):
        fs.register_activation(value)
    assert fs.codes.__globals__["ACTIVATIONS"] == before


# ---------------------------------------------------------------- models

MODEL_CALLS = [
    ("create-name-type", lambda: models.create(3, (1, 8, 8), 10), TypeError, "create: name must be a str, got int"),
    ("create-unknown", lambda: models.create("resnet", (1, 8, 8), 10), ValueError, "create: unknown model 'resnet'; known: vgg11"),
    ("create-depth", lambda: models.create("preresnet21", (1, 8, 8), 10), ValueError, "preresnet: depth must be 9n + 2", "got 21"),
    ("create-shape-int", lambda: models.create("vgg11", 8, 10), TypeError, "create: input_shape must be a sequence of positive ints", "got 8"),
    ("create-shape-str", lambda: models.create("mlp", ("a", 8), 10), TypeError, "create: input_shape must be", "('a', 8)"),
    ("create-shape-zero", lambda: models.create("mlp", (0, 8), 10), TypeError, "create: input_shape must be", "(0, 8)"),
    ("create-vgg-rank", lambda: models.create("vgg11", (8, 8), 10), ValueError, "create: vgg11 needs image inputs (C, H, W)", "(8, 8)"),
    ("create-cnn1d-rank", lambda: models.create("cnn1d", (1, 2, 3), 10), ValueError, "create: cnn1d needs sequence inputs (C, L)"),
    ("create-classes", lambda: models.create("vgg11", (1, 8, 8), "10"), TypeError, "vgg: num_classes must be an int", "'10'"),
    ("create-width", lambda: models.create("vgg11", (1, 8, 8), 10, width=0), ValueError, "vgg: width must be a positive number, got 0"),
    ("create-width-nan", lambda: models.create("cnn1d", (1, 40), 10, width=math.nan), ValueError, "cnn1d: width must be a positive number, got nan"),
    ("build-type", lambda: models.build(None), TypeError, "build: config must be a dict from model.config()", "None"),
    ("build-arch", lambda: models.build({"arch": "x"}), ValueError, "build: unknown arch 'x'; known: vgg, preresnet, mlp, cnn1d"),
    ("build-key", lambda: models.build({"arch": "vgg", "bogus": 1}), ValueError, "build: config", "does not match arch 'vgg'", "bogus"),
    ("build-missing", lambda: models.build({"arch": "mlp"}), ValueError, "does not match arch 'mlp'", "sizes"),
    ("rebuild-length", lambda: models.mlp([4, 8, 3]).rebuild([8, 8]), ValueError, "MLP.rebuild: widths must have 1 entries, got 2"),
    ("rebuild-zero", lambda: models.mlp([4, 8, 3]).rebuild([0]), ValueError, "MLP.rebuild: widths[0] must be >= 1, got 0"),
    ("rebuild-float", lambda: models.mlp([4, 8, 3]).rebuild([1.5]), TypeError, "MLP.rebuild: widths[0] must be an int, got float 1.5"),
    ("rebuild-str", lambda: models.mlp([4, 8, 3]).rebuild("8"), TypeError, "MLP.rebuild: widths must be a sequence of ints, got str"),
    ("mlp-short", lambda: models.mlp([3]), ValueError, "mlp: sizes needs inputs and classes at least, got [3]"),
    ("mlp-type", lambda: models.mlp("abc"), TypeError, "mlp: sizes must be a sequence of ints, got str"),
    ("mlp-bn", lambda: models.mlp([4, 8, 3], batch_norm="yes"), TypeError, "mlp: batch_norm must be a bool, got str"),
    ("mlp-width", lambda: models.mlp([4, 0, 2]), ValueError, "mlp: sizes[1] must be >= 1, got 0"),
    ("vgg-name", lambda: models.vgg("vgg99"), ValueError, "vgg: cfg must be one of", "'vgg99'"),
    ("vgg-empty", lambda: models.vgg([]), ValueError, "vgg: cfg has no conv layer: []"),
    ("vgg-zero", lambda: models.vgg([0]), ValueError, "vgg: cfg[0] must be a positive int or 'M', got 0"),
    ("vgg-input", lambda: models.VGG([8, "M"], input_size=0), ValueError, "vgg: input_size must be 2 positive sizes, got 0"),
    ("cnn1d-negative", lambda: models.cnn1d([8, -2]), ValueError, "cnn1d: cfg[1] must be a positive int or 'M', got -2"),
    ("cnn1d-cfg", lambda: models.cnn1d("abc"), TypeError, "cnn1d: cfg must be a list of widths and 'M', got str"),
    ("preresnet-depth", lambda: models.preresnet(21), ValueError, "preresnet: depth must be 9n + 2", "got 21"),
    ("preresnet-depth-type", lambda: models.preresnet("20"), TypeError, "preresnet: depth must be an int", "'20'"),
    ("preresnet-width", lambda: models.preresnet(20, width=-1), ValueError, "preresnet: width must be a positive number, got -1"),
    ("preresnet-widths", lambda: models.PreResNet(20, widths=[4]), ValueError, "preresnet: depth 20 needs", "widths, got 1"),
    ("channel-select", lambda: models.ChannelSelect(4, 5), ValueError, "ChannelSelect: kept must be in [1, 4], got 5"),
    ("preresnet-default-widths", lambda: models.default_preresnet_widths(21), ValueError, "preresnet: depth must be 9n + 2", "got 21"),
    ("init_weights", lambda: models.init_weights("model"), TypeError, "init_weights: model must be an nn.Module, got str"),
]


@pytest.mark.parametrize(("what", "call", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in MODEL_CALLS],
                         ids=[c[0] for c in MODEL_CALLS])
def test_model_builders(what, call, exc, m):
    with raises(exc, *m):
        call()


def test_rebuild_leaves_the_model_unchanged():
    model = models.mlp([4, 8, 3])
    with leaves_unchanged(model), raises(ValueError, "MLP.rebuild"):
        model.rebuild([0])


# ---------------------------------------------------------------- data

DATA_CALLS = [
    ("digits-seed", lambda: data.digits(seed=-1), ValueError, "digits: seed must be a non-negative int, got -1"),
    ("digits-fraction", lambda: data.digits(test_fraction=1.5), ValueError, "digits: test_fraction must be in (0, 1), got 1.5"),
    ("mnist5k-seed", lambda: data.mnist5k(seed="a"), ValueError, "mnist5k: seed must be a non-negative int, got 'a'"),
    ("mnist5k-fraction", lambda: data.mnist5k(test_fraction=0), ValueError, "mnist5k: test_fraction must be in (0, 1), got 0"),
    ("toy_x-n", lambda: data.toy_x(n=1), ValueError, "toy_x: n must be an int >= 2, got 1"),
    ("toy_x-n-bool", lambda: data.toy_x(n=True), ValueError, "toy_x: n must be an int >= 2, got True"),
    ("toy_x-fraction", lambda: data.toy_x(test_fraction=0), ValueError, "toy_x: test_fraction must be in (0, 1), got 0"),
    ("cifar-root", lambda: data.cifar(3), TypeError, "cifar: root must be a path, got int"),
    ("cifar-classes", lambda: data.cifar("/tmp", num_classes=5), ValueError, "cifar: num_classes must be 10 or 100, got 5"),
    ("cifar-missing", lambda: data.cifar("/nonexistent"), FileNotFoundError, "cifar: missing ['/nonexistent/data_batch_1'", "never downloads"),
    ("load-name", lambda: data.load("nope"), ValueError, "load: unknown dataset 'nope'; known: digits"),
    ("load-root", lambda: data.load("cifar100"), ValueError, "load: cifar100 needs root="),
    ("load-folder-root", lambda: data.load("image-folder"), ValueError, "load: image-folder needs root="),
    ("image_folder-root", lambda: data.image_folder(3), TypeError, "image_folder: root must be a path, got int"),
    ("image_folder-missing", lambda: data.image_folder("/nonexistent"), FileNotFoundError,
     "image_folder: /nonexistent is not a folder", "never downloads"),
    ("image_folder-size", lambda: data.image_folder("/tmp", size=0), ValueError, "image_folder: size must be an int >= 1, got 0"),
    ("image_folder-channels", lambda: data.image_folder("/tmp", channels=4), ValueError, "image_folder: channels must be 1 or 3, got 4"),
    ("image_folder-seed", lambda: data.image_folder("/tmp", seed=-1), ValueError, "image_folder: seed must be a non-negative int, got -1"),
    ("image_folder-fraction", lambda: data.image_folder("/tmp", test_fraction=1), ValueError,
     "image_folder: test_fraction must be in (0, 1), got 1"),
    ("canvas-type", lambda: data.canvas(1, 2), TypeError, "canvas: img0 and img1 must be tensors, got int, int"),
    ("canvas-shape", lambda: data.canvas(torch.zeros(2), torch.zeros(3)), ValueError, "canvas: img0 and img1 must have the same shape, got (2,) and (3,)"),
    ("canvas-dtype", lambda: data.canvas(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)), TypeError,
     "canvas: images must be floating point, got torch.int64"),
    ("canvas-n", lambda: data.canvas(torch.zeros(2), torch.zeros(2), 1), ValueError, "canvas: n must be an int >= 2, got 1"),
    ("canvas-n-float", lambda: data.canvas(torch.zeros(2), torch.zeros(2), 2.0), ValueError, "canvas: n must be an int >= 2, got 2.0"),
    ("canvas_pair-type", lambda: data.canvas_pair([1, 2]), TypeError, "canvas_pair: dataset must be a TensorDataset of (x, y)"),
    ("canvas_pair-x-only", lambda: data.canvas_pair(TensorDataset(torch.zeros(3, 2))), TypeError, "canvas_pair: dataset must be a TensorDataset of (x, y)"),
    ("canvas_pair-one-label", lambda: data.canvas_pair(TensorDataset(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))), ValueError,
     "canvas_pair: every sample has the same label"),
    ("canvas_pair-empty", lambda: data.canvas_pair(TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))), ValueError,
     "canvas_pair: dataset must hold at least two samples, got 0"),
    ("canvas_pair-seed", lambda: data.canvas_pair(TensorDataset(torch.zeros(3, 2), torch.arange(3)), seed=-2), ValueError,
     "canvas_pair: seed must be a non-negative int, got -2"),
    ("probe_subset-type", lambda: data.probe_subset([1], 4), TypeError, "probe_subset: dataset must be a TensorDataset, got list"),
    ("probe_subset-n", lambda: data.probe_subset(TensorDataset(torch.zeros(3, 2)), 0), ValueError, "probe_subset: n must be a positive int, got 0"),
    ("probe_subset-empty", lambda: data.probe_subset(TensorDataset(torch.zeros(0, 2)), 4), ValueError, "probe_subset: dataset is empty"),
]


@pytest.mark.parametrize(("what", "call", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in DATA_CALLS],
                         ids=[c[0] for c in DATA_CALLS])
def test_data_loaders(what, call, exc, m):
    with raises(exc, *m):
        call()


def _image(path: Path, size=(6, 5), mode="RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 120).save(path)


@pytest.mark.parametrize(("what", "make", "message"), [
    ("no classes", lambda root: (root / "x.png").write_bytes(b""), "has no class folders"),
    ("empty class", lambda root: (_image(root / "a" / "1.png"), (root / "b").mkdir(), (root / "b" / "notes.txt").write_text("x")),
     "holds no image"),
    ("not an image", lambda root: (_image(root / "a" / "1.png"), _image(root / "b" / "1.png"), (root / "b" / "2.jpg").write_bytes(b"junk")),
     "cannot read the image"),
    ("truncated", lambda root: (_image(root / "a" / "1.png", (40, 40)), _image(root / "b" / "1.png"),
                                (root / "a" / "1.png").write_bytes((root / "a" / "1.png").read_bytes()[:60])), "cannot read the image"),
    ("val class not in train", lambda root: (_image(root / "train" / "a" / "1.png"), _image(root / "val" / "z" / "1.png")),
     "has classes that"),
])
def test_image_folder_bad_folders(tmp_path, what, make, message):
    make(tmp_path)
    with raises(ValueError, "image_folder:", message):
        data.image_folder(tmp_path)


def _cifar_folder(root: Path, n: int = 2) -> Path:
    """A fake extracted CIFAR-10 folder: five training batches and a test batch of n images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo unpickled",))


def _pickle_to(path: Path, payload: Any) -> None:
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=2)


CIFAR_DAMAGE = [
    ("truncated", lambda p: truncated(p), ValueError, "is not a readable CIFAR batch"),
    ("text", lambda p: p.write_text("not a pickle"), ValueError, "is not a readable CIFAR batch"),
    ("empty", lambda p: p.write_bytes(b""), ValueError, "is not a readable CIFAR batch (EOFError"),
    ("object", lambda p: _pickle_to(p, _Evil()), ValueError, "refusing to unpickle posix.system"),
    ("keys", lambda p: _pickle_to(p, {b"pixels": []}), ValueError, "lacks b'data' or b'labels'"),
    ("shape", lambda p: _pickle_to(p, {b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}), ValueError,
     "has data (2, 10) and 2 labels, expected [N, 3072] and N"),
    ("labels", lambda p: _pickle_to(p, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}), ValueError,
     "cifar: labels outside [0, 10)"),
]


@pytest.mark.parametrize(("what", "damage", "exc", "message"), CIFAR_DAMAGE, ids=[c[0] for c in CIFAR_DAMAGE])
def test_cifar_bad_files(tmp_path, capfd, what, damage, exc, message):
    folder = _cifar_folder(tmp_path)
    assert len(data.cifar(tmp_path).train) == 10  # the fake folder is valid before the damage
    damage(folder / "data_batch_3")
    before = folder_state(tmp_path)
    with raises(exc, message):
        data.cifar(tmp_path)
    assert folder_state(tmp_path) == before
    assert "unpickled" not in capfd.readouterr().out


# ---------------------------------------------------------------- train

def test_train_helpers():
    with raises(ValueError, "seed_everything: seed must be a non-negative int, got -1"):
        train.seed_everything(-1)
    with raises(ValueError, "seed_everything: seed must be a non-negative int, got '1'"):
        train.seed_everything("1")
    with raises(TypeError, "count_flops: model must be an nn.Module, got int"):
        train.count_flops(3, X)
    with raises(TypeError, "count_flops: inputs must be a tensor, got list"):
        train.count_flops(nn.Linear(4, 2), [1])
    with raises(TypeError, "bn_l1_penalty: model must be an nn.Module, got int"):
        train.bn_l1_penalty(3, 0.1)


def test_count_flops_leaves_the_model_unchanged(model):
    with leaves_unchanged(model), pytest.raises(RuntimeError, match="mat1 and mat2"):
        train.count_flops(model, torch.randn(3, 9))
    with leaves_unchanged(model):
        assert train.count_flops(model, X, Y) > 0


EVALUATE_DATA = [
    ("str", "data.pt", TypeError, "evaluate: data must be a TensorDataset, an (x, y) pair of tensors or a Dataset, got str"),
    ("x-only", TensorDataset(X), ValueError, "evaluate: data must hold (x, y) tensors, got 1 tensor(s)"),
    ("lengths", (X, Y[:5]), ValueError, "evaluate: data has 10 inputs but 5 labels"),
    ("empty", (X[:0], Y[:0]), ValueError, "evaluate: data is empty"),
    ("float-labels", (X, Y.float()), TypeError, "evaluate: data labels must be int64 class indices, got torch.float32"),
    ("wrong-width", (torch.randn(10, 9), Y), RuntimeError, "mat1 and mat2"),
]


@pytest.mark.parametrize(("what", "value", "exc", "message"), EVALUATE_DATA, ids=[c[0] for c in EVALUATE_DATA])
def test_evaluate_bad_data(model, what, value, exc, message):
    with leaves_unchanged(model), raises(exc, message):
        train.evaluate(model, value)


def test_evaluate_model_type():
    with raises(TypeError, "evaluate: model must be an nn.Module, got str"):
        train.evaluate("model.pt", (X, Y))


FIT_ARGUMENTS = [
    ("model", dict(model="m"), TypeError, "fit: model must be an nn.Module, got str"),
    ("epochs", dict(epochs=0), ValueError, "fit: epochs must be >= 1, got 0"),
    ("epochs-float", dict(epochs=2.0), TypeError, "fit: epochs must be an int, got float 2.0"),
    ("lr", dict(lr=0), ValueError, "fit: lr must be > 0.0, got 0"),
    ("lr-nan", dict(lr=math.nan), TypeError, "fit: lr must be a finite number, got nan"),
    ("momentum", dict(momentum=-1), ValueError, "fit: momentum must be >= 0.0, got -1"),
    ("milestones", dict(milestones="12"), TypeError, "fit: milestones must be a sequence of ints, got str"),
    ("milestones-item", dict(milestones=[0]), ValueError, "fit: milestones[] must be >= 1, got 0"),
    ("callbacks", dict(callbacks=[3]), TypeError, "fit: callbacks[0] is not callable: 3"),
    ("callbacks-type", dict(callbacks=print), TypeError, "fit: callbacks must be a sequence of callables"),
    ("resume", dict(resume=True), ValueError, "fit: resume=True needs checkpoint="),
    ("augment", dict(augment=3), TypeError, "fit: augment must be callable or None, got int"),
    ("batch_size", dict(batch_size=0), ValueError, "fit: batch_size must be >= 1, got 0"),
    ("train-type", dict(train=[1, 2, 3]), TypeError, "fit: train must be a TensorDataset, an (x, y) pair"),
    ("train-empty", dict(train=(X[:0], Y[:0])), ValueError, "fit: train is empty"),
    ("train-labels", dict(train=(X, Y.float())), TypeError, "fit: train labels must be int64 class indices, got torch.float32"),
    ("test-lengths", dict(test=(X, Y[:3])), ValueError, "fit: test has 10 inputs but 3 labels"),
]


@pytest.mark.parametrize(("what", "kwargs", "exc", "message"), FIT_ARGUMENTS, ids=[c[0] for c in FIT_ARGUMENTS])
def test_fit_bad_arguments(model, what, kwargs, exc, message):
    kwargs = dict(kwargs)
    args = [kwargs.pop("model", model), kwargs.pop("train", (X, Y)), kwargs.pop("test", None), kwargs.pop("epochs", 1)]
    with leaves_unchanged(model), raises(exc, message):
        train.fit(*args, progress=False, **kwargs)


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_fit_stops_on_a_non_finite_loss_before_the_step(model, bad):
    x = X.clone()
    x[3, 1] = bad
    before = ModelState(model)
    with raises(FloatingPointError, "fit: the training loss is nan at epoch 1, batch 0", "diverged"):
        train.fit(model, (x, Y), None, 2, progress=False)
    after = ModelState(model)
    for name, value in before.tensors.items():
        if "running" not in name and "num_batches" not in name:  # BN statistics move in the forward
            assert torch.equal(after.tensors[name], value), name


def _checkpoint(tmp_path: Path, model: nn.Module) -> Path:
    path = tmp_path / "ckpt.pt"
    train.fit(model, (X, Y), None, 1, checkpoint=path, progress=False)
    return path


def test_fit_checkpoint_on_a_full_disk(model, tmp_path, monkeypatch):
    path = _checkpoint(tmp_path, model)
    before = folder_state(tmp_path)
    FullDisk(monkeypatch, limit=1000)
    with pytest.raises(OSError) as info:
        train.fit(model, (X, Y), None, 2, checkpoint=path, resume=True, progress=False)
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    monkeypatch.undo()
    assert folder_state(tmp_path) == before
    assert train.load_checkpoint(path)["epoch"] == 1


def test_fit_resume_from_a_truncated_checkpoint(model, tmp_path):
    path = truncated(_checkpoint(tmp_path, model))
    fresh = Net()
    before = folder_state(tmp_path)
    with leaves_unchanged(fresh), raises(ValueError, "load_checkpoint:", "is truncated or corrupt"):
        train.fit(fresh, (X, Y), None, 2, checkpoint=path, resume=True, progress=False)
    assert folder_state(tmp_path) == before


def test_fit_resume_from_another_models_checkpoint(model, tmp_path):
    path = _checkpoint(tmp_path, model)
    other = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    other_named = nn.Sequential()
    other_named.fc1, other_named.bn1, other_named.act1, other_named.fc2 = nn.Linear(4, 70), nn.BatchNorm1d(70), nn.ReLU(), nn.Linear(70, 2)
    for target in (other, other_named):  # other keys; same keys with one shape different
        with leaves_unchanged(target), raises(ValueError, "fit: cannot resume from", "Error(s) in loading state_dict"):
            train.fit(target, (X, Y), None, 2, checkpoint=path, resume=True, progress=False)


BAD_CHECKPOINTS = [
    ("text", lambda p: p.write_text("{}"), ValueError, "is not a fastspline training checkpoint (not a torch.save archive)"),
    ("truncated", lambda p: truncated(p), ValueError, "is truncated or corrupt"),
    ("foreign", lambda p: torch.save({"model": {}}, p), ValueError, "is not a fastspline training checkpoint"),
    ("object", lambda p: torch.save({"x": _NotAllowed()}, p), ValueError, "is truncated or corrupt (UnpicklingError"),
    ("version", lambda p: torch.save({"format": "fastspline.train.checkpoint", "version": 9}, p), ValueError, "has version 9, expected 1"),
]


@pytest.mark.parametrize(("what", "damage", "exc", "message"), BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_load_checkpoint_bad_files(model, tmp_path, what, damage, exc, message):
    path = _checkpoint(tmp_path, model)
    damage(path)
    before = folder_state(tmp_path)
    with raises(exc, "load_checkpoint:", message):
        train.load_checkpoint(path)
    assert folder_state(tmp_path) == before


def test_load_checkpoint_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        train.load_checkpoint(tmp_path / "missing.pt")


def test_atomic_save_refuses_unpicklable_objects_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    train.atomic_save({"a": 1}, path)
    before = folder_state(tmp_path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        train.atomic_save({"f": lambda: 0}, path)
    assert folder_state(tmp_path) == before


def test_evaluate_and_codes_leave_a_model_unchanged_when_they_succeed(model):
    with leaves_unchanged(model):
        train.evaluate(model, (X, Y))
        fs.codes(model, X, progress=False)
        fs.codes(model, X, layers=["bn1"], where="post", progress=False)
    calls = model.user_calls
    model(X)
    assert model.user_calls == calls + 1  # the user's own hook still runs


# ---------------------------------------------------------------- early bird

PROBE = torch.randn(8, 4, generator=torch.Generator().manual_seed(3))

EARLYBIRD_CALLS = [
    ("probe-type", lambda: SplineEarlyBird([1]), TypeError, "SplineEarlyBird: probe must be a tensor [N, ...], got list"),
    ("probe-1d", lambda: SplineEarlyBird(torch.randn(8)), ValueError, "SplineEarlyBird: probe must be a non-empty floating tensor", "(8,)"),
    ("probe-empty", lambda: SplineEarlyBird(torch.randn(0, 4)), ValueError, "probe must be a non-empty floating tensor", "(0, 4)"),
    ("probe-int", lambda: SplineEarlyBird(torch.zeros(8, 4, dtype=torch.long)), ValueError, "probe must be a non-empty floating tensor", "torch.int64"),
    ("threshold", lambda: SplineEarlyBird(PROBE, threshold=1.5), ValueError, "SplineEarlyBird: threshold must be a number in [0, 1], got 1.5"),
    ("threshold-nan", lambda: SplineEarlyBird(PROBE, threshold=math.nan), ValueError, "SplineEarlyBird: threshold must be a number in [0, 1], got nan"),
    ("threshold-str", lambda: SplineEarlyBird(PROBE, threshold="a"), ValueError, "threshold must be a number in [0, 1], got 'a'"),
    ("report-type", lambda: SplineEarlyBird(PROBE, report_thresholds="ab"), TypeError, "report_thresholds must be a sequence of numbers, got str"),
    ("report-value", lambda: SplineEarlyBird(PROBE, report_thresholds=[2]), ValueError, "report_thresholds[] must be a number in [0, 1], got 2"),
    ("window", lambda: SplineEarlyBird(PROBE, window=0), ValueError, "SplineEarlyBird: window must be >= 1, got 0"),
    ("window-float", lambda: SplineEarlyBird(PROBE, window=1.5), TypeError, "SplineEarlyBird: window must be an int, got float 1.5"),
    ("history_depth", lambda: SplineEarlyBird(PROBE, history_depth=1), ValueError, "history_depth must be an int >= window (3), got 1"),
    ("keep_history", lambda: SplineEarlyBird(PROBE, keep_history="yes"), TypeError, "keep_history must be a bool, got str"),
    ("batch_size", lambda: SplineEarlyBird(PROBE, batch_size=0), ValueError, "SplineEarlyBird: batch_size must be an int >= 1 or None, got 0"),
    ("probe_batch_size", lambda: probe_batch_size(-1), ValueError, "probe_batch_size: units must be an int >= 0, got -1"),
    ("probe_batch_size-float", lambda: probe_batch_size(2.5), ValueError, "probe_batch_size: units must be an int >= 0, got 2.5"),
    ("mask-ratio", lambda: MaskEarlyBird(1.0), ValueError, "MaskEarlyBird: ratio must be in [0, 1), got 1.0"),
    ("mask-ratio-str", lambda: MaskEarlyBird("a"), ValueError, "MaskEarlyBird: ratio must be in [0, 1), got 'a'"),
    ("mask-window", lambda: MaskEarlyBird(0.5, window=1), ValueError, "MaskEarlyBird: window must be >= 2, got 1"),
    ("mask-threshold", lambda: MaskEarlyBird(0.5, threshold=-0.1), ValueError, "MaskEarlyBird: threshold must be a number in [0, 1], got -0.1"),
    ("step_mask-dtype", lambda: MaskEarlyBird(0.5).step_mask(torch.zeros(3), 0), TypeError, "MaskEarlyBird.step_mask: mask must be a 1-D bool tensor, got torch.float32 (3,)"),
    ("step_mask-2d", lambda: MaskEarlyBird(0.5).step_mask(torch.zeros(3, 3, dtype=torch.bool), 0), TypeError, "mask must be a 1-D bool tensor, got torch.bool (3, 3)"),
    ("bn_mask-model", lambda: bn_mask("m", 0.5), TypeError, "bn_mask: model must be an nn.Module, got str"),
    ("bn_mask-ratio", lambda: bn_mask(nn.BatchNorm1d(3), 1.0), ValueError, "bn_mask: ratio must be in [0, 1), got 1.0"),
    ("bn_mask-no-bn", lambda: bn_mask(nn.Linear(3, 3), 0.5), ValueError, "bn_mask: Linear has no affine BatchNorm layer"),
    ("bn_mask-layers", lambda: bn_mask(nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3)), 0.5, layers=["1"]), ValueError,
     "bn_mask: layers must name affine BatchNorm modules of the model, got '1'"),
    ("bn_mask-empty", lambda: bn_mask(nn.Sequential(nn.BatchNorm1d(3)), 0.5, layers=[]), ValueError, "bn_mask: layers is empty"),
]


@pytest.mark.parametrize(("what", "call", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in EARLYBIRD_CALLS],
                         ids=[c[0] for c in EARLYBIRD_CALLS])
def test_earlybird_arguments(what, call, exc, m):
    with raises(exc, *m):
        call()


def _stepped_spline(model: nn.Module, epochs: int = 2) -> SplineEarlyBird:
    eb = SplineEarlyBird(PROBE, window=1)
    for epoch in range(epochs):
        eb.step(model, epoch)
    return eb


def _detector_state(eb: Any) -> str:
    """A comparable snapshot of a detector (state_dict with tensors as lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.tolist()
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return json.dumps(plain(eb.state_dict()), sort_keys=True)


def test_spline_earlybird_step_errors_leave_detector_and_model_unchanged(model):
    eb = _stepped_spline(model)
    before = _detector_state(eb)
    with leaves_unchanged(model):
        with raises(TypeError, "SplineEarlyBird.step: model must be an nn.Module, got str"):
            eb.step("model", 2)
        with raises(ValueError, "SplineEarlyBird.step: epochs must increase and be >= 0, got 1 after 1"):
            eb.step(model, 1)
        with raises(TypeError, "SplineEarlyBird.step: epoch must be an int, got str '2'"):
            eb.step(model, "2")
    plain = nn.Sequential(nn.Linear(4, 3))
    with leaves_unchanged(plain), raises(ValueError, "codes: found no piecewise-linear layer in Sequential"):
        eb.step(plain, 2)
    with torch.no_grad():
        model.fc1.weight[0, 0] = math.nan
    with leaves_unchanged(model), raises(ValueError, "codes: layer 'act1' has NaN activations"):
        eb.step(model, 2)  # a diverged model must not look like a converged partition
    assert _detector_state(eb) == before


MALFORMED_STATES = [
    ("missing-key", lambda s: s.pop("fifo")),
    ("bad-epochs", lambda s: s.__setitem__("epochs", ["x"])),
    ("bad-pairs", lambda s: s.__setitem__("pairs", [[1, 2]])),
    ("bad-fifo", lambda s: s.__setitem__("fifo", [[0, [["act1", torch.zeros(8, 1), 70, [70]]]]])),
]


@pytest.mark.parametrize(("what", "damage"), MALFORMED_STATES, ids=[c[0] for c in MALFORMED_STATES])
def test_spline_earlybird_load_state_dict_malformed(model, what, damage):
    eb = _stepped_spline(model)
    state = eb.state_dict()
    damage(state)
    before = _detector_state(eb)
    with raises(ValueError, "SplineEarlyBird.load_state_dict: malformed state"):
        eb.load_state_dict(state)
    assert _detector_state(eb) == before
    with raises(TypeError, "SplineEarlyBird.load_state_dict: state must be a dict from state_dict(), got list"):
        eb.load_state_dict([])


def test_mask_earlybird_errors_leave_detector_and_model_unchanged(model):
    eb = MaskEarlyBird(0.5, window=2)
    eb.step(model, 0)
    before = _detector_state(eb)
    with raises(ValueError, "MaskEarlyBird.step_mask: mask has 5 entries, earlier masks 70"):
        eb.step_mask(torch.zeros(5, dtype=torch.bool), 1)
    with torch.no_grad():
        model.bn1.weight[3] = math.inf
    with leaves_unchanged(model), raises(ValueError, "bn_mask: BatchNorm weights of Net hold NaN or inf"):
        eb.step(model, 1)
    state = eb.state_dict()
    state["fifo"] = [[0, torch.zeros(70)]]
    with raises(ValueError, "MaskEarlyBird.load_state_dict: malformed state", "fifo mask of epoch 0 is not a 1-D bool tensor"):
        eb.load_state_dict(state)
    with raises(ValueError, "MaskEarlyBird.load_state_dict: malformed state (KeyError"):
        eb.load_state_dict({"epochs": []})
    assert _detector_state(eb) == before


def test_earlybird_state_round_trip_still_works(model):
    """The validation above must not refuse the states the detectors write."""
    eb = _stepped_spline(model, 3)
    copy = SplineEarlyBird(PROBE, window=1)
    copy.load_state_dict(eb.state_dict())
    assert _detector_state(copy) == _detector_state(eb)
    mask = MaskEarlyBird(0.5, window=2)
    mask.step(model, 0)
    mask.step(model, 1)
    mask_copy = MaskEarlyBird(0.5, window=2)
    mask_copy.load_state_dict(mask.state_dict())
    assert _detector_state(mask_copy) == _detector_state(mask)


# ---------------------------------------------------------------- backends API


def test_backends_api():
    # The four built in, then any the test session registers (cuda@sim, cuda@gpu, triton@gpu).
    assert backends.names()[:4] == ["cpu", "cuda", "reference", "triton"]
    with raises(ValueError, f"backend must be one of {backends.names()}, got 'nope'"):
        backends.load("nope")
    assert backends.select("xla") == "reference"  # an unknown device type falls back to the spec
    assert set(backends.available()) == set(backends.names())


@pytest.mark.skipif(backends.available()["cpu"] is not None, reason="the cpu backend is not built")
def test_forced_isa_restores_after_an_exception():
    cpu = backends.load("cpu")
    before = cpu.isa()
    with pytest.raises(KeyError):
        with cpu.forced_isa("scalar"):
            raise KeyError("inside")
    assert cpu.isa() == before
    with raises(ValueError, "isa 'avx512' is not supported by this CPU") if "avx512" not in cpu.supported_isas() else contextlib.nullcontext():
        cpu.set_isa("avx512")
    cpu.set_isa(before)


def test_build_info_describes_every_backend():
    info = fs.build_info()
    assert set(info["backends"]) == set(backends.names()) and isinstance(info["cpu_extension"], bool)


# ---------------------------------------------------------------- command line

TRAIN = ["train", "--model", "mlp", "--data", "toy-x", "--quiet"]
CLI_USAGE_ERRORS = [
    ("no-command", [], "the following arguments are required: command"),
    ("unknown-command", ["prune-all"], "invalid choice: 'prune-all'"),
    ("train-required", ["train"], "the following arguments are required: --model, --data"),
    ("train-model", ["train", "--model", "resnet", "--data", "digits"], "argument --model: invalid choice: 'resnet'"),
    ("train-data", ["train", "--model", "mlp", "--data", "imagenet"], "argument --data: invalid choice: 'imagenet'"),
    ("train-epochs-text", [*TRAIN, "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    ("train-epochs", [*TRAIN, "--epochs", "0"], "--epochs must be >= 1, got 0"),
    ("train-batch", [*TRAIN, "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("train-width", [*TRAIN, "--width", "0"], "--width must be > 0, got 0.0"),
    ("train-width-nan", [*TRAIN, "--width", "nan"], "--width must be > 0, got nan"),
    ("train-eb", [*TRAIN, "--eb", "none", "spline"], "--eb none cannot be combined with other detectors"),
    ("train-eb-threshold", [*TRAIN, "--eb-threshold", "2"], "--eb-threshold values must be in [0, 1], got 2.0"),
    ("train-eb-window", [*TRAIN, "--eb-window", "0"], "--eb-window must be >= 1 and --mask-window >= 2, got 0, 5"),
    ("train-mask-ratio", [*TRAIN, "--mask-ratio", "1"], "--mask-ratio must be in [0, 1), got 1.0"),
    ("train-probe", [*TRAIN, "--probe-size", "0"], "--probe-size must be >= 1 and --canvas-size >= 2, got 0, 32"),
    ("train-threads", [*TRAIN, "--threads", "0"], "--threads must be >= 1, got 0"),
    ("train-seed", [*TRAIN, "--seed", "-1"], "--seed must be >= 0, got -1"),
    ("train-lr", [*TRAIN, "--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    ("train-lr-nan", [*TRAIN, "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    ("train-momentum", [*TRAIN, "--momentum", "-1"], "--momentum must be a finite number >= 0, got -1.0"),
    ("train-weight-decay", [*TRAIN, "--weight-decay", "inf"], "--weight-decay must be a finite number >= 0, got inf"),
    ("train-sparsity", [*TRAIN, "--sparsity", "-1"], "--sparsity must be a finite number >= 0, got -1.0"),
    ("train-milestones", [*TRAIN, "--milestones", "0"], "--milestones must be >= 1, got [0]"),
    ("train-history-depth", [*TRAIN, "--history-depth", "1"], "--history-depth must be >= --eb-window (3), got 1"),
    ("train-device", [*TRAIN, "--device", "gpu"], "--device 'gpu' is not a torch device"),
    ("train-cifar-root", ["train", "--model", "vgg11", "--data", "cifar10", "--quiet"], "--data cifar10 needs --data-root"),
    ("train-data-root", [*TRAIN, "--data-root", "missing"], "--data-root 'missing' is not a folder"),
    ("train-out-file", [*TRAIN, "--out", __file__], f"--out {__file__!r}: {__file__!r} is a file, not a folder"),
    ("run-seeds", ["run", "--model", "mlp", "--data", "toy-x", "--seeds", "0"], "--seeds must be >= 1, got 0"),
    ("run-policy", ["run", "--model", "mlp", "--data", "toy-x", "--policy", "magic"], "--policy must be among spline-layerwise"),
    ("run-ratio", ["run", "--model", "mlp", "--data", "toy-x", "--ratio", "2"], "--ratio must be in (0, 1), got 2.0"),
    ("run-seed", ["run", "--model", "mlp", "--data", "toy-x", "--seed", "-1"], "--seed must be >= 0, got -1"),
    ("run-device", ["run", "--model", "mlp", "--data", "toy-x", "--device", "gpu"], "--device 'gpu' is not a torch device"),
    ("run-lr", ["run", "--model", "mlp", "--data", "toy-x", "--lr", "0"], "--lr must be in (0, inf), got 0.0"),
    ("run-cifar-root", ["run", "--model", "vgg11", "--data", "cifar100"], "--data cifar100 needs --data-root"),
    ("run-data-root", ["run", "--model", "vgg11", "--data", "cifar10", "--data-root", "missing"], "--data-root 'missing' is not a folder"),
    ("run-out-file", ["run", "--model", "mlp", "--data", "toy-x", "--out", __file__], "is a file, not a folder"),
    ("demo-epochs", ["demo", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    ("demo-out-file", ["demo", "--out", __file__], "is a file, not a folder"),
    ("plot-kind", ["plot"], "the following arguments are required: kind"),
    ("plot-kind-name", ["plot", "heat", "x"], "argument kind: invalid choice: 'heat'"),
    ("plot-source", ["plot", "partition", "missing-run"], "source 'missing-run' does not exist"),
    ("plot-eb-source", ["plot", "eb", "missing/history.json"], "source 'missing/history.json' does not exist"),
    ("plot-out-dir-file", ["plot", "eb", str(Path(__file__).parent), "--out-dir", __file__], "--out-dir", "is a file, not a folder"),
    ("plot-out-dir-under-a-file", ["plot", "eb", str(Path(__file__).parent), "--out-dir", f"{__file__}/plots"],
     f"--out-dir '{__file__}/plots': {__file__!r} is a file"),  # was: a traceback from mkdir
    ("bench-name", ["bench"], "the following arguments are required: name"),
    ("bench-unknown", ["bench", "faiss"], "argument name: invalid choice: 'faiss'"),
    ("bench-results-file", ["bench", "--results", __file__, "ops"], "--results", "is a file, not a folder"),
]


@pytest.mark.parametrize(("what", "argv", *("messages",)), [(c[0], c[1], c[2:]) for c in CLI_USAGE_ERRORS],
                         ids=[c[0] for c in CLI_USAGE_ERRORS])
def test_cli_usage_errors(tmp_path, capsys, monkeypatch, what, argv, messages):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert all(m in err for m in messages), err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())  # a refused command writes nothing


def test_cli_train_data_errors(tmp_path):
    """Data that fails to load (the folder exists, the files do not): the loader's
    error, and no run folder (it is made once data and model are there)."""
    (tmp_path / "cifar").mkdir()
    out = tmp_path / "run"
    with raises(FileNotFoundError, "cifar: missing", "never downloads"):
        cli.main(["train", "--model", "vgg11", "--data", "cifar10", "--data-root", str(tmp_path / "cifar"), "--out", str(out), "--quiet"])
    assert not out.exists()
    with raises(FileNotFoundError, "cifar: missing"):
        cli.main(["run", "--model", "vgg11", "--data", "cifar10", "--data-root", str(tmp_path / "cifar"), "--out", str(out), "--quiet"])
    assert not out.exists()


def test_cli_plot_damaged_sources(tmp_path, capsys):
    """A run folder's damaged files end `plot` with their name (SystemExit with a message), no traceback."""
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(SystemExit, match=r"fastspline plot: load_model: .*notes.txt' is not a model file"):
        cli.main(["plot", "partition", str(tmp_path / "notes.txt")])
    (tmp_path / "history.json").write_text('{"records": [1, 2')
    with pytest.raises(SystemExit, match=r"fastspline plot: .*history.json is not valid JSON"):
        cli.main(["plot", "eb", str(tmp_path)])
    (tmp_path / "history.json").write_text("[1]")
    with pytest.raises(SystemExit, match=r"history.json holds a list, expected a JSON object"):
        cli.main(["plot", "eb", str(tmp_path / "history.json")])
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(SystemExit, match=r"results.json is not valid JSON"):
        cli.main(["plot", "pruning", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "notes.txt", "results.json"]  # no PNG


def test_cli_train_resume_from_a_truncated_checkpoint(tmp_path):
    out = tmp_path / "run"
    argv = [*TRAIN, "--epochs", "1", "--eb", "none", "--out", str(out)]
    assert cli.main(argv) == 0
    truncated(out / "checkpoint.pt")
    before = folder_state(out)
    with raises(ValueError, "load_checkpoint:", "checkpoint.pt", "is truncated or corrupt"):
        cli.main([*TRAIN, "--epochs", "2", "--eb", "none", "--out", str(out), "--resume"])
    assert folder_state(out) == before


def test_cli_write_json_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "history.json"
    cli.write_json(path, {"epoch": 1, "distance": math.nan})
    assert path.read_text() == '{\n "epoch": 1,\n "distance": null\n}\n'  # indent 1, NaN as null
    umask = os.umask(0o022)  # this test's thread only; restored below
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # open()'s mode, not mkstemp's 0600
    before = folder_state(tmp_path)
    with pytest.raises(TypeError, match="not JSON serializable"):
        cli.write_json(path, {"model": nn.ReLU()})
    assert folder_state(tmp_path) == before
    FullDisk(monkeypatch, limit=5)
    with pytest.raises(OSError) as info:
        cli.write_json(path, {"epoch": 2, "records": list(range(100))})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert folder_state(tmp_path) == before


# ---------------------------------------------------------------- pruning, pipeline, viz, distributed

def _optional(name: str) -> Any:
    """The module when it exists (these four are being written now), else None."""
    return importlib.import_module(name) if importlib.util.find_spec(name) else None


pruning = _optional("fastspline.pruning")
pipeline = _optional("fastspline.pipeline")
viz = _optional("fastspline.viz")
distributed = _optional("fastspline.distributed")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    m = models.mlp([4, 70, 3])
    m.eval()
    next(m.parameters()).requires_grad_(False)
    return m


PRUNING_CALLS = [
    ("plan-model", lambda m: pruning.plan("m", X, 0.5), TypeError, "plan: model must be an nn.Module, got str"),
    ("plan-ratio", lambda m: pruning.plan(m, X, 1.5), ValueError, "plan: ratio must be a number in [0, 1), got 1.5"),
    ("plan-ratio-nan", lambda m: pruning.plan(m, X, math.nan), ValueError, "plan: ratio must be a number in [0, 1), got nan"),
    ("plan-policy", lambda m: pruning.plan(m, X, 0.5, policy="magic"), ValueError, "plan: unknown policy 'magic'; known: spline-layerwise"),
    ("plan-merge", lambda m: pruning.plan(m, X, 0.5, merge="x"), ValueError, "plan: unknown merge 'x'; known: none, scale, affine"),
    ("plan-budget", lambda m: pruning.plan(m, X, 0.5, budget="x"), ValueError, "plan: unknown budget 'x'; known: channels, flops"),
    ("plan-empty-probe", lambda m: pruning.plan(m, X[:0], 0.5), ValueError, "plan: probe (Tensor) yielded no inputs"),
    ("plan-nan-probe", lambda m: pruning.plan(m, torch.full((8, 4), math.nan), 0.5), ValueError, "codes: layer", "has NaN activations"),
    ("plan-probe-width", lambda m: pruning.plan(m, torch.randn(8, 5), 0.5), RuntimeError, "mat1 and mat2 shapes cannot be multiplied"),
    ("apply-model", lambda m: pruning.apply(pruning.plan(m, X, 0.5), "m"), TypeError, "apply: model must be an nn.Module, got str"),
    ("apply-plan", lambda m: pruning.apply("plan", m), TypeError, "apply: plan must be a PrunePlan from fastspline.pruning.plan, got str"),
    ("recalibrate-model", lambda m: pruning.recalibrate_bn("m", X), TypeError, "recalibrate_bn: model must be an nn.Module, got str"),
    ("recalibrate-empty", lambda m: pruning.recalibrate_bn(m, X[:0]), ValueError, "recalibrate_bn: data yielded no batch of 2 or more inputs"),
    ("recalibrate-batches", lambda m: pruning.recalibrate_bn(m, X, max_batches=0), ValueError, "recalibrate_bn: max_batches must be >= 1, got 0"),
]


@pytest.mark.skipif(pruning is None, reason="fastspline.pruning not present")
@pytest.mark.parametrize(("what", "call", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in PRUNING_CALLS],
                         ids=[c[0] for c in PRUNING_CALLS])
def test_pruning_bad_inputs(what, call, exc, m):
    model = _mlp()
    with leaves_unchanged(model), raises(exc, *m):
        call(model)


@pytest.mark.skipif(pruning is None, reason="fastspline.pruning not present")
def test_pruning_plan_of_another_model_leaves_both_unchanged():
    model = _mlp()
    plan = pruning.plan(model, X, 0.5)
    other = models.mlp([4, 30, 3])
    for call, name in ((pruning.apply, "apply"), (pruning.mask, "mask")):
        with leaves_unchanged(other), raises(ValueError, f"{name}: layer", "has 30 units but the plan was made for 70"):
            call(plan, other)


@pytest.mark.skipif(pipeline is None, reason="fastspline.pipeline not present")
def test_pipeline_config_and_seeds():
    with raises(ValueError, "PipelineConfig: ratio must be in (0, 1), got 2"):
        pipeline.PipelineConfig(ratio=2).check()
    with raises(ValueError, "PipelineConfig: model must be one of vgg11", "got 'resnet'"):
        pipeline.PipelineConfig(model="resnet").check()
    with raises(ValueError, "seeds must be a non-empty sequence of ints, got []"):
        pipeline.run_pipeline(pipeline.PipelineConfig(), seeds=[])


@pytest.mark.skipif(viz is None, reason="fastspline.viz not present")
def test_viz_bad_inputs(tmp_path):
    with raises(ValueError, "grid_2d: bounds need xmin < xmax and ymin < ymax"):
        viz.grid_2d(-1)
    with raises(ValueError, "grid_2d: resolution must be in [2, 8192], got 1"):
        viz.grid_2d(5, 1)
    with raises(TypeError, "partition_2d: model must be an nn.Module, got str"):
        viz.partition_2d("m")
    model = _mlp()
    with leaves_unchanged(model), raises(ValueError, "partition_2d: MLP could not run on inputs of shape (2,)"):
        viz.partition_2d(model, resolution=4)
    with raises(FileNotFoundError, "read_history: no"):
        viz.read_history(tmp_path / "history.json")
    (tmp_path / "history.json").write_text('{"records": [1, 2')
    with raises(ValueError, "read_history:", "is not valid JSON"):
        viz.read_history(tmp_path / "history.json")
    (tmp_path / "history.json").write_text("[1]")
    with raises(ValueError, "read_history:", "holds a list, expected a JSON object"):
        viz.read_history(tmp_path / "history.json")
    with raises(FileNotFoundError, "load_model: no file"):
        viz.load_model(tmp_path / "none.pt")
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    with raises(ValueError, "load_model:", "lacks 'model'"):
        viz.load_model(tmp_path / "foreign.pt")
    with raises(TypeError, "earlybird_heatmap: history must be a run folder", "got int"):
        viz.earlybird_heatmap(3)
    with raises(ValueError, "canvas_contours: img0 and img1 must be floating tensors of one shape"):
        viz.canvas_contours(model, torch.zeros(3), torch.zeros(4))


@pytest.mark.skipif(distributed is None, reason="fastspline.distributed not present")
def test_distributed_without_a_process_group():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        pytest.skip("a process group is initialised")
    words = torch.zeros(3, 1, dtype=torch.int64)
    for name, call in [
        ("distributed.codes", lambda: distributed.codes(nn.ReLU(), X)),
        ("distributed.hamming_cdist", lambda: distributed.hamming_cdist(words)),
        ("distributed.distance", lambda: distributed.distance(small_codes(), small_codes())),
        ("broadcast_plan", lambda: distributed.broadcast_plan(None)),
        ("shard_range", lambda: distributed.shard_range(10)),
    ]:
        with raises(RuntimeError, f"{name}: the default process group is not initialised", "init_process_group"):
            call()
    with raises(ValueError, "shard_range: n must be an int >= 0, got -1"):
        distributed.shard_range(-1)
    with raises(ValueError, "shard_range: rank must be an int in [0, 2), got 3"):
        distributed.shard(torch.zeros(10), rank=3, world_size=2)


SPLINE_CODES = torch.tensor([[5, 0], [7, 1], [-1, 3], [0, 2]], dtype=torch.int64)  # 4 units, 100 bits
SPLINE_ORDER_CALLS = [
    ("codes-type", dict(codes=[[1]]), TypeError, "spline_order: codes must be an int64 tensor [n_units, words], got list"),
    ("codes-dtype", dict(codes=SPLINE_CODES.int()), TypeError, "spline_order: codes must be an int64 tensor", "torch.int32 (4, 2)"),
    ("codes-1d", dict(codes=SPLINE_CODES[0]), TypeError, "spline_order: codes must be an int64 tensor", "(2,)"),
    ("n_bits-0", dict(n_bits=0), ValueError, "spline_order: n_bits must be an int in [1, 64 * words = 128], got 0"),
    ("n_bits-wide", dict(n_bits=129), ValueError, "spline_order: n_bits must be an int in [1, 64 * words = 128], got 129"),
    ("n_bits-float", dict(n_bits=100.0), ValueError, "spline_order: n_bits must be an int", "got 100.0"),
    ("n_bits-layout", dict(n_bits=60), ValueError, "spline_order: codes have 2 words per unit, but n_bits = 60", "take 1"),
    ("importance-length", dict(importance=[1.0, 2.0]), ValueError, "spline_order: importance must have shape (4,)", "got (2,)"),
    ("importance-text", dict(importance="abcd"), TypeError, "spline_order: importance must be a sequence of numbers"),
    ("importance-nan", dict(importance=[1.0, math.nan, 1.0, 1.0]), ValueError, "spline_order: importance holds NaN at units [1]"),
    ("floor", dict(floor=-1), ValueError, "spline_order: floor must be an int >= 0, got -1"),
    ("complement", dict(complement="yes"), TypeError, "spline_order: complement must be a bool, got str 'yes'"),
    ("n_samples", dict(n_samples=3), ValueError, "spline_order: n_samples must be None or an int >= 1 dividing n_bits = 100, got 3"),
    ("neighbours", dict(neighbours=0), ValueError, "spline_order: neighbours must be an int >= 1, got 0"),
    ("complement_codes", dict(complement_codes=SPLINE_CODES[:2]), ValueError,
     "spline_order: complement_codes must be None or int64 of the codes' shape (4, 2)", "(2, 2)"),
]


@pytest.mark.skipif(pruning is None, reason="fastspline.pruning not present")
@pytest.mark.parametrize(("what", "kwargs", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in SPLINE_ORDER_CALLS],
                         ids=[c[0] for c in SPLINE_ORDER_CALLS])
def test_spline_order_checks_its_arguments_when_called(what, kwargs, exc, m):
    """Raised by the call itself, not when the returned steps are first read."""
    kwargs = {"codes": SPLINE_CODES, "n_bits": 100, "importance": np.ones(4), **kwargs}
    with raises(exc, *m):
        pruning.spline_order(kwargs.pop("codes"), kwargs.pop("n_bits"), kwargs.pop("importance"), **kwargs)


@pytest.mark.skipif(pruning is None, reason="fastspline.pruning not present")
def test_spline_order_still_yields_steps():
    steps = pruning.spline_order(SPLINE_CODES, 100, np.ones(4), floor=2)
    assert isinstance(steps, Iterator) and len(list(steps)) == 2


def _results() -> dict[str, Any]:
    """The smallest dict markdown accepts (the keys run_methods writes)."""
    return {"title": "t", "config": {"model": "mlp", "data": "toy-x", "ratio": 0.5, "epochs": 2}, "seeds": [0],
            "methods": [{"key": "dense", "prune_at": "never"}], "runs": {}, "summary": {"dense": {"label": "dense"}}}


PIPELINE_CALLS = [
    ("methods_for-config", lambda: pipeline.methods_for("x"), TypeError, "methods_for: config must be a PipelineConfig, got str 'x'"),
    ("methods_for-compare", lambda: pipeline.methods_for(pipeline.PipelineConfig(), compare="yes"), TypeError,
     "methods_for: compare must be a bool, got str 'yes'"),
    ("run_pipeline-config", lambda: pipeline.run_pipeline("cfg"), TypeError, "run_pipeline: config must be a PipelineConfig, got str 'cfg'"),
    ("compare-config", lambda: pipeline.compare({"model": "mlp"}), TypeError, "compare: config must be a PipelineConfig, got dict"),
    ("compare-field", lambda: pipeline.compare(pipeline.PipelineConfig(epochs=0)), ValueError, "PipelineConfig: epochs must be >= 1, got 0"),
    ("compare-seeds", lambda: pipeline.compare(pipeline.PipelineConfig(), seeds="0"), ValueError,
     "run_methods: seeds must be a non-empty sequence of ints, got '0'"),
    ("run_methods-config", lambda: pipeline.run_methods(None, [pipeline.Method("never")]), TypeError,
     "run_methods: config must be a PipelineConfig, got NoneType"),
    ("run_methods-methods", lambda: pipeline.run_methods(pipeline.PipelineConfig(), "dense"), TypeError,
     "run_methods: methods must be a sequence of Method", "got str"),
    ("run_methods-method", lambda: pipeline.run_methods(pipeline.PipelineConfig(), ["dense"]), TypeError,
     "run_methods: methods must hold Method objects", "got str 'dense'"),
    ("run_methods-empty", lambda: pipeline.run_methods(pipeline.PipelineConfig(), []), ValueError, "run_methods: methods is empty"),
    ("run_methods-seeds", lambda: pipeline.run_methods(pipeline.PipelineConfig(), [pipeline.Method("never")], seeds=[0, 0]), ValueError,
     "run_methods: seeds must be distinct, got [0, 0]"),
    ("run_methods-workers", lambda: pipeline.run_methods(pipeline.PipelineConfig(), [pipeline.Method("never")], workers=0), ValueError,
     "run_methods: workers must be >= 1, got 0"),
    ("run_methods-out", lambda: pipeline.run_methods(pipeline.PipelineConfig(), [pipeline.Method("never")], out=3), TypeError,
     "run_methods: out must be a path or None, got int"),
    ("run_methods-out-file", lambda: pipeline.run_methods(pipeline.PipelineConfig(), [pipeline.Method("never")], out=__file__),
     ValueError, "run_methods: out", "is a file, not a run folder"),
    ("markdown-type", lambda: pipeline.markdown("results.json"), TypeError, "markdown: results must be the dict of run_pipeline", "got str"),
    ("markdown-empty", lambda: pipeline.markdown({}), ValueError,
     "markdown: results lacks ['title', 'config', 'seeds', 'methods', 'runs', 'summary']"),
    ("markdown-config", lambda: pipeline.markdown({**_results(), "config": {"model": "mlp"}}), ValueError,
     "markdown: results['config'] must be a dict with ['model', 'data', 'ratio', 'epochs']"),
    ("markdown-summary", lambda: pipeline.markdown({**_results(), "summary": {"dense": 3}}), ValueError,
     "markdown: results['summary']['dense'] must be a dict with 'label', got 3"),
    ("markdown-methods", lambda: pipeline.markdown({**_results(), "methods": ["dense"]}), ValueError,
     "markdown: results['methods'] must be a list of dicts with 'key'"),
]


@pytest.mark.skipif(pipeline is None, reason="fastspline.pipeline not present")
@pytest.mark.parametrize(("what", "call", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in PIPELINE_CALLS],
                         ids=[c[0] for c in PIPELINE_CALLS])
def test_pipeline_bad_arguments(what, call, exc, m):
    with raises(exc, *m):
        call()


@pytest.mark.skipif(pipeline is None, reason="fastspline.pipeline not present")
def test_pipeline_markdown_of_a_minimal_results_dict():
    assert "| dense |" in pipeline.markdown(_results())  # the checks accept what run_methods writes


@pytest.mark.skipif(pipeline is None, reason="fastspline.pipeline not present")
def test_run_methods_failing_on_its_data_leaves_no_folder(tmp_path):
    (tmp_path / "cifar").mkdir()
    config = pipeline.PipelineConfig(model="vgg11", data="cifar10", data_root=str(tmp_path / "cifar"), epochs=1)
    with raises(FileNotFoundError, "cifar: missing"):
        pipeline.run_methods(config, [pipeline.Method("never")], out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def _two_class_points() -> TensorDataset:
    return TensorDataset(torch.randn(6, 2, generator=torch.Generator().manual_seed(4)), torch.tensor([0, 1, 0, 1, 0, 1]))


VIZ_CALLS = [
    ("training_curves-type", lambda p: viz.training_curves(3), TypeError,
     "training_curves: history must be a fastspline.train.History, a list of records, or a run folder", "got int"),
    ("training_curves-records", lambda p: viz.training_curves([1, 2]), TypeError, "training_curves: a list history must hold per-epoch record dicts"),
    ("training_curves-empty", lambda p: viz.training_curves([]), ValueError, "training_curves: the history has no epochs"),
    ("training_curves-missing", lambda p: viz.training_curves(p / "none"), FileNotFoundError, "read_history: no"),
    ("training_curves-no-records", lambda p: viz.training_curves({"epochs": 3}), ValueError, "training_curves: the run payload has no 'records' list"),
    ("training_curves-thresholds", lambda p: viz.training_curves([{"epoch": 1}], thresholds=0.1), TypeError,
     "training_curves: thresholds must be a dict {detector: value} or None, got float"),
    ("training_curves-eb_epochs", lambda p: viz.training_curves([{"epoch": 1}], eb_epochs=[3]), TypeError,
     "training_curves: eb_epochs must be a dict {detector: value} or None, got list"),
    ("training_curves-title", lambda p: viz.training_curves([{"epoch": 1}], title=3), TypeError, "training_curves: title must be a str or None, got int"),
    ("pruning_report-plan", lambda p: viz.pruning_report("plan.json"), TypeError,
     "pruning_report: plan must be a fastspline.pruning.PrunePlan, its to_dict() or its summary(), got str"),
    ("pruning_report-no-layers", lambda p: viz.pruning_report({"layers": []}), ValueError, "pruning_report: the plan has no layers"),
    ("pruning_report-layer", lambda p: viz.pruning_report({"layers": [{"name": "a"}]}), ValueError,
     "pruning_report: plan summary layer 0 lacks name/before/removed"),
    ("pruning_report-model", lambda p: viz.pruning_report({"layers": [{"name": "a", "before": 4, "removed": [1]}]}, "m"), TypeError,
     "pruning_report: model must be an nn.Module, got str"),
    ("pruning_report-label", lambda p: viz.pruning_report({"layers": []}, pruned_label=3), TypeError,
     "pruning_report: pruned_label must be a str, got int"),
    ("write_run_plots-run_dir", lambda p: viz.write_run_plots(3), TypeError, "write_run_plots: run_dir must be a path, got int"),
    ("write_run_plots-file", lambda p: viz.write_run_plots(__file__), ValueError, "write_run_plots: run_dir", "is a file, not a folder"),
    ("write_run_plots-model", lambda p: viz.write_run_plots(p / "run", model="m"), TypeError, "write_run_plots: model must be an nn.Module, got str"),
    ("write_run_plots-pruned", lambda p: viz.write_run_plots(p / "run", pruned="m"), TypeError, "write_run_plots: model must be an nn.Module, got str"),
    ("write_run_plots-dataset", lambda p: viz.write_run_plots(p / "run", dataset=[1, 2]), TypeError,
     "write_run_plots: dataset must be a TensorDataset of (x, y), got list"),
    ("takes_points", lambda p: viz.takes_points("m"), TypeError, "takes_points: model must be an nn.Module, got str"),
    ("labelled_canvas_pair-dataset", lambda p: viz.labelled_canvas_pair(torch.zeros(4, 2)), TypeError,
     "labelled_canvas_pair: dataset must be a TensorDataset of (x, y), got Tensor"),
    ("labelled_canvas_pair-x-only", lambda p: viz.labelled_canvas_pair(TensorDataset(torch.zeros(4, 2))), TypeError,
     "labelled_canvas_pair: dataset must be a TensorDataset of (x, y)"),
    ("labelled_canvas_pair-seed", lambda p: viz.labelled_canvas_pair(_two_class_points(), seed=-1), ValueError, "canvas_pair: seed"),
    ("labelled_canvas_pair-one-class", lambda p: viz.labelled_canvas_pair(TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64))),
     ValueError, "canvas_pair: every sample has the same label"),
]


@pytest.mark.skipif(viz is None, reason="fastspline.viz not present")
@pytest.mark.parametrize(("what", "call", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in VIZ_CALLS], ids=[c[0] for c in VIZ_CALLS])
def test_viz_plot_functions_bad_inputs(tmp_path, what, call, exc, m):
    with raises(exc, *m):
        call(tmp_path)
    assert not any(tmp_path.iterdir())  # a refused call writes nothing (no folder, no PNG)


@pytest.mark.skipif(viz is None, reason="fastspline.viz not present")
def test_viz_load_model_of_a_file_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model\n")  # torch.load: "IndexError: pop from empty list"
    with raises(ValueError, "load_model:", "notes.txt' is not a model file (not a torch.save archive)"):
        viz.load_model(tmp_path / "notes.txt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with raises(ValueError, "load_model:", "empty.pt' is not a model file"):
        viz.load_model(tmp_path / "empty.pt")
    torch.save({"model": {}, "model_config": {}}, tmp_path / "cut.pt")
    truncated(tmp_path / "cut.pt")
    with raises(ValueError, "load_model:", "cut.pt' is truncated or corrupt"):
        viz.load_model(tmp_path / "cut.pt")


@pytest.mark.skipif(distributed is None, reason="fastspline.distributed not present")
def test_distributed_sharded_objects_without_a_process_group():
    """ShardedRegionCodes (its collectives), ShardedSplineEarlyBird and plan, in one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        pytest.skip("a process group is initialised")
    with raises(ValueError, "ShardedRegionCodes: meta['shard'] must hold rank, world_size, offset and total_samples", "got None"):
        distributed.ShardedRegionCodes(dict(small_codes().items()), {"note": "x"})
    shard = {"rank": 0, "world_size": 1, "offset": 0, "total_samples": 3}
    rc = distributed.ShardedRegionCodes(dict(small_codes().items()), {"shard": shard})
    model = _mlp()
    for name, call in [
        ("distributed.distance", lambda: rc.distance(rc)),
        ("distributed.hamming_cdist", lambda: rc.unit_cdist("a")),
        ("ShardedRegionCodes.unit_cdists", lambda: rc.unit_cdists()),
        ("ShardedRegionCodes.count_regions", lambda: rc.count_regions()),
        ("ShardedRegionCodes.region_ids", lambda: rc.region_ids()),
        ("ShardedSplineEarlyBird", lambda: distributed.ShardedSplineEarlyBird(X)),
        ("distributed.plan", lambda: distributed.plan(model, X, 0.5)),
    ]:
        with leaves_unchanged(model), raises(RuntimeError, f"{name}: the default process group is not initialised", "init_process_group"):
            call()


torch_pruning_adapter = _optional("torch_pruning") and importlib.import_module("fastspline.integrations.torch_pruning")

SPLINE_IMPORTANCE_ARGUMENTS = [
    ("model", dict(model="m"), TypeError, "SplineImportance: model must be an nn.Module, got str"),
    ("probe-none", dict(probe=None), ValueError, "SplineImportance: probe is None"),
    ("probe-str", dict(probe="probe.pt"), TypeError, "SplineImportance: probe must be a tensor, an (x, y) pair", "got str"),
    ("probe-int", dict(probe=3), TypeError, "SplineImportance: probe must be a tensor", "got int"),
    ("probe-empty", dict(probe=X[:0]), ValueError, "SplineImportance: probe must hold at least one input, got shape (0, 4)"),
    ("probe-0d", dict(probe=torch.tensor(1.0)), ValueError, "SplineImportance: probe must hold at least one input, got shape ()"),
    ("probe-empty-list", dict(probe=[]), ValueError, "SplineImportance: probe is empty"),
    ("probe-empty-pair", dict(probe=(X[:0], Y[:0])), ValueError, "SplineImportance: probe is empty"),
    ("complement", dict(complement=1), TypeError, "SplineImportance: complement must be a bool, got int"),
    ("neighbours", dict(neighbours=0), ValueError, "SplineImportance: neighbours must be an int >= 1, got 0"),
    ("batch_size", dict(batch_size=0), ValueError, "SplineImportance: batch_size must be an int >= 1, got 0"),
    ("batch_size-float", dict(batch_size=2.5), ValueError, "SplineImportance: batch_size must be an int >= 1, got 2.5"),
    ("backend", dict(backend="gpu"), ValueError, "SplineImportance: backend must be None or one of", "got 'gpu'"),
]


@pytest.mark.skipif(not torch_pruning_adapter, reason="torch-pruning not installed")
@pytest.mark.parametrize(("what", "kwargs", "exc", *("m",)), [(c[0], c[1], c[2], c[3:]) for c in SPLINE_IMPORTANCE_ARGUMENTS],
                         ids=[c[0] for c in SPLINE_IMPORTANCE_ARGUMENTS])
def test_spline_importance_bad_arguments(what, kwargs, exc, m):
    model = _mlp()
    kwargs = {"model": model, "probe": X, **kwargs}
    with leaves_unchanged(model), raises(exc, *m):
        torch_pruning_adapter.SplineImportance(kwargs.pop("model"), kwargs.pop("probe"), **kwargs)


# ---------------------------------------------------------------- the catalogue itself

OPS = ("pack_signs", "unpack_bits", "popcount", "hamming", "hamming_total", "hamming_cdist", "hamming_topk",
       "hamming_radius", "bit_transpose", "count_regions")
ERRORS = "test_errors.py"  # the ops' argument catalogue

# Public name -> the tests of its bad inputs (in this file unless prefixed by a file name).
CATALOGUE: dict[str, tuple[str, ...]] = {
    **{f"fastspline.{op}": (f"{ERRORS}::test_non_tensor_input", f"{ERRORS}::test_unknown_backend_name",
                            "test_pack_signs_nan_and_inf_activations_are_defined", "test_cdist_out_must_fit",
                            "test_word_views_with_an_odd_stride_on_a_size_one_dim") for op in OPS},
    "fastspline.codes": ("test_codes_bad_arguments", "test_codes_model_without_activations", "test_codes_nan_weights_and_restored_state",
                         "test_codes_forward_raising_midway_restores_everything", "test_codes_layer_outputs_that_are_not_codes"),
    "fastspline.LayerCodes": ("test_layer_codes_checks",),
    "fastspline.RegionCodes": ("test_region_codes_checks", "test_region_codes_save_on_a_full_disk", "test_region_codes_load_bad_files",
                               "test_region_codes_save_refuses_unloadable_meta", "test_region_codes_load_missing_or_folder"),
    "fastspline.register_activation": ("test_register_activation_refuses_non_module_classes",),
    "fastspline.build_info": ("test_build_info_describes_every_backend",),
    **{f"fastspline.data.{name}": ("test_data_loaders",) for name in
       ("digits", "mnist5k", "toy_x", "canvas", "canvas_pair", "probe_subset", "load")},
    "fastspline.data.cifar": ("test_data_loaders", "test_cifar_bad_files"),
    "fastspline.data.image_folder": ("test_data_loaders", "test_image_folder_bad_folders"),
    "fastspline.train.fit": ("test_fit_bad_arguments", "test_fit_stops_on_a_non_finite_loss_before_the_step",
                             "test_fit_checkpoint_on_a_full_disk", "test_fit_resume_from_a_truncated_checkpoint",
                             "test_fit_resume_from_another_models_checkpoint"),
    "fastspline.train.evaluate": ("test_evaluate_bad_data", "test_evaluate_model_type"),
    "fastspline.train.count_flops": ("test_train_helpers", "test_count_flops_leaves_the_model_unchanged"),
    "fastspline.train.bn_l1_penalty": ("test_train_helpers",),
    "fastspline.train.seed_everything": ("test_train_helpers",),
    "fastspline.train.atomic_save": ("test_atomic_save_refuses_unpicklable_objects_and_keeps_the_old_file", "test_fit_checkpoint_on_a_full_disk"),
    "fastspline.train.load_checkpoint": ("test_load_checkpoint_bad_files", "test_load_checkpoint_missing"),
    "fastspline.earlybird.SplineEarlyBird": ("test_earlybird_arguments", "test_spline_earlybird_step_errors_leave_detector_and_model_unchanged",
                                             "test_spline_earlybird_load_state_dict_malformed"),
    "fastspline.earlybird.MaskEarlyBird": ("test_earlybird_arguments", "test_mask_earlybird_errors_leave_detector_and_model_unchanged"),
    "fastspline.earlybird.bn_mask": ("test_earlybird_arguments", "test_mask_earlybird_errors_leave_detector_and_model_unchanged"),
    "fastspline.earlybird.probe_batch_size": ("test_earlybird_arguments",),
    **{f"fastspline.models.{name}": ("test_model_builders",) for name in
       ("CNN1d", "ChannelSelect", "MLP", "PreResNet", "VGG", "build", "cnn1d", "create", "default_preresnet_widths",
        "init_weights", "mlp", "preresnet", "vgg")},
    "fastspline.models.SplineModel": ("test_model_builders", "test_rebuild_leaves_the_model_unchanged"),
    "fastspline.backends.load": ("test_backends_api",),
    "fastspline.backends.select": ("test_backends_api",),
    "fastspline.backends.available": ("test_backends_api",),
    "fastspline.backends.cpu.set_isa": (f"{ERRORS}::test_cpu_set_isa_unknown", "test_forced_isa_restores_after_an_exception"),
    "fastspline.backends.cpu.forced_isa": (f"{ERRORS}::test_cpu_set_isa_unknown", "test_forced_isa_restores_after_an_exception"),
    "fastspline.cli.main": ("test_cli_usage_errors", "test_cli_train_data_errors", "test_cli_plot_damaged_sources",
                            "test_cli_train_resume_from_a_truncated_checkpoint"),
    "fastspline.cli.write_json": ("test_cli_write_json_keeps_the_old_file",),
    "fastspline.pruning.plan": ("test_pruning_bad_inputs",),
    "fastspline.pruning.apply": ("test_pruning_bad_inputs", "test_pruning_plan_of_another_model_leaves_both_unchanged"),
    "fastspline.pruning.mask": ("test_pruning_plan_of_another_model_leaves_both_unchanged",),
    "fastspline.pruning.recalibrate_bn": ("test_pruning_bad_inputs",),
    "fastspline.pipeline.PipelineConfig": ("test_pipeline_config_and_seeds",),
    "fastspline.pipeline.run_pipeline": ("test_pipeline_config_and_seeds", "test_pipeline_bad_arguments"),
    "fastspline.viz.grid_2d": ("test_viz_bad_inputs",),
    "fastspline.viz.partition_2d": ("test_viz_bad_inputs",),
    "fastspline.viz.read_history": ("test_viz_bad_inputs",),
    "fastspline.viz.load_model": ("test_viz_bad_inputs", "test_viz_load_model_of_a_file_that_is_not_a_model"),
    "fastspline.viz.earlybird_heatmap": ("test_viz_bad_inputs",),
    "fastspline.viz.canvas_contours": ("test_viz_bad_inputs",),
    **{f"fastspline.distributed.{name}": ("test_distributed_without_a_process_group",) for name in
       ("codes", "hamming_cdist", "distance", "broadcast_plan", "shard_range", "shard")},
    **{f"fastspline.distributed.{name}": ("test_distributed_sharded_objects_without_a_process_group",) for name in
       ("ShardedRegionCodes", "ShardedSplineEarlyBird", "plan")},
    "fastspline.pruning.spline_order": ("test_spline_order_checks_its_arguments_when_called",),
    **{f"fastspline.pipeline.{name}": ("test_pipeline_bad_arguments",) for name in ("methods_for", "compare", "markdown")},
    "fastspline.pipeline.run_methods": ("test_pipeline_bad_arguments", "test_run_methods_failing_on_its_data_leaves_no_folder"),
    **{f"fastspline.viz.{name}": ("test_viz_plot_functions_bad_inputs",) for name in
       ("training_curves", "pruning_report", "write_run_plots", "takes_points", "labelled_canvas_pair")},
    "fastspline.integrations.torch_pruning.SplineImportance": ("test_spline_importance_bad_arguments",),
}

# Public names without bad-input entries, and why.
NOT_COVERED: dict[str, str] = {
    **{f"fastspline.{owner}.{name}": "a constant" for owner, name in [
        ("codes", "ACTIVATIONS"), ("data", "DATASETS"), ("data", "IMAGE_EXTENSIONS"), ("models", "MODEL_NAMES"), ("models", "VGG_CFGS"), ("models", "CNN1D_CFG"),
        ("cli", "COMMANDS"), ("pruning", "BUDGETS"), ("pruning", "MERGES"), ("pruning", "POLICIES"), ("pruning", "PAIR_RULES"), ("pipeline", "STAGES"),
        ("pipeline", "MERGES"), ("pipeline", "BUDGETS")]},
    **{f"fastspline.{name}": "a plain container built by the library (no validation of its own)" for name in (
        "data.Split", "train.History", "train.Callback", "models.WidthLayer", "pruning.LayerPlan", "pruning.PrunePlan",
        "pruning.RemovedUnit", "pipeline.Method")},
    "fastspline.data.mnist1d": "no arguments",
    **{f"fastspline.{name}": "an exception class (raised by the library)" for name in ("models.InputShapeError", "train.ResumeError")},
    "fastspline.cli.build_parser": "no arguments (its parsers are exercised through main)",
    "fastspline.backends.names": "no arguments",
    "fastspline.backends.supports": "internal helper of ops (takes a loaded backend module)",
}

PUBLIC_MODULES = ["fastspline", "fastspline.codes", "fastspline.data", "fastspline.train", "fastspline.earlybird",
                  "fastspline.models", "fastspline.cli", "fastspline.pruning", "fastspline.pipeline", "fastspline.viz",
                  "fastspline.distributed", "fastspline.integrations.torch_pruning"]
# Modules without __all__: their public functions, listed here.
EXTRA_PUBLIC = ["fastspline.backends.names", "fastspline.backends.load", "fastspline.backends.available",
                "fastspline.backends.supports", "fastspline.backends.select", "fastspline.backends.cpu.set_isa",
                "fastspline.backends.cpu.forced_isa"]


def _public_names() -> list[str]:
    names = list(EXTRA_PUBLIC)
    for module_name in PUBLIC_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if name in fs.__all__ and getattr(module, name) is getattr(fs, name):
                names.append(f"fastspline.{name}")  # re-exported at the top level: catalogued there
            else:
                names.append(f"{module_name}.{name}")
    return sorted(set(names))


def test_catalogue_covers_every_public_name():
    missing = [name for name in _public_names() if name not in CATALOGUE and name not in NOT_COVERED]
    assert not missing, f"public names without a bad-input entry (add tests to CATALOGUE, or a reason to NOT_COVERED): {missing}"


def test_catalogue_and_reasons_do_not_overlap():
    both = sorted(set(CATALOGUE) & set(NOT_COVERED))
    assert not both, f"names both covered and given a reason not to be: {both}"


def test_catalogue_names_existing_tests():
    here = Path(__file__).parent
    sources = {"": Path(__file__).read_text(), ERRORS: (here / ERRORS).read_text()}
    for name, tests in CATALOGUE.items():
        for test in tests:
            file, _, function = test.rpartition("::")
            assert f"def {function}(" in sources[file], f"{name}: no test {test}"
