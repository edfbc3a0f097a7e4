"""Training drivers behind ``scripts/10_train_classifier.py`` / ``11_train_regressor.py``.

:func:`train_classifier` reads the TSV data, loads the converted encoder from an export
directory, fine-tunes a head with ULMFiT's tricks (STLR / one-cycle, discriminative learning
rates, gradual unfreezing) and writes ``OUT/model.keras`` + ``OUT/task.json`` + ``OUT/spm.model``;
:func:`train_regressor` does the same with a linear output. Each task first builds a
:class:`TaskSetup` (data, encoder, head, validation callback), which :func:`fine_tune` trains and
:func:`find_task_lr` sweeps with the LR finder. :class:`TextClassifierPredictor`
reloads a classifier directory and predicts label probabilities (and, for the attention head,
per-token weights); :class:`TextRegressorPredictor` predicts scores with the label normalization
undone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import sentencepiece

from ulmfit_core.errors import InputError
from ulmfit_core.export_layout import CONFIG_FILE, KERAS_WEIGHTS_DIR, SAVED_MODEL_DIR, SPM_DIR
from ulmfit_core.ids import PAD_ID
from ulmfit_keras.attention_viz import top_tokens, write_attention_html, write_attention_png
from ulmfit_keras.config import EncoderConfig, read_config
from ulmfit_keras.heads_tasks import (
    BranchingAttentionClassifier,
    LabelNormalizer,
    ULMFiTClassifier,
    ULMFiTRegressor,
)
from ulmfit_keras.loading import SavedModelEncoder, find_weights_file
from ulmfit_keras.lr_finder import LRFinderResult, find_lr, plot_lr_finder
from ulmfit_keras.models import build_encoder
from ulmfit_keras.schedules import OneCycleLR, SlantedTriangularLR
from ulmfit_keras.task_data import (
    TextExamples,
    encode_texts,
    float_targets,
    label_indices,
    read_label_map,
    read_tsv,
    split_validation,
)
from ulmfit_keras.training_tricks import (
    DiscriminativeAdam,
    GradualUnfreezing,
    discriminative_multipliers,
    layer_groups,
)
from ulmfit_keras.weight_drop import WeightDropCallback, weight_drop_variables

logger = logging.getLogger(__name__)

__all__ = [
    "ClassifierConfig",
    "ClassifierResult",
    "FineTuneConfig",
    "RegressorConfig",
    "RegressorResult",
    "TaskSetup",
    "TextClassifierPredictor",
    "TextRegressorPredictor",
    "TrainingConfig",
    "describe_predictions",
    "find_classifier_lr",
    "find_regressor_lr",
    "find_spm_model",
    "find_task_lr",
    "fine_tune",
    "load_backbone",
    "load_task_model",
    "read_task",
    "render_attention",
    "resolve_export_dir",
    "train_classifier",
    "train_regressor",
    "write_task",
]

MODEL_FILE = "model.keras"
TASK_FILE = "task.json"
SPM_FILE = "spm.model"
ATTENTION_EXAMPLES = 5
HEADS = ("classic", "attention")
SCHEDULERS = ("stlr", "1cycle")
MODEL_TYPES = ("from_cp", "from_hub")
UNFREEZE = ("gradual", "none")
LOSSES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """What every task run needs besides its data (a CLI builds it from its flags)."""

    model_weights_cp: Path
    out_path: Path
    model_type: str = "from_cp"
    spm_model_file: Path | None = None
    fixed_seq_len: int | None = None
    max_seq_len: int = 300
    num_epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    lr_scheduler: str = "stlr"
    awd_off: bool = False
    zoneout: float | None = None
    qrnn: bool = False
    save_best: bool = False
    batch_norm: bool = True
    unfreeze: str = "gradual"
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(TrainingConfig):
    """A text task on TSV data: the files and the two columns read."""

    train_tsv: Path
    test_tsv: Path | None = None
    data_column: str = "sentence"
    gold_column: str = "target"


@dataclass(frozen=True, kw_only=True)
class ClassifierConfig(FineTuneConfig):
    """A classifier run: the label map and the head (``classic`` or ``attention``)."""

    label_map: Path
    head: str = "classic"


@dataclass(frozen=True, kw_only=True)
class RegressorConfig(FineTuneConfig):
    """A regressor run: the loss (``mse`` or ``mae``) and whether to standardize the targets."""

    loss_fn: str = "mse"
    normalize_labels: bool = False


@dataclass(frozen=True)
class ClassifierResult:
    """What a run produced: per-epoch history, validation accuracy (best with --save-best), the
    output dir, and the trained model as the last epoch left it."""

    history: dict[str, list[float]]
    val_accuracy: float
    out_path: Path
    truncated: int
    attention_html: Path | None = None
    attention_png: Path | None = None
    model: keras.Model | None = None


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


def _encoder_config(config: TrainingConfig, export_dir: Path) -> EncoderConfig:
    """The export's model config with the fine-tuning overrides (weight-drop, zoneout)."""
    enc_config = read_config(export_dir / CONFIG_FILE)
    # The architecture comes from the export; the flag is only a check that the user agrees.
    if config.qrnn != (enc_config.arch == "qrnn"):
        raise InputError(
            f"--qrnn is {'on' if config.qrnn else 'off'} but the export in {export_dir} is "
            f"{enc_config.arch}"
        )
    if config.awd_off:
        enc_config = dataclasses.replace(enc_config, weight_p=0.0)
    if config.zoneout is not None:
        if enc_config.arch != "qrnn":
            raise InputError(f"--zoneout is a QRNN option; the export in {export_dir} is an LSTM")
        if config.model_type == "from_hub":
            raise InputError(
                "--zoneout needs --model-type from_cp: the SavedModel runs without dropout"
            )
        if not 0.0 <= config.zoneout < 1.0:
            raise InputError(f"--zoneout must be in [0, 1), got {config.zoneout}")
        enc_config = dataclasses.replace(enc_config, zoneout=config.zoneout)
    return enc_config


