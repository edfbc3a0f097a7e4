"""``import ulmfit_keras`` is the public entry point and pulls in no framework it does not need.

Each check runs in a fresh interpreter, so that what other tests imported does not count.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.helpers import REPO_ROOT

# Everything ulmfit_keras exported before issue 10 (the restructuring must keep them all).
EXPORTED_BEFORE = [
    "ARCHS", "EMBEDDING_NAME", "LM_HEAD_NAME", "PAD_ID", "SIGNATURES",
    "BranchingAttentionClassifier", "DiscriminativeAdam", "EncoderConfig", "GradualUnfreezing",
    "LMHead", "LabelNormalizer", "MaskedConcatPool", "MaskedEmbedding", "OneCycleLR", "QRNNLayer",
    "RNNDropout", "SPMNumericalizer", "SavedModelEncoder", "SlantedTriangularLR", "TiedLMHead",
    "ULMFiTClassifier", "ULMFiTEncoder", "ULMFiTLanguageModel", "ULMFiTRegressor", "ULMFiTTagger",
    "WeightDropCallback", "WeightDropLSTM", "align_word_labels", "build_encoder",
    "discriminative_multipliers", "entity_f1", "find_weights_file", "forget_mult",
    "layer_groups", "load_encoder", "load_language_model", "read_config", "variable_paths",
    "weight_drop_variables",
]  # fmt: skip


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_import_pulls_in_neither_torch_nor_fastai_nor_the_task_drivers():
    result = run_python(
        """
        import sys
        import ulmfit_keras
        forbidden = ("torch", "fastai", "ulmfit_tasks", "pretraining_utils", "ulmfit_torch",
                     "lm_training", "convert", "evaluation")
        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(forbidden))
        assert not loaded, loaded
        assert "torch" not in sys.modules and "fastai" not in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("name", EXPORTED_BEFORE)
def test_every_former_export_is_still_in_the_public_api(name):
    import ulmfit_keras

    assert name in ulmfit_keras.__all__
    assert getattr(ulmfit_keras, name) is not None


def test_public_api_names_exist():
    import ulmfit_keras

    missing = [name for name in ulmfit_keras.__all__ if not hasattr(ulmfit_keras, name)]
    assert not missing
