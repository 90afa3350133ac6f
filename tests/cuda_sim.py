"""Builds ``_cuda_sim``: csrc/cuda/ops.cu and the ``_cuda`` bindings compiled for the CPU
against the SIMT emulator in csrc/cuda/sim/cuda_sim.h, so the CUDA kernels' own code runs
here (slowly: one fiber per CUDA thread) on CPU memory.

The only source rewrite is the launch syntax: ``kernel<<<grid, block, smem, stream>>>(args)``
becomes ``::sim::launch(grid, block, smem, stream)(kernel, args)``.

    python tests/cuda_sim.py OUT_DIR [--sanitize]   # builds OUT_DIR/_cuda_sim_<hash>*.so
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import importlib.util
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType, SimpleNamespace

from gpu_proxy import OPS

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "csrc/cuda/ops.cu", ROOT / "csrc/cuda/ops.h", ROOT / "csrc/cuda/sim/cuda_sim.h",
           ROOT / "csrc/threshold.h", ROOT / "csrc/bindings/cuda_module.cpp", Path(__file__).resolve()]
# kernel (an identifier, optionally with template arguments) <<< config >>> (
LAUNCH = re.compile(r"\b([A-Za-z_]\w*(?:<[^<>;()]*(?:<[^<>;()]*>[^<>;()]*)*>)?)<<<(.*?)>>>\(", re.S)


# a statement declaring __shared__ arrays (not extern): "__shared__ int a[N], b[N];"
SHARED = re.compile(r"^(\s*)__shared__ ([^;]*);", re.M)


def _escape_shared(m: re.Match) -> str:
    """The declaration, then ::sim::escape(name) for each array: a __shared__ array is a
    function-local static here, and without its address escaping, the compiler may keep
    its stores and loads on the far side of a barrier (it cannot see the other threads)."""
    names = re.findall(r"(\w+)\s*\[", re.sub(r"\[[^\]]*\]", lambda b: "[" + "_" * len(b.group()) + "]", m.group(2)))
    return m.group(0) + "".join(f" ::sim::escape({name});" for name in names)


def translate(source: str) -> str:
    """ops.cu with every triple-chevron launch rewritten as a sim::launch call, and each
    __shared__ array's address escaped."""
    out, count = LAUNCH.subn(lambda m: f"::sim::launch({m.group(2)})({m.group(1)}, ", source)
    if count == 0 or "<<<" in out:
        raise RuntimeError(f"cuda_sim: launch rewrite left {out.count('<<<')} launches after {count} rewrites")
    out, shared = SHARED.subn(_escape_shared, out)
    if shared == 0:
        raise RuntimeError("cuda_sim: found no __shared__ declarations to rewrite")
    return out


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cuda_sim: the build failed:\n{' '.join(cmd)}\n{done.stderr[-6000:]}")


def _flags(sanitize: bool, optimize: str) -> list[str]:
    import pybind11

    flags = ["-std=c++17", "-fPIC", "-DFASTSPLINE_CUDA_SIM", "-Wno-unknown-pragmas", "-fvisibility=hidden",
             f"-I{ROOT / 'csrc/cuda'}", f"-I{ROOT / 'csrc'}", f"-I{pybind11.get_include()}",
             f"-I{sysconfig.get_paths()['include']}"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-mpopcnt")  # __popc / b1 MMA as one instruction, not libgcc's loop (no wall-time change measured)
    if not sanitize:
        return [*flags, *optimize.split()]
    # GCC 12 miscompiles `(c ? a : b)[i % n] = v` (the store lands at a[0] or b[0]) when it
    # instruments division or shifts: those four checks stay off in the sanitized build.
    return [*flags, "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize=shift,integer-divide-by-zero,signed-integer-overflow,float-divide-by-zero"]


_BINDINGS_LOCK = threading.Lock()
BINDINGS = "_cuda_sim_bindings"  # the module name the shared bindings object is compiled under


def _bindings(out_dir: Path, sanitize: bool) -> Path:
    """csrc/bindings/cuda_module.cpp compiled once into an object (~16 s) that every build
    of this kind (plain or sanitized) links: its module init, PyInit__cuda_sim_bindings, is
    called by each build's own PyInit_<name>."""
    flags = _flags(sanitize, "-O1")
    sources = [ROOT / "csrc/bindings/cuda_module.cpp", ROOT / "csrc/cuda/ops.h", Path(__file__).resolve()]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + repr(flags).encode()).hexdigest()[:16]
    target = out_dir / f"{BINDINGS}_{digest}.o"
    with _BINDINGS_LOCK:  # the two build threads of test_cuda_sim's fixture: one compiles, one waits
        if not target.exists():
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            _run(["g++", *flags, f"-DFASTSPLINE_CUDA_MODULE={BINDINGS}", "-c",
                  str(ROOT / "csrc/bindings/cuda_module.cpp"), "-o", str(tmp)])
            tmp.replace(target)  # atomic: processes sharing FASTSPLINE_SIM_BUILD_DIR never see half a file
    return target