def _load_examples(
    config: FineTuneConfig, targets: Callable[[TextExamples, str], np.ndarray]
) -> tuple[TextExamples, np.ndarray, TextExamples, np.ndarray]:
    """``(train, train_targets, valid, valid_targets)``; ``targets`` checks and converts golds."""
    train = read_tsv(config.train_tsv, config.data_column, config.gold_column)
    train_y = targets(train, str(config.train_tsv))
    if config.test_tsv is not None:
        valid = read_tsv(config.test_tsv, config.data_column, config.gold_column)
        return train, train_y, valid, targets(valid, str(config.test_tsv))
    # No test file: a fixed-seed validation split of the training file.
    train_idx, valid_idx = split_validation(len(train))
    logger.info(
        "no --test-tsv: validating on %d of %d training examples", len(valid_idx), len(train)
    )

    def subset(idx: np.ndarray) -> TextExamples:
        return TextExamples(tuple(train.texts[i] for i in idx), tuple(train.golds[i] for i in idx))

    return subset(train_idx), train_y[train_idx], subset(valid_idx), train_y[valid_idx]


def _schedule(name: str, lr: float, total_steps: int):
    if name == "stlr":
        return SlantedTriangularLR(lr, total_steps)
    if name == "1cycle":
        return OneCycleLR(lr, total_steps)
    raise InputError(f"unknown --lr-scheduler {name!r}: use one of {', '.join(SCHEDULERS)}")


@dataclass(frozen=True)
class _Prepared:
    export_dir: Path
    spm_path: Path
    train_ids: np.ndarray
    valid_ids: np.ndarray
    truncated: int


def _prepare(config: FineTuneConfig, train: TextExamples, valid: TextExamples) -> _Prepared:
    """Find the export and its SentencePiece model; numericalize both splits."""
    export_dir = resolve_export_dir(config.model_weights_cp)
    spm_path = find_spm_model(export_dir, config.spm_model_file)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    train_x = encode_texts(spm.encode, train.texts, config.max_seq_len, config.fixed_seq_len)
    valid_x = encode_texts(spm.encode, valid.texts, config.max_seq_len, config.fixed_seq_len)
    return _Prepared(
        export_dir, spm_path, train_x.ids, valid_x.ids, train_x.truncated + valid_x.truncated
    )


