"""Reading and writing ``.pth`` files safely, with torch as the only framework.

A fastai ``Learner.save`` file is ``{'model': state_dict, 'opt': optimizer_state}``. Written by
fastai itself, its optimizer state pickles fastcore's ``L`` and numpy float scalars (the scheduled
hyper-parameters), so ``torch.load(weights_only=True)`` (torch >= 2.6's default) refuses it.
What we write goes through :func:`plain_state` first: lists, dicts, tensors and Python numbers
only, so a plain ``torch.load(path)`` opens it and fastai's ``Learner.load`` still reads it.

For the files fastai (or an older version of stage 04) wrote, ``weights_only=False`` would let a
``.pth`` from the internet run code while it is unpickled. :func:`load_pth` keeps
``weights_only=True`` and allowlists exactly those few globals, mapped to inert stand-ins:

* ``fastcore.foundation.L`` → :class:`_InertL`, turned into a plain ``list`` after loading;
* ``numpy.dtype`` → :class:`_InertDType`, which only records the dtype's name and byte order;
* ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar`` (numpy 1 / 2) →
  :func:`_numpy_scalar`, which decodes the scalar's raw bytes into a Python ``int``/``float``.

Nothing else is allowed; anything else is refused with an :class:`InputError` naming the global.
The converter (TensorFlow environment, no fastai) imports this module, so it must not import
fastai or fastcore.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ulmfit_core.artifacts import atomic_file
from ulmfit_core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["load_pth", "plain_state", "save_pth"]


class _InertL:
    """Stands in for ``fastcore.foundation.L``: keeps its ``items``, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) as pickle may give it
            state = state[0]
        items = state.get("items", []) if isinstance(state, dict) else []
        self.items = list(items) if isinstance(items, list | tuple) else []


class _InertDType:
    """Stands in for ``numpy.dtype``: records the type code and byte order, nothing else."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = True) -> None:  # noqa: ARG002 - numpy's signature
        self.spec = spec if isinstance(spec, str) else None
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, align, flags)
        if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str):
            self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        if self.spec is None:
            raise pickle.UnpicklingError("a numpy dtype without a type code")
        dtype = np.dtype(self.spec)
        if dtype.kind not in "biuf":  # object, string, void... dtypes are not plain numbers
            raise pickle.UnpicklingError(f"numpy scalars of dtype {self.spec!r} are not allowed")
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" else dtype


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | bool:
    """Stands in for ``numpy.core.multiarray.scalar``: raw bytes → a Python number."""
    if not isinstance(dtype, _InertDType) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("only numeric numpy scalars stored as raw bytes are allowed")
    np_dtype = dtype.to_numpy()
    if len(data) != np_dtype.itemsize:
        raise pickle.UnpicklingError(f"a {np_dtype} scalar needs {np_dtype.itemsize} bytes")
    return np.frombuffer(data, dtype=np_dtype)[0].item()


_SAFE_GLOBALS = [
    (_InertL, "fastcore.foundation.L"),
    (_InertDType, "numpy.dtype"),
    (_numpy_scalar, "numpy.core.multiarray.scalar"),
    (_numpy_scalar, "numpy._core.multiarray.scalar"),
]
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)|unrecognized function (\S+)|got (<class [^>]+>)")


def _materialize(obj: Any) -> Any:
    """Replace every :class:`_InertL` by a plain list, recursively (tensors are left alone)."""
    if isinstance(obj, _InertL):
        return [_materialize(item) for item in obj.items]
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _materialize(value)
        return obj
    if isinstance(obj, list):
        return [_materialize(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(item) for item in obj)
    return obj


def _refusal(path: Path, err: Exception) -> InputError:
    match = _GLOBAL_IN_MESSAGE.search(str(err))
    what = next((g for g in match.groups() if g), "a global") if match else "a global"
    return InputError(
        f"{path}: refusing to load: its pickle needs {what}, which is not on the allowlist of "
        "inert types (tensors, fastai's optimizer state); unpickling it could run arbitrary "
        "code. Only load .pth files written by fastai/torch that hold weights."
    )


def load_pth(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a ``.pth`` with ``weights_only=True``: ``{'model': state_dict, ...}``.

    A fastai ``Learner.save`` file gives ``{'model': ..., 'opt': ...}`` (the optimizer state's
    ``L`` lists become plain lists and numpy scalars Python numbers); other dicts with a
    ``'model'`` key (e.g. our training checkpoints) are returned whole; a bare state dict is
    wrapped as ``{'model': state_dict}``.

    Raises:
        InputError: a missing, truncated or non-torch file, or a pickle that needs any global
            beyond the inert allowlist.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} not found")
    if not zipfile.is_zipfile(path):
        raise InputError(
            f"{path}: not a torch zip archive (truncated, or not written by torch.save >= 1.6)"
        )
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err) or "Unsupported" in str(err):
            raise _refusal(path, err) from None
        raise InputError(f"{path}: cannot be unpickled ({_first_line(err)})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as err:
        raise InputError(f"{path}: damaged or truncated torch file ({_first_line(err)})") from None
    state = _materialize(state)
    if isinstance(state, Mapping) and "model" in state:
        if not _is_state_dict(state["model"]):
            raise InputError(f"{path}: its 'model' entry is not a state dict of tensors")
        return dict(state)
    if _is_state_dict(state):
        return {"model": state}
    raise InputError(
        f"{path}: neither a state dict nor a fastai Learner.save file (got {type(state).__name__})"
    )


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def plain_state(obj: Any) -> Any:
    """A copy of ``obj`` made of types that ``torch.load(weights_only=True)`` reads unaided.

    Built for fastai's ``Optimizer.state_dict()``: its ``hypers`` are an ``L`` of dicts whose
    scheduled values are numpy scalars. Mappings become dicts, tuples stay tuples, other
    sequences (``L`` included) become lists, numpy scalars Python numbers (exact: ``item()``
    widens, never rounds), numpy arrays and tensor subclasses plain tensors. Tensors are not
    copied, so a checkpoint written mid-training costs no extra memory. fastai's
    ``Optimizer.load_state_dict`` accepts the result (it only zips and indexes ``hypers``).

    Raises:
        TypeError: a value of any other type, which would make the file need an allowlist.
    """
    if isinstance(obj, torch.Tensor):
        # A Parameter or fastai's TensorBase would pickle its class; the data is what matters.
        return obj if type(obj) is torch.Tensor else obj.as_subclass(torch.Tensor)
    if obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, np.generic):  # before float: numpy's float64 subclasses it
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"a numpy {obj.dtype} scalar has no plain equivalent")
        return obj.item()
    for base in (bool, int, float, str, bytes):  # an IntEnum, say, would pickle its class
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj, copy=True))
    if isinstance(obj, Mapping):
        return {plain_state(k): plain_state(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(plain_state(item) for item in obj)
    if isinstance(obj, Sequence):
        return [plain_state(item) for item in obj]
    raise TypeError(
        f"{type(obj).__module__}.{type(obj).__qualname__} cannot be saved in a plain .pth "
        "(torch.load with weights_only=True would refuse it)"
    )


def save_pth(state: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it onto ``path``."""
    with atomic_file(path) as tmp:
        torch.save(state, tmp)
