"""Downstream task drivers over ``ulmfit_keras``: classifier, regressor, tagger (TF environment).

What ``scripts/10_train_classifier.py``, ``11_train_regressor.py`` and ``12_train_tagger.py``
call; the scripts only parse flags into a config (:mod:`ulmfit_tasks.config`, options in
:mod:`ulmfit_tasks.cli_options`) and call one function here. This package builds on
``ulmfit_keras`` and ``ulmfit_core``; ``ulmfit_keras`` never imports it.

* :mod:`~ulmfit_tasks.config`: the run configs, their choices validated once;
* :mod:`~ulmfit_tasks.data`: TSV / label-map / tagger-JSONL readers, validation split, ids;
* :mod:`~ulmfit_tasks.backbone`: the export directory and the pretrained encoder;
* :mod:`~ulmfit_tasks.fine_tuning`: :class:`TaskSetup`, :func:`fine_tune`, :func:`find_task_lr`;
* :mod:`~ulmfit_tasks.tsv_task`: what the TSV tasks share;
* :mod:`~ulmfit_tasks.classifier`, :mod:`~ulmfit_tasks.regressor`, :mod:`~ulmfit_tasks.tagger`:
  one driver per task;
* :mod:`~ulmfit_tasks.task_dir`: ``model.keras`` / ``task.json`` / ``spm.model``;
* :mod:`~ulmfit_tasks.predictors`: reload a task directory and predict on raw text;
* :mod:`~ulmfit_tasks.rendering`: attention HTML / PNG, the LR-finder plot.
"""

from ulmfit_tasks.classifier import ClassifierResult, find_classifier_lr, train_classifier
from ulmfit_tasks.config import (
    ClassifierConfig,
    FineTuneConfig,
    RegressorConfig,
    TaggerConfig,
    TrainingConfig,
)
from ulmfit_tasks.fine_tuning import TaskSetup, find_task_lr, fine_tune
from ulmfit_tasks.predictors import (
    TaggerPredictor,
    TextClassifierPredictor,
    TextRegressorPredictor,
    describe_predictions,
)
from ulmfit_tasks.regressor import RegressorResult, find_regressor_lr, train_regressor
from ulmfit_tasks.tagger import TaggerResult, find_tagger_lr, train_tagger

__all__ = [
    "ClassifierConfig",
    "ClassifierResult",
    "FineTuneConfig",
    "RegressorConfig",
    "RegressorResult",
    "TaggerConfig",
    "TaggerPredictor",
    "TaggerResult",
    "TaskSetup",
    "TextClassifierPredictor",
    "TextRegressorPredictor",
    "TrainingConfig",
    "describe_predictions",
    "find_classifier_lr",
    "find_regressor_lr",
    "find_tagger_lr",
    "find_task_lr",
    "fine_tune",
    "train_classifier",
    "train_regressor",
    "train_tagger",
]