def load_backbone(config: TrainingConfig, export_dir: Path) -> keras.Model:
    """The export's encoder with its pretrained weights (seeded; dropouts as configured).

    ``from_cp`` rebuilds the Keras encoder from ``keras_weights/``, with the export's dropouts
    (weight-drop off with ``--awd-off``, zoneout from ``--zoneout``). ``from_hub`` wraps the
    ``saved_model/`` in a trainable :class:`SavedModelEncoder`: its variables fine-tune with the
    same tricks, but its graph was exported for inference and runs without dropout; AWD
    weight-drop is then applied from outside by :class:`~ulmfit_keras.WeightDropCallback`.
    """
    if config.model_type not in MODEL_TYPES:
        raise InputError(
            f"unknown --model-type {config.model_type!r}: use one of {', '.join(MODEL_TYPES)}"
        )
    keras.utils.set_random_seed(config.seed)
    enc_config = _encoder_config(config, export_dir)
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


@dataclass(frozen=True)
class TaskSetup:
    """A task model ready to train: its data, loss and the validation callback that writes
    ``monitor`` (to ``mode``: ``"max"`` or ``"min"``) into the epoch logs."""

    export_dir: Path
    spm_path: Path
    backbone: keras.Model
    model: keras.Model
    train_ids: np.ndarray
    train_targets: Any
    loss: Any
    validation: keras.callbacks.Callback
    monitor: str
    mode: str
    truncated: int


def _hub_weight_drop(config: TrainingConfig, setup: TaskSetup) -> list[keras.callbacks.Callback]:
    """AWD weight-drop for a ``from_hub`` backbone (the Keras encoder drops weights itself)."""
    if config.model_type != "from_hub" or config.awd_off:
        return []
    weight_p = read_config(setup.export_dir / CONFIG_FILE).weight_p
    if weight_p == 0.0:
        return []
    return [WeightDropCallback(weight_drop_variables(setup.backbone), weight_p, seed=config.seed)]


