"""Atomic file writes shared by codes, training checkpoints, the CLI and the benchmarks."""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from typing import IO, Any

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync, then ``os.replace``:
    a crash or a full disk never leaves a half-written ``path``. Creates the folder."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    try:
        try:  # an existing file keeps its permissions (a private 0600 file stays private)
            mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            umask = _umask()  # mkstemp makes the file 0600; give a new one the mode open() would
            mode = None if umask is None else 0o666 & ~umask
        if mode is not None:
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            recorder = _DiskErrors(f)
            try:
                write(recorder)
            except Exception as exc:
                # torch.save's zip writer turns a failed write (ENOSPC) into an unclear
                # RuntimeError ("unexpected pos ..."): raise the disk's error instead.
                if recorder.error is not None and exc is not recorder.error:
                    raise OSError(recorder.error.errno, recorder.error.strerror, path) from exc
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _DiskErrors:
    """The file handed to a writer: remembers the first OSError of a write."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, written atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """``payload`` as indented JSON (non-JSON values through ``str``), written atomically."""
    text = json.dumps(payload, indent=2, default=str) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


# torch.save writes a zip archive; anything else is not a torch file (checked before unpickling).
_ZIP_MAGIC = b"PK\x03\x04"


def load_torch_archive(path: str | os.PathLike, where: str, kind: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with a ValueError
    naming ``path`` when it is not a torch.save archive or is truncated or corrupt
    (FileNotFoundError when it is missing)."""
    with open(path, "rb") as f:
        magic = f.read(len(_ZIP_MAGIC))
    if magic != _ZIP_MAGIC:
        raise ValueError(f"{where}: {os.fspath(path)!r} is not a {kind} (not a torch.save archive)")
    try:
        # torch.load does not check the members' CRCs: a flipped byte in a tensor would load as data.
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"member {bad!r} fails its CRC check")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt archive raises almost anything: TypeError, IndexError, AssertionError, ...
        raise ValueError(f"{where}: {os.fspath(path)!r} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc


def read_json_object(path: str | os.PathLike, where: str) -> dict[str, Any]:
    """The JSON object in ``path``; ValueError naming ``where`` and the file when it is
    not valid JSON or not an object (the caller checks that the file exists)."""
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: {os.fspath(path)} is not valid JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise ValueError(f"{where}: {os.fspath(path)} holds a {type(payload).__name__}, expected a JSON object")
    return payload


def _umask() -> int | None:
    """The process umask, read without changing it (os.umask would, racing other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return None
