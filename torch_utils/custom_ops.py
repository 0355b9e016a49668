"""Build and load this project's C++/CUDA extensions on first use.

:func:`get_plugin` compiles a set of sources with ninja through ``torch.utils.cpp_extension.load`` and
returns the Python module. Builds are cached on disk, keyed by a hash of the source texts, the PyTorch
version and the CUDA version, so that an edited kernel is never served from a stale build and unchanged
kernels are compiled once per machine:

    ~/.cache/sgilo/torch_extensions/<name>-<hash>/    (override the root with $SGILO_EXTENSIONS_DIR)

Several processes may ask for the same plugin at once (e.g. data-parallel workers): the sources are
copied into the build folder atomically and PyTorch's file lock inside that folder serialises the
compilation itself, so exactly one process builds and the others wait and load the result.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["get_plugin", "extensions_root", "BuildUnavailable"]

_loaded: dict[str, ModuleType] = {}
_lock = threading.Lock()


class BuildUnavailable(RuntimeError):
    """Raised when an extension cannot be built here (no CUDA toolkit, no compiler, ...)."""


def extensions_root() -> Path:
    """Root folder of the on-disk build cache."""
    env = os.environ.get("SGILO_EXTENSIONS_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "sgilo" / "torch_extensions"


def _fingerprint(name: str, paths: list[Path], flags: list[str]) -> str:
    """Hash of everything that changes the binary: sources, flags, PyTorch/CUDA versions."""
    h = hashlib.sha256()
    for part in (name, torch.__version__, str(torch.version.cuda), " ".join(flags)):
        h.update(part.encode())
        h.update(b"\0")
    for p in paths:
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _copy_atomically(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` so that a concurrent reader never sees a half-written file."""
    if dst.exists() and dst.read_bytes() == src.read_bytes():
        return
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_toolchain(needs_cuda: bool) -> None:
    """Fail early, with a readable reason, when a build cannot possibly succeed."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:
        raise BuildUnavailable("ninja is not installed (pip install ninja)")
    if needs_cuda:
        if torch.version.cuda is None:
            raise BuildUnavailable("this PyTorch build has no CUDA support")
        if cpp_extension.CUDA_HOME is None:
            raise BuildUnavailable("no CUDA toolkit found (set CUDA_HOME to a toolkit that provides nvcc)")


def get_plugin(
    name: str,
    sources: list[str | os.PathLike],
    headers: list[str | os.PathLike] = (),
    extra_cflags: list[str] = (),
    extra_cuda_cflags: list[str] = (),
    verbose: bool = False,
) -> ModuleType:
    """Compile (once) and import an extension module.

    Args:
        name: base name of the module; the loaded module is named ``<name>_<hash>``.
        sources: ``.cpp``/``.cu`` files; a ``.cu`` file makes this a CUDA build.
        headers: files included by the sources (they take part in the hash and are copied alongside).
        extra_cflags: additional host compiler flags.
        extra_cuda_cflags: additional nvcc flags.
        verbose: print the compiler output.

    Returns:
        the imported extension module.

    Raises:
        BuildUnavailable: the toolchain is missing.
        RuntimeError / OSError: the compilation itself failed.
    """
    from torch.utils import cpp_extension

    src_paths = [Path(s).resolve() for s in sources]
    hdr_paths = [Path(s).resolve() for s in headers]
    needs_cuda = any(p.suffix == ".cu" for p in src_paths)
    flags = list(extra_cflags) + list(extra_cuda_cflags)
    key = _fingerprint(name, src_paths + hdr_paths, flags)
    module_name = f"{name}_{key}"
    with _lock:
        if module_name in _loaded:
            return _loaded[module_name]
        _check_toolchain(needs_cuda)
        build_dir = extensions_root() / f"{name}-{key}"
        build_dir.mkdir(parents=True, exist_ok=True)
        for p in src_paths + hdr_paths:
            _copy_atomically(p, build_dir / p.name)
        module = cpp_extension.load(
            name=module_name,
            sources=[str(build_dir / p.name) for p in src_paths],
            extra_cflags=list(extra_cflags) or None,
            extra_cuda_cflags=list(extra_cuda_cflags) or None,
            extra_include_paths=[str(build_dir)],
            build_directory=str(build_dir),
            with_cuda=needs_cuda,
            verbose=verbose,
        )
        _loaded[module_name] = module
        return module
