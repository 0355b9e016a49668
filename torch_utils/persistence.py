"""Data-only reading of checkpoints: NVIDIA network pickles and ``torch.save`` files.

NVIDIA's stylegan2-ada-pytorch stores networks as pickles of "persistent" objects: each module is pickled
as a call ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` holds the *source code*
of the module that defined the class (``module_src``), the class name and the module's ``__dict__``
(``state``: ``_init_args``, ``_init_kwargs``, ``_parameters``, ``_buffers``, ``_modules`` with nested
persistent objects, hook dictionaries, plain attributes). NVIDIA's own loader executes ``module_src``;
a plain ``pickle.load`` can run anything at all. Neither is acceptable for files downloaded from the web.

This module reads such pickles with a restricted unpickler:

* ``_reconstruct_persistent_obj`` builds an inert :class:`PersistentRecord` (class name, init arguments,
  tensors, child records). ``module_src`` is kept as a string for inspection and never executed.
* Only the handful of other globals such pickles need are resolved, each to a narrow, data-only
  implementation (see ``_ALLOWED_GLOBALS``); any other global is refused with
  :class:`UnsafeCheckpointError`, naming the global and the file, before anything is called.
* The ``BUILD`` opcode (which calls ``__setstate__`` or writes ``__dict__``) is only honoured where such
  pickles use it: on plain numeric numpy dtypes, and as a no-op on dictionaries with empty state.
* Tensor storages are embedded as bytes produced by ``torch.save``; they are decoded with
  ``torch.load(weights_only=True)``, PyTorch's own restricted loader.

Records are turned into the project's modules with :func:`instantiate` (constructor from ``class_name``
and ``_init_kwargs``, weights copied strictly from :meth:`PersistentRecord.state_dict`).

``torch.save`` files go through :func:`safe_torch_load` (``weights_only=True``), which maps PyTorch's
refusals and read errors onto the same two exception classes.
"""

from __future__ import annotations

import argparse
import codecs
import io
import os
import pickle
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np
import torch

from dnnlib.util import EasyDict

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "PersistentRecord",
    "load_network_pickle",
    "safe_torch_load",
    "instantiate",
    "plain",
    "allowed_globals",
]

