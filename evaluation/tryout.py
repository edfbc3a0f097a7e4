"""Use an export as a downstream user would: plain ``tf.saved_model.load``, no project code.

The demo ends here, showing that the SavedModel tokenizes and encodes raw text by itself and
which parity figures the conversion proved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ulmfit_core.errors import InputError
from ulmfit_core.export_layout import CONFIG_FILE, SAVED_MODEL_DIR


@dataclass(frozen=True)
class Tryout:
    sentence: str
    token_ids: list[int]
    output_shape: tuple[int, ...]
    first_values: list[float]
    parity: dict[str, float]  # max |diff| vs PyTorch, per check recorded in config.json


def try_export(export_dir: str | Path, sentence: str) -> Tryout:
    """Encode ``sentence`` with ``export_dir/saved_model``'s ``string_encoder`` signature."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the SentencePiece ops the graph uses

    export_dir = Path(export_dir)
    config_path = export_dir / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"not an export directory: {export_dir} has no config.json")
    loaded = tf.saved_model.load(str(export_dir / SAVED_MODEL_DIR))
    result = loaded.signatures["string_encoder"](text=tf.constant([sentence]))
    mask = result["mask"].numpy()[0].astype(bool)
    ids = result["numericalized"].numpy()[0][mask].tolist()
    output = result["output"].numpy()
    parity = json.loads(config_path.read_text(encoding="utf-8"))["conversion"]["parity"]
    return Tryout(
        sentence=sentence,
        token_ids=[int(i) for i in ids],
        output_shape=tuple(output.shape),
        first_values=[round(float(v), 4) for v in output[0, 0, :4]],
        parity={name: float(report["max_abs_diff"]) for name, report in parity.items()},
    )
