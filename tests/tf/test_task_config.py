"""The task configs validate their choice fields once, when built, with the flag's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ulmfit_core.errors import InputError
from ulmfit_tasks.config import (
    HEADS,
    LOSSES,
    MODEL_TYPES,
    SCHEDULERS,
    SCHEMES,
    UNFREEZE,
    ClassifierConfig,
    RegressorConfig,
    TaggerConfig,
    TrainingConfig,
)

PATHS = {"model_weights_cp": Path("export"), "out_path": Path("out")}
TSV = {**PATHS, "train_tsv": Path("train.tsv")}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainingConfig(**PATHS, model_type="hub"), "unknown --model-type 'hub'"),
        (lambda: TrainingConfig(**PATHS, lr_scheduler="cos"), "unknown --lr-scheduler 'cos'"),
        (lambda: TrainingConfig(**PATHS, unfreeze="all"), "unknown --unfreeze 'all'"),
        (lambda: TrainingConfig(**PATHS, zoneout=1.0), r"--zoneout must be in \[0, 1\)"),
        (lambda: ClassifierConfig(**TSV, label_map=Path("l"), head="x"), "unknown --head 'x'"),
        (lambda: RegressorConfig(**TSV, loss_fn="huber"), "unknown --loss-fn 'huber'"),
        (
            lambda: TaggerConfig(**PATHS, train_jsonl=Path("t"), label_map=Path("l"), align="x"),
            "unknown --align 'x': use one of first, all",
        ),
    ],
)
def test_bad_choices_raise_when_the_config_is_built(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_defaults_are_valid_choices():
    config = TrainingConfig(**PATHS)
    assert config.model_type in MODEL_TYPES and config.lr_scheduler in SCHEDULERS
    assert config.unfreeze in UNFREEZE
    assert ClassifierConfig(**TSV, label_map=Path("l")).head in HEADS
    assert RegressorConfig(**TSV).loss_fn in LOSSES
    assert TaggerConfig(**PATHS, train_jsonl=Path("t"), label_map=Path("l")).align in SCHEMES