# ---------------------------------------------------------------------------------------------------------------------
# Errors.


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable or not in a supported format.

    ``str(err)`` is a single line naming the file, the reason and (when set) the accepted formats, so that
    entry scripts can print it as is.
    """

    def __init__(self, path: str | os.PathLike[str] | None, reason: str, accepted: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the underlying error printed
        self.accepted = accepted
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"cannot load checkpoint '{self.path}'" if self.path is not None else "cannot load checkpoint"
        text = f"{where}: {self.reason}"
        if self.accepted:
            text += f" (accepted formats: {self.accepted})"
        return text

    def with_context(self, path: str | os.PathLike[str] | None = None, accepted: str | None = None) -> CheckpointError:
        """A copy of this error (same class) with the file path and/or the accepted formats filled in."""
        err = type(self).__new__(type(self))  # copy without re-running __init__ (subclasses add fields)
        err.__dict__.update(self.__dict__)
        if path is not None:
            err.path = os.fspath(path)
        if accepted is not None:
            err.accepted = accepted
        Exception.__init__(err, str(err))
        return err


class UnsafeCheckpointError(CheckpointError):
    """The file asks for something a data-only loader must not do (an unknown global, a code-running opcode).

    Nothing from the file has been executed when this is raised; ``global_name`` names the offending global
    (``module.name``) when there is one.
    """

    def __init__(self, path: str | os.PathLike[str] | None, reason: str, accepted: str | None = None,
                 global_name: str | None = None):
        self.global_name = global_name
        super().__init__(path, reason, accepted)


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler; carries the offending global so the caller can name it with the file."""

    def __init__(self, reason: str, global_name: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.global_name = global_name


# ---------------------------------------------------------------------------------------------------------------------
# Inert persistent objects.


@dataclass(repr=False, eq=False)
class PersistentRecord:
    """What a pickled NVIDIA persistent object holds, as plain data; nothing in it is ever executed.

    ``state`` is the module's pickled ``__dict__``: ``_init_args``/``_init_kwargs`` (constructor call),
    ``_parameters``/``_buffers`` (name -> tensor or None), ``_modules`` (name -> child record), plus plain
    attributes. ``module_src`` is the source text NVIDIA would have executed; it is only kept for inspection.
    """

    class_name: str
    state: dict[str, Any]
    version: Any = None
    module_src: str | None = None
    kind: str = "class"
    extra: dict[str, Any] = field(default_factory=dict)  # any other meta entries, kept verbatim

    @property
    def init_args(self) -> tuple:
        return tuple(plain(self.state.get("_init_args", ()) or ()))

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """Constructor keywords as plain Python values (EasyDicts become dicts)."""
        return dict(plain(self.state.get("_init_kwargs", {}) or {}))

    @property
    def parameters(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in _as_mapping(self.state.get("_parameters"), "_parameters").items() if v is not None}

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        """Persistent buffers only: the ones ``state_dict()`` of the original module would contain."""
        skip = set(self.state.get("_non_persistent_buffers_set", ()) or ())
        buffers = _as_mapping(self.state.get("_buffers"), "_buffers")
        return {k: v for k, v in buffers.items() if v is not None and k not in skip}

    @property
    def children(self) -> dict[str, PersistentRecord]:
        out = {}
        for name, child in _as_mapping(self.state.get("_modules"), "_modules").items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise ValueError(f"{self.class_name}.{name} is a {type(child).__name__}, not a persistent module")
            out[name] = child
        return out

    @property
    def attributes(self) -> dict[str, Any]:
        """Plain (public) attributes of the pickled module, e.g. ``img_resolution``."""
        return {k: v for k, v in self.state.items() if not k.startswith("_") and k != "training"}

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flat ``{dotted.name: tensor}`` of parameters and persistent buffers, as ``Module.state_dict()``."""
        out: dict[str, torch.Tensor] = {}
        for name, tensor in {**self.parameters, **self.buffers}.items():
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
            out[prefix + name] = tensor
        for name, child in self.children.items():
            out.update(child.state_dict(prefix=f"{prefix}{name}."))
        return out

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name}, children={list(self.children)}, init_kwargs={self.init_kwargs})"


def _as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is a {type(value).__name__}, expected a mapping")
    return value


def plain(value: Any) -> Any:
    """Deep-convert pickled containers into plain Python ones: EasyDict/OrderedDict -> dict, numpy scalars ->
    Python numbers, tuples kept as tuples, lists as lists."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------------------------------
# The allowed globals, each a narrow data-only implementation.


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Stand-in for the function NVIDIA pickles call: returns an inert record and never runs ``module_src``.

    It carries NVIDIA's name so that the restricted unpickler (and the tests, which write such pickles) can
    refer to it by the path the pickles use.
    """
    if not isinstance(meta, Mapping):
        raise _Refused(f"persistent object metadata is a {type(meta).__name__}, expected a dict")
    kind = meta.get("type", "class")
    if kind != "class":
        raise _Refused(f"unsupported persistent object type {kind!r}")
    class_name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, Mapping):
        raise _Refused("persistent object metadata lacks 'class_name' or 'state'")
    module_src = meta.get("module_src")
    extra = {k: v for k, v in meta.items() if k not in ("type", "version", "module_src", "class_name", "state")}
    return PersistentRecord(class_name=class_name, state=dict(state), version=meta.get("version"),
                            module_src=module_src if isinstance(module_src, str) else None, kind=kind, extra=extra)


def _load_storage_from_bytes(data: Any) -> torch.storage.TypedStorage:
    """Decode a storage pickled by ``Storage.__reduce__`` (bytes of a legacy ``torch.save``) with
    PyTorch's weights-only loader, on the CPU."""
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused(f"tensor storage payload is a {type(data).__name__}, expected bytes")
    try:
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        name = _torch_refused_global(str(exc))
        if name is not None:
            raise _Refused(f"embedded tensor storage refers to the global {name}", name) from exc
        raise
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _Refused(f"embedded tensor storage decoded to a {type(storage).__name__}, expected a storage")
    return storage


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """A tensor view of a decoded storage. ``requires_grad``, backward hooks and metadata are ignored on
    purpose: only the values are needed, and hooks are the one place a pickle could plant callables."""
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _Refused(f"tensor built from a {type(storage).__name__}, expected a storage")
    if not isinstance(storage_offset, int) or not all(isinstance(v, int) for v in (*size, *stride)):
        raise _Refused("tensor offset/size/stride must be integers")
    size, stride = tuple(size), tuple(stride)
    if isinstance(storage, torch.storage.TypedStorage):
        dtype, untyped = storage.dtype, storage._untyped_storage
    else:
        dtype, untyped = torch.uint8, storage
    # Tensor.set_ silently *grows* a storage that is too small (exposing uninitialised memory, or allocating
    # whatever a forged offset asks for), so the view is checked against the decoded storage first.
    if len(size) != len(stride) or storage_offset < 0 or any(v < 0 for v in (*size, *stride)):
        raise _Refused("tensor has a negative offset, size or stride")
    if all(size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        itemsize = torch.empty((), dtype=dtype).element_size()
        if (last + 1) * itemsize > untyped.nbytes():
            raise _Refused(f"tensor view of shape {list(size)} reaches out of bounds of its storage")
    return torch.empty((0,), dtype=dtype).set_(untyped, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> torch.Tensor:
    """Parameters are read as plain tensors (their requires_grad, hooks and extra state are dropped)."""
    if not isinstance(data, torch.Tensor):
        raise _Refused(f"parameter built from a {type(data).__name__}, expected a tensor")
    return data


_NUMPY_DTYPE_SPEC = re.compile(r"[?biufc]\d{0,2}")


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` restricted to plain numeric kinds (no object, structured or void dtypes)."""
    if not isinstance(spec, str) or not _NUMPY_DTYPE_SPEC.fullmatch(spec):
        raise _Refused(f"numpy dtype {spec!r} is not a plain numeric type")
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.kind not in "?biufc" or dtype.hasobject:
        raise _Refused(f"numpy dtype {spec!r} is not a plain numeric type")
    return dtype


def _numpy_scalar(dtype: Any, data: Any = None) -> np.generic:
    """A numpy scalar decoded from its raw bytes (what numpy pickles for e.g. ``np.float64``)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "?biufc" or dtype.hasobject:
        raise _Refused("numpy scalar of a non-numeric dtype")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused("numpy scalar payload has the wrong size")
    return np.frombuffer(data, dtype=dtype)[0]


def _codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """Protocol-2 pickles spell bytes as ``_codecs.encode(str, 'latin1')``; only that use is honoured."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _Refused("_codecs.encode is only allowed for latin1 byte strings")
    return codecs.encode(text, "latin1")


def _allowed_set(items: Any = ()) -> set:
    return set(items)


def _allowed_frozenset(items: Any = ()) -> frozenset:
    return frozenset(items)


# (module, name) as written in the pickle -> what it resolves to. Why each one is needed:
#   _reconstruct_persistent_obj        every NVIDIA module (inert record instead of executing module_src)
#   _rebuild_tensor_v2 / _parameter*   every tensor and parameter in a plain pickle of torch objects
#   torch.storage._load_from_bytes     tensor storages (bytes of a legacy torch.save, weights-only decoded)
#   collections.OrderedDict            nn.Module's _parameters/_buffers/_modules/hook dicts
#   dnnlib.util.EasyDict               init kwargs and training_set_kwargs written by NVIDIA's training script
#   numpy scalar / dtype               attributes such as weight_gain = 1/np.sqrt(fan_in) are numpy float64
#   builtins.set (+ __builtin__)       nn.Module._non_persistent_buffers_set with pickle protocols 2 and 3
#   builtins.frozenset                 the same for frozensets (harmless constructor of pickled values)
#   _codecs.encode                     how protocol 2 writes bytes (numpy scalar payloads), latin1 only
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("builtins", "set"): _allowed_set,
    ("builtins", "frozenset"): _allowed_frozenset,
    ("__builtin__", "set"): _allowed_set,
    ("__builtin__", "frozenset"): _allowed_frozenset,
    ("_codecs", "encode"): _codecs_encode,
}


def allowed_globals() -> list[str]:
    """The ``module.name`` globals a network pickle may reference (for documentation and error messages)."""
    return sorted(f"{module}.{name}" for module, name in _ALLOWED_GLOBALS)


# ---------------------------------------------------------------------------------------------------------------------
# The restricted unpickler.


def _checked_build(unpickler: _RestrictedUnpickler) -> None:
    """BUILD opcode: honoured only for numeric numpy dtypes (their byte order) and empty dict state."""
    stack = unpickler.stack
    state = stack.pop()
    inst = stack[-1]
    if isinstance(inst, np.dtype) and inst.kind in "?biufc" and not inst.hasobject:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]);
        # for a plain numeric type everything but the byte order is fixed.
        if (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)
                and state[5:8] == (-1, -1, 0) and (len(state) == 8 or state[8] is None)):
            inst.__setstate__(state)
            return
        raise _Refused("unexpected state for a numpy dtype")
    if isinstance(inst, dict) and (state is None or (type(state) is dict and not state)):
        return
    raise _Refused(f"pickle tries to set the state of a {type(inst).__name__} object")


def _refuse_opcode(name: str) -> Callable[[_RestrictedUnpickler], None]:
    def refuse(unpickler: _RestrictedUnpickler) -> None:
        raise _Refused(f"pickle opcode {name} is not allowed")

    return refuse


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler, so that opcodes can be restricted
    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _checked_build
    # Persistent ids are not used by these pickles; refuse them explicitly rather than relying on the default.
    dispatch[pickle.PERSID[0]] = _refuse_opcode("PERSID")
    dispatch[pickle.BINPERSID[0]] = _refuse_opcode("BINPERSID")

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise _Refused(f"refusing to load global {module}.{name}: not allowed in a data-only network pickle",
                           f"{module}.{name}")
        return target


def load_network_pickle(source: str | os.PathLike[str] | BinaryIO) -> Any:
    """Unpickle an NVIDIA network pickle without executing anything from it.

    Returns the pickled object (usually a dict with ``G``, ``D``, ``G_ema`` ... whose networks are
    :class:`PersistentRecord` s). Raises :class:`UnsafeCheckpointError` for anything outside the allowed
    globals/opcodes and :class:`CheckpointError` for missing, truncated or malformed files.
    """
    path = None if hasattr(source, "read") else os.fspath(source)  # type: ignore[arg-type]
    try:
        if path is None:
            return _RestrictedUnpickler(source).load()  # type: ignore[arg-type]
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except _Refused as exc:
        raise UnsafeCheckpointError(path, exc.reason, global_name=exc.global_name) from None
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except IsADirectoryError:
        raise CheckpointError(path, "is a directory, not a file") from None
    except EOFError:
        raise CheckpointError(path, "the file is empty or truncated") from None
    except RecursionError:
        raise CheckpointError(path, "the pickle is nested too deeply") from None
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError,
            OSError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
        raise CheckpointError(path, f"not a readable network pickle ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------------------------------------------------
# torch.save files.

_TORCH_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _torch_refused_global(message: str) -> str | None:
    """The global named in a weights-only refusal from ``torch.load``, or None if it is another error."""
    if "GLOBAL" not in message and "global" not in message:
        return None
    match = _TORCH_GLOBAL.search(message)
    return match.group(1) if match else None


# Besides tensors and containers, checkpoints written by common training scripts (rosinality's train.py)
# store their argparse options; a Namespace is a plain attribute bag, so it is safe to rebuild.
_EXTRA_TORCH_SAFE_GLOBALS: list[Any] = [argparse.Namespace]


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with its failures mapped onto
    :class:`UnsafeCheckpointError` (a refused global; nothing was executed) and :class:`CheckpointError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(path, "file not found")
    if os.path.isdir(path):
        raise CheckpointError(path, "is a directory, not a file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(path, "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation chatter from legacy-format files
            with torch.serialization.safe_globals(_EXTRA_TORCH_SAFE_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        name = _torch_refused_global(str(exc))
        if name is not None:
            raise UnsafeCheckpointError(
                path, f"refusing to load global {name}: not allowed in a data-only checkpoint", global_name=name
            ) from None
        raise CheckpointError(path, f"not a readable PyTorch file ({_first_line(exc)})") from None
    except EOFError:
        raise CheckpointError(path, "the file is truncated") from None
    except Exception as exc:  # zip/stream errors, legacy-format KeyErrors, ... all mean "not a valid file"
        raise CheckpointError(
            path, f"not a readable PyTorch file, corrupt or truncated? ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception message (PyTorch's read errors run to several lines of advice)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    text = text.splitlines()[0]
    return text.split(". ")[0][:200]


# ---------------------------------------------------------------------------------------------------------------------
# Records -> modules.


def instantiate(record: PersistentRecord, classes: Mapping[str, type[torch.nn.Module]],
                overrides: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Build the project's class named ``record.class_name`` from the record's init arguments (plus
    ``overrides``, merged into nested dicts) and copy the record's tensors into it strictly.

    Raises ValueError when no class of that name is known, the constructor rejects the arguments, or the
    parameter/buffer names or shapes differ.
    """
    cls = classes.get(record.class_name)
    if cls is None:
        raise ValueError(f"no known class for persistent object {record.class_name!r} "
                         f"(known: {', '.join(sorted(classes))})")
    kwargs = merge_kwargs(record.init_kwargs, overrides or {})
    try:
        module = cls(*record.init_args, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{record.class_name} does not accept the pickled arguments: {exc}") from exc
    load_state_dict_strict(module, record.state_dict())
    return module


def merge_kwargs(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``overrides``; nested dicts (``mapping_kwargs`` ...) are merged, not replaced."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_kwargs(out[key], value)
        else:
            out[key] = value
    return out


def load_state_dict_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """``module.load_state_dict(state, strict=True)`` with one readable ValueError listing what differs."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected {_preview(unexpected)}")
        if wrong:
            parts.append("shape mismatch " + _preview(
                [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]))
        raise ValueError(f"weights do not fit {type(module).__name__}: " + "; ".join(parts))
    with torch.no_grad():
        module.load_state_dict(dict(state), strict=True)


def _preview(items: list[str], limit: int = 4) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
