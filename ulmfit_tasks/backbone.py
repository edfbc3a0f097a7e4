"""The pretrained encoder a task fine-tunes: found in a stage-05 export directory, rebuilt.

The architecture comes from the export's ``config.json`` (flags only check it or override the
fine-tuning dropouts: ``--awd-off``, ``--zoneout``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras

from ulmfit_core.errors import InputError
from ulmfit_core.export_layout import CONFIG_FILE, KERAS_WEIGHTS_DIR, SAVED_MODEL_DIR, SPM_DIR
from ulmfit_core.lm_config import LMConfig
from ulmfit_keras import SavedModelEncoder, build_encoder, find_weights_file, read_config
from ulmfit_tasks.config import TrainingConfig

logger = logging.getLogger(__name__)

__all__ = ["encoder_config", "find_spm_model", "load_backbone", "resolve_export_dir"]


def resolve_export_dir(path: str | os.PathLike) -> Path:
    """The export dir, given it or its ``keras_weights`` folder (the predecessor's flag)."""
    path = Path(path)
    if path.name == KERAS_WEIGHTS_DIR or path.suffix == ".h5":
        path = path.parent if path.name == KERAS_WEIGHTS_DIR else path.parent.parent
    if not (path / CONFIG_FILE).is_file():
        raise InputError(f"{path}: not an export directory (no {CONFIG_FILE}); run 05_convert")
    # Absolute: a from_hub model.keras names the SavedModel it runs, and is reloaded from anywhere.
    return path.resolve()


def find_spm_model(export_dir: Path, spm_model_file: Path | None) -> Path:
    """``--spm-model-file`` if given, else the one ``.model`` in the export's ``spm_model/``."""
    if spm_model_file is not None:
        return spm_model_file
    found = sorted((export_dir / SPM_DIR).glob("*.model"))
    if len(found) != 1:
        raise InputError(f"{export_dir}/spm_model: expected one .model file; pass --spm-model-file")
    return found[0]


def encoder_config(config: TrainingConfig, export_dir: Path) -> LMConfig:
    """The export's model config with the fine-tuning overrides (weight-drop, zoneout)."""
    enc_config = read_config(export_dir / CONFIG_FILE)
    # The architecture comes from the export; the flag is only a check that the user agrees.
    if config.qrnn != (enc_config.arch == "qrnn"):
        raise InputError(
            f"--qrnn is {'on' if config.qrnn else 'off'} but the export in {export_dir} is "
            f"{enc_config.arch}"
        )
    if config.awd_off:
        enc_config = enc_config.replace(weight_p=0.0)
    if config.zoneout is not None:
        if enc_config.arch != "qrnn":
            raise InputError(f"--zoneout is a QRNN option; the export in {export_dir} is an LSTM")
        if config.model_type == "from_hub":
            raise InputError(
                "--zoneout needs --model-type from_cp: the SavedModel runs without dropout"
            )
        enc_config = enc_config.replace(zoneout=config.zoneout)
    return enc_config


def load_backbone(config: TrainingConfig, export_dir: Path) -> keras.Model:
    """The export's encoder with its pretrained weights (seeded; dropouts as configured).

    ``from_cp`` rebuilds the Keras encoder from ``keras_weights/``, with the export's dropouts
    (weight-drop off with ``--awd-off``, zoneout from ``--zoneout``). ``from_hub`` wraps the
    ``saved_model/`` in a trainable :class:`SavedModelEncoder`: its variables fine-tune with the
    same tricks, but its graph was exported for inference and runs without dropout; AWD
    weight-drop is then applied from outside by :class:`~ulmfit_keras.WeightDropCallback`
    (:func:`ulmfit_tasks.fine_tuning.fine_tune` adds it).
    """
    keras.utils.set_random_seed(config.seed)
    enc_config = encoder_config(config, export_dir)
    if config.model_type == "from_hub":
        if not (export_dir / SAVED_MODEL_DIR / "saved_model.pb").is_file():
            raise InputError(f"{export_dir}: no {SAVED_MODEL_DIR}/ for --model-type from_hub")
        ids = keras.Input((config.fixed_seq_len,), dtype="int32", name="token_ids")
        layer = SavedModelEncoder(export_dir, name="saved_model_encoder")
        logger.info("from_hub: fine-tuning the SavedModel in %s", export_dir)
        return keras.Model(ids, layer(ids), name="saved_model_backbone")
    encoder, lm = build_encoder(enc_config, fixed_seq_len=config.fixed_seq_len, seed=config.seed)
    lm.load_weights(find_weights_file(export_dir))  # raises on a mis-shaped variable
    return encoder