def fine_tune(config: TrainingConfig, setup: TaskSetup) -> dict[str, list[float]]:
    """ULMFiT fine-tuning: schedule, discriminative LRs, unfreezing; saves ``OUT/model.keras``."""
    if config.unfreeze not in UNFREEZE:
        raise InputError(
            f"unknown --unfreeze {config.unfreeze!r}: use one of {', '.join(UNFREEZE)}"
        )
    model = setup.model
    steps = max(1, -(-len(setup.train_ids) // config.batch_size)) * config.num_epochs
    groups = layer_groups(model, setup.backbone)
    model.compile(
        optimizer=DiscriminativeAdam(
            learning_rate=_schedule(config.lr_scheduler, config.lr, steps),
            # fastai's betas for ULMFiT fine-tuning.
            beta_1=0.8,
            beta_2=0.99,
            lr_multipliers=discriminative_multipliers(groups),
        ),
        loss=setup.loss,
    )
    out = config.out_path
    out.mkdir(parents=True, exist_ok=True)
    # Validation first: the checkpoint reads the value it writes into the logs.
    callbacks: list[keras.callbacks.Callback] = [setup.validation, *_hub_weight_drop(config, setup)]
    if config.unfreeze == "gradual":
        callbacks.append(GradualUnfreezing(groups))
    if config.save_best:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                out / MODEL_FILE, monitor=setup.monitor, mode=setup.mode, save_best_only=True
            )
        )
    fit = model.fit(
        setup.train_ids,
        setup.train_targets,
        epochs=config.num_epochs,
        batch_size=config.batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    if not config.save_best:
        # Beside, then renamed: a crash never leaves a truncated model.keras.
        tmp = out / ("tmp-" + MODEL_FILE)
        model.save(tmp)
        os.replace(tmp, out / MODEL_FILE)
    return {k: [float(v) for v in vals] for k, vals in fit.history.items()}


def find_task_lr(
    config: TrainingConfig, setup: TaskSetup, steps: int
) -> tuple[LRFinderResult, Path]:
    """Run ``steps`` of the LR finder on a task model; save ``OUT/lr_finder.png``."""
    result = find_lr(
        setup.model,
        setup.train_ids,
        setup.train_targets,
        setup.loss,
        steps=steps,
        batch_size=config.batch_size,
        seed=config.seed,
        callbacks=_hub_weight_drop(config, setup),
    )
    config.out_path.mkdir(parents=True, exist_ok=True)
    return result, plot_lr_finder(result, config.out_path / "lr_finder.png")


def write_task(config: TrainingConfig, setup: TaskSetup, task: dict[str, Any]) -> None:
    """``OUT/spm.model`` and ``OUT/task.json``: what a predictor needs besides the model."""
    out = config.out_path
    shutil.copyfile(setup.spm_path, out / SPM_FILE)
    task = {
        **task,
        "max_seq_len": config.max_seq_len,
        "fixed_seq_len": config.fixed_seq_len,
        "model_type": config.model_type,
        "export_dir": str(setup.export_dir),
    }
    tmp = out / (TASK_FILE + ".tmp")
    tmp.write_text(json.dumps(task, indent=2), encoding="utf-8")
    os.replace(tmp, out / TASK_FILE)


class _ValidationAccuracy(keras.callbacks.Callback):
    """Put ``val_accuracy`` into the epoch logs and log it.

    Computed from ``predict`` rather than a compiled metric, because Keras' compiled metrics
    want a target for every output of the attention model (its weights have none). Listed before
    ``ModelCheckpoint`` so that the checkpoint sees the value.
    """

    def __init__(self, ids: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.ids, self.labels, self.batch_size = ids, labels, batch_size

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        outputs = self.model.predict(self.ids, batch_size=self.batch_size, verbose=0)
        probs = outputs["predictions"] if isinstance(outputs, dict) else outputs
        accuracy = float(np.mean(np.argmax(probs, axis=-1) == self.labels))
        if logs is not None:
            logs["val_accuracy"] = accuracy
        loss = (logs or {}).get("loss", float("nan"))
        logger.info("epoch %d: loss %.4f, validation accuracy %.4f", epoch + 1, loss, accuracy)


def _classifier_setup(config: ClassifierConfig) -> tuple[TaskSetup, list[str], TextExamples]:
    """The classifier ready to train; its labels and validation texts."""
    if config.head not in HEADS:
        raise InputError(f"unknown --head {config.head!r}: use one of {', '.join(HEADS)}")
    labels = read_label_map(config.label_map)
    train, train_y, valid, valid_y = _load_examples(
        config, lambda examples, source: label_indices(examples, labels, source)
    )
    prepared = _prepare(config, train, valid)
    backbone = load_backbone(config, prepared.export_dir)
    if config.head == "attention":
        model: keras.Model = BranchingAttentionClassifier(
            backbone=backbone, num_classes=len(labels), seed=config.seed
        )
        # Only the predictions have a target; the attention weights are an explanation.
        loss: Any = {"predictions": "sparse_categorical_crossentropy"}
        targets: Any = {"predictions": train_y}
    else:
        model = ULMFiTClassifier(
            backbone=backbone,
            num_classes=len(labels),
            use_batch_norm=config.batch_norm,
            seed=config.seed,
        )
        loss, targets = "sparse_categorical_crossentropy", train_y
    setup = TaskSetup(
        export_dir=prepared.export_dir,
        spm_path=prepared.spm_path,
        backbone=backbone,
        model=model,
        train_ids=prepared.train_ids,
        train_targets=targets,
        loss=loss,
        validation=_ValidationAccuracy(prepared.valid_ids, valid_y, config.batch_size),
        monitor="val_accuracy",
        mode="max",
        truncated=prepared.truncated,
    )
    return setup, labels, valid


def find_classifier_lr(config: ClassifierConfig, steps: int) -> tuple[LRFinderResult, Path]:
    """Run ``steps`` of the LR finder on the classifier; save ``OUT/lr_finder.png``."""
    setup, _, _ = _classifier_setup(config)
    return find_task_lr(config, setup, steps)


def train_classifier(config: ClassifierConfig) -> ClassifierResult:
    """Fine-tune a classifier on ``config.train_tsv``; write the model to ``config.out_path``."""
    setup, labels, valid = _classifier_setup(config)
    history = fine_tune(config, setup)
    write_task(config, setup, {"task": "classifier", "head": config.head, "labels": labels})
    accuracies = history["val_accuracy"]
    result = ClassifierResult(
        history,
        max(accuracies) if config.save_best else accuracies[-1],
        config.out_path,
        setup.truncated,
        model=setup.model,
    )
    if config.head == "attention":
        predictor = TextClassifierPredictor(config.out_path)
        html_path, png_path = render_attention(predictor, list(valid.texts))
        result = dataclasses.replace(result, attention_html=html_path, attention_png=png_path)
    return result


@dataclass(frozen=True)
class RegressorResult:
    """What a regressor run produced: history, validation MAE (best with --save-best, in label
    units), the output dir, and the trained model as the last epoch left it."""

    history: dict[str, list[float]]
    val_mae: float
    out_path: Path
    truncated: int
    model: keras.Model | None = None


class _ValidationError(keras.callbacks.Callback):
    """Put ``val_mae`` (in label units: predictions inverse-transformed) into the epoch logs."""

    def __init__(
        self, ids: np.ndarray, targets: np.ndarray, normalizer: LabelNormalizer, batch_size: int
    ) -> None:
        super().__init__()
        self.ids, self.targets, self.normalizer = ids, targets, normalizer
        self.batch_size = batch_size

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        raw = self.model.predict(self.ids, batch_size=self.batch_size, verbose=0)[:, 0]
        mae = float(np.mean(np.abs(self.normalizer.inverse_transform(raw) - self.targets)))
        if logs is not None:
            logs["val_mae"] = mae
        loss = (logs or {}).get("loss", float("nan"))
        logger.info("epoch %d: loss %.4f, validation MAE %.4f", epoch + 1, loss, mae)


def _regressor_setup(config: RegressorConfig) -> tuple[TaskSetup, LabelNormalizer]:
    """The regressor ready to train, and the label normalizer its predictions undo."""
    if config.loss_fn not in LOSSES:
        raise InputError(f"unknown --loss-fn {config.loss_fn!r}: use one of {', '.join(LOSSES)}")
    train, train_y, valid, valid_y = _load_examples(config, float_targets)
    # Identity unless asked: the predictor always applies the inverse transform.
    normalizer = LabelNormalizer.fit(train_y) if config.normalize_labels else LabelNormalizer()
    prepared = _prepare(config, train, valid)
    backbone = load_backbone(config, prepared.export_dir)
    setup = TaskSetup(
        export_dir=prepared.export_dir,
        spm_path=prepared.spm_path,
        backbone=backbone,
        model=ULMFiTRegressor(
            backbone=backbone, use_batch_norm=config.batch_norm, seed=config.seed
        ),
        train_ids=prepared.train_ids,
        train_targets=normalizer.transform(train_y)[:, None],
        loss=LOSSES[config.loss_fn],
        validation=_ValidationError(prepared.valid_ids, valid_y, normalizer, config.batch_size),
        monitor="val_mae",
        mode="min",
        truncated=prepared.truncated,
    )
    return setup, normalizer


def find_regressor_lr(config: RegressorConfig, steps: int) -> tuple[LRFinderResult, Path]:
    """Run ``steps`` of the LR finder on the regressor; save ``OUT/lr_finder.png``."""
    setup, _ = _regressor_setup(config)
    return find_task_lr(config, setup, steps)


def train_regressor(config: RegressorConfig) -> RegressorResult:
    """Fine-tune a regressor on ``config.train_tsv``; write the model to ``config.out_path``."""
    setup, normalizer = _regressor_setup(config)
    history = fine_tune(config, setup)
    write_task(config, setup, {"task": "regressor", "normalizer": json.loads(normalizer.to_json())})
    errors = history["val_mae"]
    return RegressorResult(
        history,
        min(errors) if config.save_best else errors[-1],
        config.out_path,
        setup.truncated,
        model=setup.model,
    )


class TextRegressorPredictor:
    """Reload a trained regressor directory and predict scores (in label units) on raw texts."""

    def __init__(self, out_path: str | os.PathLike) -> None:
        out = Path(out_path)
        task = read_task(out, "regressor")
        self.normalizer = LabelNormalizer.from_json(json.dumps(task["normalizer"]))
        self.max_seq_len: int = task["max_seq_len"]
        self.fixed_seq_len: int | None = task["fixed_seq_len"]
        self.model = load_task_model(out, task)
        self.spm = sentencepiece.SentencePieceProcessor(model_file=str(out / SPM_FILE))

    def predict(self, texts: list[str]) -> np.ndarray:
        """Scores ``(n,)``, the model's outputs with the label normalization undone."""
        ids = encode_texts(self.spm.encode, texts, self.max_seq_len, self.fixed_seq_len).ids
        return self.normalizer.inverse_transform(self.model.predict(ids, verbose=0)[:, 0])


def load_task_model(out: Path, task: dict[str, Any]) -> keras.Model:
    """``OUT/model.keras``; a ``from_hub`` model runs the SavedModel's graph, so it needs
    ``safe_mode=False`` (as ``TFSMLayer`` does): only for directories this toolchain wrote."""
    return keras.saving.load_model(
        out / MODEL_FILE, safe_mode=task.get("model_type", "from_cp") != "from_hub"
    )


def read_task(out: Path, kind: str) -> dict[str, Any]:
    """``OUT/task.json`` of a trained ``kind`` (classifier, regressor, tagger)."""
    if not (out / TASK_FILE).is_file():
        raise InputError(f"{out}: no {TASK_FILE}; train a {kind} into it first")
    task = json.loads((out / TASK_FILE).read_text(encoding="utf-8"))
    if task.get("task") != kind:
        raise InputError(f"{out} holds a {task.get('task')}, not a {kind}")
    return task


def render_attention(
    predictor: TextClassifierPredictor, texts: list[str], count: int = ATTENTION_EXAMPLES
) -> tuple[Path, Path]:
    """Write ``attention.html`` and ``attention.png`` for the first ``count`` texts."""
    probs, weights, ids = predictor.predict(texts[:count])
    rows = []
    for row_probs, row_weights, row_ids in zip(probs, weights, ids, strict=True):
        pieces = predictor.pieces(row_ids)
        label = predictor.labels[int(np.argmax(row_probs))]
        rows.append((pieces, row_weights[: len(pieces)], f"{label} ({row_probs.max():.2f})"))
    out = predictor.out_path
    html_path = write_attention_html(out / "attention.html", rows)
    png_path = write_attention_png(out / "attention.png", rows)
    logger.info("attention heatmap: %s", png_path)
    return html_path, png_path


class TextClassifierPredictor:
    """Reload a trained classifier directory and predict on raw texts."""

    def __init__(self, out_path: str | os.PathLike) -> None:
        out = Path(out_path)
        self.out_path = out
        self.task: dict[str, Any] = read_task(out, "classifier")
        self.labels: list[str] = self.task["labels"]
        self.model = load_task_model(out, self.task)
        self.spm = sentencepiece.SentencePieceProcessor(model_file=str(out / SPM_FILE))

    @property
    def is_attention(self) -> bool:
        return self.task["head"] == "attention"

    def encode(self, texts: list[str]) -> np.ndarray:
        return encode_texts(
            self.spm.encode, texts, self.task["max_seq_len"], self.task["fixed_seq_len"]
        ).ids

    def predict(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """``(probabilities (n, classes), attention weights (n, seq) or None, ids (n, seq))``."""
        ids = self.encode(texts)
        outputs = self.model.predict(ids, verbose=0)
        if isinstance(outputs, dict):
            return outputs["predictions"], outputs["attention_weights"], ids
        return outputs, None, ids

    def pieces(self, ids: np.ndarray) -> list[str]:
        """Subword strings of one row of ids, padding dropped."""
        return [self.spm.id_to_piece(int(i)) for i in ids if int(i) != PAD_ID]


def describe_predictions(predictor: TextClassifierPredictor, texts: list[str]) -> list[str]:
    """One line per text: label probabilities (best first) and, for attention, the top tokens."""
    probs, weights, ids = predictor.predict(texts)
    lines = []
    for i, row in enumerate(probs):
        order = np.argsort(-row, kind="stable")
        line = " ".join(f"{predictor.labels[j]}={row[j]:.4f}" for j in order)
        if weights is not None:
            pieces = predictor.pieces(ids[i])
            tops = top_tokens(pieces, weights[i])
            line += " | top tokens: " + " ".join(f"{p}:{w:.3f}" for p, w in tops)
        lines.append(line)
    return lines
