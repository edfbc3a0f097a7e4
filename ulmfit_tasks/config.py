"""What a task run is given: one frozen config per task, built by its CLI from the flags.

The choice fields (model type, LR schedule, unfreezing, classifier head, regression loss, tagger
alignment) are validated here, once, when a config is built: a bad value raises
:class:`~ulmfit_core.errors.InputError` with the flag's name and the choices. The CLIs offer
the same tuples as ``click.Choice``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ulmfit_core.classifier_config import DEFAULT_BPTT, DEFAULT_MAX_LEN
from ulmfit_core.errors import InputError
from ulmfit_keras.models.pooled_head import KEEP
from ulmfit_keras.word_alignment import SCHEMES

__all__ = [
    "HEADS",
    "KEEP",
    "LOSSES",
    "MODEL_TYPES",
    "SCHEDULERS",
    "SCHEMES",
    "UNFREEZE",
    "ClassifierConfig",
    "FineTuneConfig",
    "RegressorConfig",
    "TaggerConfig",
    "TrainingConfig",
]

HEADS = ("classic", "attention")
SCHEDULERS = ("stlr", "1cycle")
MODEL_TYPES = ("from_cp", "from_hub")
UNFREEZE = ("gradual", "none")
LOSSES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}


def _check_choice(flag: str, value: str, choices) -> None:
    if value not in choices:
        raise InputError(f"unknown {flag} {value!r}: use one of {', '.join(choices)}")


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

    def __post_init__(self) -> None:
        _check_choice("--model-type", self.model_type, MODEL_TYPES)
        _check_choice("--lr-scheduler", self.lr_scheduler, SCHEDULERS)
        _check_choice("--unfreeze", self.unfreeze, UNFREEZE)
        if self.zoneout is not None and not 0.0 <= self.zoneout < 1.0:
            raise InputError(f"--zoneout must be in [0, 1), got {self.zoneout}")


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(TrainingConfig):
    """A text task on TSV data: the files and the two columns read."""

    train_tsv: Path
    test_tsv: Path | None = None
    data_column: str = "sentence"
    gold_column: str = "target"


@dataclass(frozen=True, kw_only=True)
class ClassifierConfig(FineTuneConfig):
    """A classifier run: the label map, the head (``classic`` or ``attention``) and how a long
    text is pooled (``keep``: ``first``, the text cut to ``max_seq_len``; ``last``, fastai's
    window of the last ``bptt`` chunks within ``max_len``)."""

    label_map: Path
    head: str = "classic"
    keep: str = "first"
    bptt: int = DEFAULT_BPTT
    max_len: int = DEFAULT_MAX_LEN

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("--head", self.head, HEADS)
        _check_choice("--keep", self.keep, KEEP)
        if self.keep == "last" and self.head != "classic":
            raise InputError("--keep last is fastai's concat pooling: use it with --head classic")
        if not 1 <= self.bptt <= self.max_len:
            raise InputError(
                f"--bptt must be between 1 and --max-len, got {self.bptt} and {self.max_len}"
            )


@dataclass(frozen=True, kw_only=True)
class RegressorConfig(FineTuneConfig):
    """A regressor run: the loss (``mse`` or ``mae``) and whether to standardize the targets."""

    loss_fn: str = "mse"
    normalize_labels: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("--loss-fn", self.loss_fn, tuple(LOSSES))


@dataclass(frozen=True, kw_only=True)
class TaggerConfig(TrainingConfig):
    """A tagger run: JSONL files, the ``{"0": "O", ...}`` label map, the alignment scheme."""

    train_jsonl: Path
    label_map: Path
    test_jsonl: Path | None = None
    align: str = "first"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("--align", self.align, SCHEMES)
