"""A trained task's directory: ``OUT/model.keras``, ``OUT/task.json`` and ``OUT/spm.model``.

``task.json`` holds what a predictor needs besides the model: the task kind (``classifier``,
``regressor``, ``tagger``), its labels or normalization, ``max_seq_len``, ``fixed_seq_len``,
``model_type`` and the export directory it was fine-tuned from.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import keras

import ulmfit_keras  # noqa: F401 - registers the Keras classes that model.keras names
from ulmfit_core.errors import InputError

__all__ = [
    "MODEL_FILE",
    "SPM_FILE",
    "TASK_FILE",
    "load_task_model",
    "read_task",
    "write_task_files",
]

MODEL_FILE = "model.keras"
TASK_FILE = "task.json"
SPM_FILE = "spm.model"


def write_task_files(out: Path, spm_path: Path, task: dict[str, Any]) -> None:
    """``OUT/spm.model`` (a copy of ``spm_path``) and ``OUT/task.json`` (written beside, then
    renamed)."""
    shutil.copyfile(spm_path, out / SPM_FILE)
    tmp = out / (TASK_FILE + ".tmp")
    tmp.write_text(json.dumps(task, indent=2), encoding="utf-8")
    os.replace(tmp, out / TASK_FILE)


def read_task(out: Path, kind: str) -> dict[str, Any]:
    """``OUT/task.json`` of a trained ``kind`` (classifier, regressor, tagger)."""
    if not (out / TASK_FILE).is_file():
        raise InputError(f"{out}: no {TASK_FILE}; train a {kind} into it first")
    task = json.loads((out / TASK_FILE).read_text(encoding="utf-8"))
    if task.get("task") != kind:
        raise InputError(f"{out} holds a {task.get('task')}, not a {kind}")
    return task


def load_task_model(out: Path, task: dict[str, Any]) -> keras.Model:
    """``OUT/model.keras``; a ``from_hub`` model runs the SavedModel's graph, so it needs
    ``safe_mode=False`` (as ``TFSMLayer`` does): only for directories this toolchain wrote."""
    return keras.saving.load_model(
        out / MODEL_FILE, safe_mode=task.get("model_type", "from_cp") != "from_hub"
    )
