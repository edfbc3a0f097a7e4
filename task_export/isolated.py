"""Run ``model_text.onnx`` in a child process that never starts TensorFlow.

onnxruntime-extensions' SentencePiece kernel segfaults in a process where TensorFlow's runtime
is up (both bundle their own SentencePiece and protobuf), so stage 13, which holds the Keras
model, checks the strings-in ONNX through ``python -m task_export.isolated MODEL IN OUT``:
texts in as JSON, outputs back as ``.npz``. A deployment loads it with onnxruntime alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["run_onnx_text"]


def run_onnx_text(path: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """``model_text.onnx``'s outputs on ``texts``, computed in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "texts.json", Path(tmp) / "outputs.npz"
        inputs.write_text(json.dumps(texts), encoding="utf-8")
        command = [sys.executable, "-m", __name__, str(path), str(inputs), str(outputs)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{path.name} failed in onnxruntime: {done.stderr.strip()[-2000:]}")
        with np.load(outputs, allow_pickle=False) as arrays:
            return {name: _strings_as_objects(arrays[name]) for name in arrays.files}


def _strings_as_objects(array: np.ndarray) -> np.ndarray:
    return array.astype(object) if array.dtype.kind == "U" else array


def _main(model: str, texts_json: str, outputs: str) -> None:
    from task_export.runtimes import load_onnx

    texts = json.loads(Path(texts_json).read_text(encoding="utf-8"))
    result = load_onnx(model)(text=np.asarray(texts, dtype=object))
    # strings as unicode arrays: an .npz of object arrays would need pickle to read
    np.savez(outputs, **{k: v.astype(str) if v.dtype == object else v for k, v in result.items()})


if __name__ == "__main__":
    _main(*sys.argv[1:])
