"""The tiny encoders and exports the downstream-task tests train (fast on 2 CPU cores)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import sentencepiece

import ulmfit_keras as uk
from convert.export import write_saved_model
from ulmfit_keras import LayerGroup

SENT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sent200.tsv"


def tiny_config(vocab_size: int, arch: str = "awd-lstm") -> dict[str, Any]:
    """A model config as stage 04 writes it, for a 2-layer encoder of 16/24 units."""
    return {
        "arch": arch,
        "vocab_size": vocab_size,
        "emb_size": 16,
        "hidden_size": 24,
        "n_layers": 2,
        "pad_id": 1,
        "input_p": 0.1,
        "weight_p": 0.1,
        "embed_p": 0.05,
        "hidden_p": 0.1,
        "output_p": 0.1,
        "windows": None,
        "tie_weights": True,
        "out_bias": True,
        "bidir": False,
    }


def tiny_encoder(vocab_size: int, seed: int = 0) -> uk.ULMFiTEncoder:
    """A freshly initialised tiny encoder, the same for the same seed."""
    keras.utils.set_random_seed(seed)
    encoder, _ = uk.build_encoder(tiny_config(vocab_size), seed=seed)
    return encoder


def train_spm(texts: list[str], prefix: Path, vocab_size: int) -> Path:
    """A SentencePiece model of ``texts`` with fastai's special ids; returns ``PREFIX.model``."""
    corpus = prefix.with_name(prefix.name + "-corpus.txt")
    corpus.write_text("\n".join(texts), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        unk_id=0,
        pad_id=1,
        bos_id=2,
        eos_id=3,
        character_coverage=1.0,
        minloglevel=2,
    )
    return prefix.with_name(prefix.name + ".model")


def write_tiny_export(root: Path, arch: str = "awd-lstm") -> Path:
    """The converter's layout in ``root``: config.json, keras_weights/, spm_model/ (a 300-piece
    model of sent200's sentences) and saved_model/, for a tiny randomly initialised encoder."""
    (root / "spm_model").mkdir(parents=True)
    (root / "keras_weights").mkdir()
    with SENT.open(encoding="utf-8") as handle:
        texts = [row["sentence"] for row in csv.DictReader(handle, delimiter="\t")]
    train_spm(texts, root / "spm_model" / "m", vocab_size=300)
    config = tiny_config(300, arch)
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    keras.utils.set_random_seed(0)
    encoder, lm = uk.build_encoder(config, seed=0)
    lm.save_weights(root / "keras_weights" / "tiny.weights.h5")
    # The SavedModel the converter writes, for --model-type from_hub.
    write_saved_model(encoder, lm, root / "spm_model" / "m.model", root, None)
    return root


class ChangedGroups(keras.callbacks.Callback):
    """Records, per epoch, which layer groups' trained weights changed (BatchNorm moving
    statistics left out: they change whether the group trains or not)."""

    def __init__(self, groups: list[LayerGroup]) -> None:
        super().__init__()
        self.groups = groups
        self.per_epoch: list[list[str]] = []
        self._values = self._snapshot()

    def _snapshot(self) -> list[dict[str, np.ndarray]]:
        return [
            {v.path: np.array(v.numpy()) for v in g.variables if "moving_" not in v.path}
            for g in self.groups
        ]

    def on_epoch_end(self, epoch, logs=None) -> None:
        del epoch, logs
        now = self._snapshot()
        self.per_epoch.append(
            [
                group.name
                for group, old, new in zip(self.groups, self._values, now, strict=True)
                if any(not np.array_equal(old[path], new[path]) for path in old)
            ]
        )
        self._values = now