def build(out_dir: Path, sanitize: bool = False, mutation: tuple[str, str] | None = None) -> Path:
    """Compiles the module into out_dir (reused when the sources have not changed).
    ``mutation`` (old, new): replace the one occurrence of ``old`` in ops.cu first (a
    planted bug, to show the emulator catches it).

    Each build compiles its own ops.cu and links the shared bindings object, with a two-line
    module init of its own name that calls the bindings' init."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source = (ROOT / "csrc/cuda/ops.cu").read_text()
    if mutation is not None:
        old, new = mutation
        if source.count(old) != 1:
            raise ValueError(f"cuda_sim: the mutation's text occurs {source.count(old)} times in ops.cu, not once: {old!r}")
        source = source.replace(old, new)
    key = b"".join(p.read_bytes() for p in SOURCES) + repr((sanitize, mutation)).encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    # A name of its own per build: Python keeps one extension module per name.
    name = f"_cuda_sim_{digest}"
    target = out_dir / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if target.exists():
        return target
    ops = out_dir / f"{name}.cpp"
    ops.write_text(translate(source))
    # A mutant (planted bug) runs one short check: unoptimised, it builds in ~7 s (-O1: 14 s,
    # 2 cores); the module every other test runs is optimised, with line tables for backtraces.
    flags = _flags(sanitize, "-O0" if mutation else "-O2 -g1")
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with ThreadPoolExecutor(1) as pool:  # the bindings object (when not built yet) on the other core
        bindings = pool.submit(_bindings, out_dir, sanitize)
        _run(["g++", *flags, "-c", str(ops), "-o", f"{tmp}.o"])
        bindings = bindings.result()
    init = out_dir / f"{name}_init.cpp"
    init.write_text(f'extern "C" void* PyInit_{BINDINGS}();\n'
                    f'extern "C" __attribute__((visibility("default"))) void* PyInit_{name}() {{ return PyInit_{BINDINGS}(); }}\n')
    # -Bsymbolic: the call binds to this file's own bindings, whatever else is loaded
    _run(["g++", *flags, "-shared", "-Wl,-Bsymbolic", f"{tmp}.o", str(bindings), str(init), "-o", str(tmp)])
    Path(f"{tmp}.o").unlink()
    tmp.replace(target)
    return target


_BUILD_DIR: list[Path] = []


def build_dir() -> Path:
    """Where this process builds the emulator: FASTSPLINE_SIM_BUILD_DIR (kept between
    runs), else one temporary folder per process (shared by conftest and the tests)."""
    if not _BUILD_DIR:
        import tempfile

        _BUILD_DIR.append(Path(os.environ.get("FASTSPLINE_SIM_BUILD_DIR") or tempfile.mkdtemp(prefix="cuda_sim_")))
    return _BUILD_DIR[0]


def can_build() -> str | None:
    """None when this machine can build the emulator, else why not."""
    if not sys.platform.startswith("linux"):
        return "the emulator is built for Linux only"
    if shutil.which("g++") is None:
        return "g++ not found"
    if importlib.util.find_spec("pybind11") is None:
        return "pybind11 not installed"
    return None


def load(path: Path):
    """The built module (its name is the file name up to the first dot)."""
    spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def installed(module, checks: dict | None = None):
    """fastspline.backends.cuda driving ``module`` on CPU memory while inside: its
    ``_cuda``, stream, device index, self-check device, self-check cache (``checks``,
    else an empty one), staging timings and the wgmma child checks (run in this process,
    nothing remembered on disk) swapped, torch.cuda.device a no-op, and as many streaming
    multiprocessors as the emulator has (FASTSPLINE_SIM_SMS, default 2 as in
    sim::sm_count)."""
    import torch

    from fastspline.backends import cuda

    def props(device):
        return SimpleNamespace(multi_processor_count=max(1, int(os.environ.get("FASTSPLINE_SIM_SMS") or 2)))

    swaps = [(cuda, "_cuda", module), (cuda, "_stream", lambda t: 0), (cuda, "_index", lambda device: 0),
             (cuda, "_check_device", lambda index: torch.device("cpu")), (cuda, "_checks", {} if checks is None else checks),
             (cuda, "_tuned", {}), (cuda, "_child_results", {}), (cuda, "_child_cache_path", lambda: None),
             # the emulator runs the wgmma checks in this process: nothing can trap it
             (cuda, "_run_child", lambda index, codes: {c: cuda._wgmma_status(c)(torch.device("cuda", index)) for c in codes}),
             (torch.cuda, "device", lambda *a, **k: contextlib.nullcontext()),
             (torch.cuda, "get_device_properties", props)]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in swaps]
    try:
        for owner, name, value in swaps:
            setattr(owner, name, value)
        yield module
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


# cuda@sim's self-check results: each check once per session, as once per device (also
# read by the bench_gpu dry run in tests/test_benchmarks.py).
CHECKS: dict = {}


def register() -> str:
    """Register ``cuda@sim`` in the backend registry: the cuda backend on CPU tensors
    over the emulator (built into build_dir() on first use, sanitized under
    FASTSPLINE_SIM_SANITIZE=1). tests/conftest.py adds it to the op matrix."""
    from fastspline import backends
    from fastspline.backends import cuda

    built: list = []

    def proxy(op: str):
        def run(*args):
            if not built:
                built.append(load(build(build_dir(), os.environ.get("FASTSPLINE_SIM_SANITIZE") == "1")))
            with installed(built[0], checks=CHECKS):
                return getattr(cuda, op)(*args)

        run.__name__ = op
        return run

    name = "cuda@sim"
    module = ModuleType("cuda_sim_backend")
    module.NAME = name
    module.DEVICE_TYPES = ("cpu",)
    for op in OPS:
        setattr(module, op, proxy(op))
    sys.modules[module.__name__] = module
    backends._MODULES[name] = module.__name__
    return name


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--sanitize", action="store_true", help="AddressSanitizer + UBSan build")
    args = parser.parse_args()
    print(build(args.out_dir, args.sanitize))
    sys.exit(0)
