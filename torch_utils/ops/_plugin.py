"""Lazy, warn-once loading of the CUDA extensions in ``torch_utils/ops/cuda``."""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from types import ModuleType

_CUDA_DIR = Path(__file__).resolve().parent / "cuda"
_modules: dict[str, ModuleType | None] = {}
_lock = threading.Lock()
_warned = False


def _headers() -> list[Path]:
    return sorted(_CUDA_DIR.glob("*.h"))


def load_emulation(name: str) -> ModuleType:
    """CPU build of the ``name`` kernel (same arithmetic and binding, host loop) -- for tests only."""
    from torch_utils import custom_ops

    return custom_ops.get_plugin(
        f"{name}_emulation",
        sources=[_CUDA_DIR / f"{name}.cpp", _CUDA_DIR / f"{name}_emulation.cpp"],
        headers=_headers(),
        extra_cflags=["-DSGILO_CPU_EMULATION", "-O2"],
    )


def load(name: str) -> ModuleType | None:
    """The compiled ``name`` extension (``cuda/<name>.cpp`` + ``cuda/<name>.cu``), or None if it cannot be built.

    The first failure in the process emits a single warning; afterwards the callers silently use the
    PyTorch implementation.
    """
    global _warned
    with _lock:
        if name in _modules:
            return _modules[name]
        from torch_utils import custom_ops

        try:
            module = custom_ops.get_plugin(
                name,
                sources=[_CUDA_DIR / f"{name}.cpp", _CUDA_DIR / f"{name}.cu"],
                headers=_headers(),
                extra_cuda_cflags=["-O3"],  # no fast-math: results must match the PyTorch path closely
            )
        except Exception as exc:  # noqa: BLE001 -- any build problem means "use the PyTorch path"
            module = None
            if not _warned:
                _warned = True
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                warnings.warn(
                    f"torch_utils.ops: could not build the CUDA extension '{name}' ({reason}); "
                    "using the PyTorch implementation of the custom ops instead (correct, but slower).",
                    RuntimeWarning,
                    stacklevel=3,
                )
        _modules[name] = module
        return module
