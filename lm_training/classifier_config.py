"""Stage 08's settings: :class:`ClassifierTrainConfig`, the unfreezing plan, the run's summary.

The classifier's *model* schema is not here: its encoder is an
:class:`~ulmfit_core.lm_config.LMConfig` (the language model's, with the classifier's dropouts)
and its task is a :class:`~ulmfit_core.classifier_config.ClassifierHead`; both are resolved
once the language model and the data are read (:mod:`lm_training.classifier_model`).

Standard library and :mod:`ulmfit_core` only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_training.config import PRECISIONS, EpochHistory, OutputPaths, Phase
from ulmfit_core.classifier_config import DEFAULT_BPTT, DEFAULT_MAX_LEN, ClassifierHead
from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import LMConfig

__all__ = [
    "CLASSIFIER_RESUMABLE",
    "LR_SPREAD",
    "ClassifierTrainConfig",
    "ClassifierTrainSummary",
    "plan_classifier_phases",
]

# Discriminative learning rates: each layer group 2.6 times below the next (ULMFiT), spread over
# fastai's five AWD-LSTM classifier groups (embedding, three layers, head).
LR_SPREAD = 2.6**4
# Settings that may differ when resuming: where and how fast it runs (and, warned, the LR).
CLASSIFIER_RESUMABLE = frozenset({"resume", "progress", "device", "precision", "lr"})


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """One stage-08 run: fine-tune a fastai text classifier on a language model's encoder.

    Args:
        train_tsv: tab-separated training examples with a header row.
        label_map: one label per line; the line order is the class index.
        spm_model: the SentencePiece model the language model was trained with.
        pretrained_model: stage 04's ``X.pth`` (with its ``X.json`` sidecar when there is one).
        save_path: output directory; ``exp_name`` names the files in it.
        test_tsv: validation examples; ``None`` holds out ``valid_fraction`` of ``train_tsv``
            (a fixed-seed subset, the same one stage 10 holds out).
        data_column, gold_column: the TSV's text and label columns.
        num_epochs: epochs in all; the gradual-unfreezing plan's first ``num_epochs``
            (:func:`plan_classifier_phases`).
        lr: the peak learning rate of the first epoch (fastai's ULMFiT tutorial: ``2e-2``).
        batch_size: texts per batch.
        drop_mult: multiplies the classifier's dropouts (fastai's ``awd_lstm_clas_config``).
        bptt: tokens the encoder reads at a time (fastai's ``seq_len``).
        max_len: only the outputs of the last ``max_len`` tokens (whole chunks) are pooled.
        lin_ftrs: hidden widths of the head between pooling and the output layer.
        seed: model initialisation, dropout masks and the batch order.
        save_best: write the weights of the epoch with the best validation accuracy.
        resume: continue from ``SAVE_PATH/EXP.ckpt`` when there is a checkpoint.
        device: ``None`` or ``"auto"``: CUDA when available; else e.g. ``"cpu"``, ``"cuda:1"``.
        precision: ``fp32``, or ``fp16``/``bf16`` mixed precision (CUDA only; ignored on CPU).
        progress: show fastai's progress bars (the CLI enables them on a terminal).
    """

    train_tsv: Path
    label_map: Path
    spm_model: Path
    pretrained_model: Path
    save_path: Path
    exp_name: str
    test_tsv: Path | None = None
    valid_fraction: float = 0.1
    data_column: str = "sentence"
    gold_column: str = "target"
    num_epochs: int = 4
    lr: float = 2e-2
    batch_size: int = 64
    drop_mult: float = 0.5
    bptt: int = DEFAULT_BPTT
    max_len: int = DEFAULT_MAX_LEN
    lin_ftrs: tuple[int, ...] = (50,)
    seed: int = 42
    save_best: bool = False
    resume: bool = False
    device: str | None = None
    precision: str = "fp32"
    progress: bool = False

    def __post_init__(self) -> None:
        files = {
            "train_tsv": self.train_tsv,
            "label_map": self.label_map,
            "spm_model": self.spm_model,
            "pretrained_model": self.pretrained_model,
            "test_tsv": self.test_tsv,
        }
        for name, path in files.items():
            if path is not None and not Path(path).is_file():
                raise InputError(f"{name}: file not found: {path}")
        if not self.exp_name or "/" in self.exp_name:
            raise InputError(f"exp_name must be a plain file name, got {self.exp_name!r}")
        if self.data_column == self.gold_column:
            raise InputError(f"the text and label columns are both {self.data_column!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}: use one of {PRECISIONS}")
        positive_ints = {
            "num_epochs": self.num_epochs,
            "batch_size": self.batch_size,
            "bptt": self.bptt,
            "max_len": self.max_len,
        }
        for name, value in positive_ints.items():
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if self.max_len < self.bptt:
            raise InputError(
                f"max_len ({self.max_len}) must be at least bptt ({self.bptt}): the encoder pools "
                "whole chunks of bptt tokens"
            )
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        if not self.drop_mult >= 0:
            raise InputError(f"drop_mult must not be negative, got {self.drop_mult}")
        if self.test_tsv is None and not 0.0 < self.valid_fraction < 0.5:
            raise InputError(f"valid_fraction must be in (0, 0.5), got {self.valid_fraction}")
        if any(width < 1 for width in self.lin_ftrs):
            raise InputError(f"lin_ftrs must be positive widths, got {list(self.lin_ftrs)}")
        object.__setattr__(self, "lin_ftrs", tuple(self.lin_ftrs))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as absolute strings, ``lin_ftrs`` a list (as a checkpoint has it)."""
        data = {
            k: (str(Path(v).resolve()) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(self).items()
        }
        data["lin_ftrs"] = list(self.lin_ftrs)
        return data


def plan_classifier_phases(num_epochs: int, lr: float) -> list[Phase]:
    """ULMFiT's gradual unfreezing, as fastai's tutorial runs it, cut to ``num_epochs``.

    One epoch each with the last 1, 2, 3 layer groups trained (``freeze_to(-k)``, phases
    ``frozen-k``) at peak ``lr``, ``lr / 2``, ``lr / 4``, then the remaining epochs in one cycle
    with everything trained (``unfrozen``) at ``lr / 20``: the tutorial's ``2e-2``, ``1e-2``,
    ``5e-3``, ``1e-3``. After the first phase the groups get discriminative rates
    (``slice(peak / 2.6**4, peak)``). fastai's ``fit_one_cycle`` defaults otherwise (``div=25``).
    """
    if num_epochs < 1:
        raise InputError(f"num_epochs must be at least 1, got {num_epochs}")
    plan = [Phase("frozen-1", 1, lr, frozen=True, div=25.0, trainable_groups=1)]
    for groups, factor in ((2, 2.0), (3, 4.0)):
        plan.append(
            Phase(
                f"frozen-{groups}",
                1,
                lr / factor,
                frozen=True,
                div=25.0,
                trainable_groups=groups,
                lr_spread=LR_SPREAD,
            )
        )
    phases = plan[:num_epochs]
    if num_epochs > len(plan):
        phases.append(
            Phase(
                "unfrozen",
                num_epochs - len(plan),
                lr / 20,
                frozen=False,
                div=25.0,
                lr_spread=LR_SPREAD,
            )
        )
    return phases


@dataclass(frozen=True)
class ClassifierTrainSummary(EpochHistory):
    """What a stage-08 run did and wrote.

    ``best_epoch`` is the epoch with the best validation accuracy (1-based; the first of ties),
    whose weights the ``.pth`` holds when ``saved_epoch`` equals it (``save_best``).
    """

    lm_config: LMConfig
    head: ClassifierHead
    history: list[dict[str, Any]]
    paths: OutputPaths
    seconds: float
    n_train: int
    n_valid: int
    best_epoch: int
    saved_epoch: int
    resumed_after_epoch: int | None

    @property
    def saved(self) -> dict[str, Any]:
        """The history row of the epoch whose weights were written."""
        return self.history[self.saved_epoch - 1] if self.history else {}
