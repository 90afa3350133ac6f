"""Build fastspline: setup.py drives CMake (pybind11 cmake_example pattern).

Environment switches:
  FASTSPLINE_CUDA=1|0   force / skip the CUDA module (default: built when nvcc is found)
  DEBUG=1               -O0 -g build
  FASTSPLINE_SANITIZE=1 build fastspline._C with ASan + UBSan (see tests/sanitize.sh)
  CMAKE_BUILD_PARALLEL_LEVEL  parallel compile jobs (default: all cores)
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        extdir = (Path.cwd() / self.get_ext_fullpath(ext.name)).parent.resolve()
        debug = os.environ.get("DEBUG", "0") == "1"
        cuda_env = os.environ.get("FASTSPLINE_CUDA", "")
        if cuda_env not in ("", "1", "0"):  # ON, yes, ...: refused, not quietly taken as AUTO
            raise ValueError(f"FASTSPLINE_CUDA must be 1 (build fastspline._cuda) or 0 (skip it), got {cuda_env!r}")
        cuda = {"1": "ON", "0": "OFF"}.get(cuda_env, "AUTO")
        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={'Debug' if debug else 'Release'}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DFASTSPLINE_CUDA={cuda}",
            f"-DFASTSPLINE_SANITIZE={'ON' if os.environ.get('FASTSPLINE_SANITIZE') == '1' else 'OFF'}",
        ]
        if "CMAKE_ARGS" in os.environ:
            cmake_args += [arg for arg in os.environ["CMAKE_ARGS"].split(" ") if arg]
        generator = ["-G", "Ninja"] if _has_ninja() else []
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        # CMake rewrites _cuda only when it builds it: one an earlier build left in extdir
        # (nvcc found then; FASTSPLINE_CUDA=0 or no nvcc now) would ship as this build's.
        (extdir / self._cuda_filename()).unlink(missing_ok=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(["cmake", str(ROOT), *generator, *cmake_args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_temp, check=True)

    def copy_extensions_to_source(self) -> None:
        # Editable installs copy only the declared extension (_C); CMake may also
        # have built _cuda beside it, which must land in the source tree too.
        super().copy_extensions_to_source()
        built = Path(self.build_lib) / "fastspline" / self._cuda_filename()
        source = ROOT / "fastspline" / built.name
        if built.is_file():
            self.copy_file(str(built), str(source), level=self.verbose)
        else:  # not built this time: an older one in the tree would still be imported
            source.unlink(missing_ok=True)

    def _cuda_filename(self) -> str:
        return Path(self.get_ext_filename("fastspline._cuda")).name


def _has_ninja() -> bool:
    try:
        import ninja  # noqa: F401
    except ImportError:
        return False
    return True


setup(
    packages=find_packages(include=["fastspline", "fastspline.*"]) + ["fastspline.kernels", "fastspline.benchmarks"],
    package_dir={"fastspline.kernels": "kernels", "fastspline.benchmarks": "benchmarks"},  # `fastspline bench`
    ext_modules=[CMakeExtension("fastspline._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
