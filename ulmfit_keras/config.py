"""The model config on the Keras side: ``ulmfit_core.lm_config.LMConfig``, read from anything.

There is one model schema, :class:`~ulmfit_core.lm_config.LMConfig` (the ``EXP.json`` sidecar of
stage 04, the ``config.json`` of a stage-05 export), with one set of defaults (the recipe's).
``EncoderConfig`` is the same class under the name this library has always exported.
:func:`read_config` reads either file; a plain JSON object of model fields (no ``format`` key)
is accepted too, with the defaults for what it leaves out. Keys that are not fields
(a stage-05 ``conversion`` record ...) are ignored.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ulmfit_core.ids import PAD_ID
from ulmfit_core.lm_config import ARCHS, LMConfig

logger = logging.getLogger(__name__)

__all__ = ["ARCHS", "PAD_ID", "EncoderConfig", "read_config"]

# The name ulmfit_keras has exported since before the schemas were merged: the same class.
EncoderConfig = LMConfig


def read_config(path: str | os.PathLike) -> LMConfig:
    """Read a ``config.json`` / ``EXP.json`` file (or a plain JSON object of model fields).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not an object, or not a valid config (the message names the file).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"model config {path} not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a JSON model config ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a model config must be a JSON object")
    return LMConfig.from_any(data, source=str(path))
