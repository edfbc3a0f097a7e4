"""Save -> load -> allclose for every Keras class ``ulmfit_keras`` registers (keras-hub's
``run_model_saving_test``), and the ``.keras`` files written before the issue-10 restructuring.

Each registered class (``"ulmfit_keras>Name"`` in Keras' registry) has at least one case below:
a tiny model that contains it (a layer, a task model, a compiled optimizer / schedule / loss /
metric), saved to ``.keras``, loaded, and probed again; the probes (outputs, learning rates,
evaluation results, optimizer state) must agree. The object's config must also be JSON, and
rebuild an object with the same config. A class registered without a case fails
:func:`test_every_registered_class_has_a_case`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import ulmfit_keras as uk  # noqa: E402
from tests.tf.tiny import SENT, train_spm  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PACKAGE = "ulmfit_keras"
VOCAB, EMB, HIDDEN = 30, 6, 8
IDS = np.array([[2, 5, 7, 9, 3, 1, 1], [2, 11, 4, 13, 17, 3, 1]], dtype="int32")
LABELS = np.array([1, 0], dtype="int32")
TAGS = np.array([[-100, 1, 2, 0, -100, -100, -100], [-100, 2, 0, 1, 1, -100, -100]], "int32")
LEGACY = Path(__file__).parent / "data" / "saved_before_issue_10"


def registered_classes() -> list[str]:
    return sorted(k for k in keras.saving.get_custom_objects() if k.startswith(f"{PACKAGE}>"))


def tiny_encoder(arch: str = "awd-lstm", **changes) -> uk.ULMFiTEncoder:
    keras.utils.set_random_seed(0)
    config = {"arch": arch, "vocab_size": VOCAB, "emb_size": EMB, "hidden_size": HIDDEN}
    encoder, _ = uk.build_encoder({**config, "n_layers": 2, **changes}, seed=0)
    return encoder


def over_ids(layer_fn: Callable[[Any], Any], name: str = "probe") -> keras.Model:
    """``token_ids -> MaskedEmbedding -> layer_fn``: a model around a layer that wants a mask."""
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    x = uk.MaskedEmbedding(VOCAB, EMB, name="embedding")(ids)
    return keras.Model(ids, layer_fn(x), name=name)


def single_layer(layer: keras.layers.Layer, shape: tuple[int, ...]) -> keras.Model:
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def outputs_of(model: keras.Model, inputs) -> dict[str, np.ndarray]:
    out = model(inputs, training=False)
    if isinstance(out, dict):
        return {key: np.asarray(value) for key, value in out.items()}
    return {"output": np.asarray(out)}


def compiled(model: keras.Model, fit_inputs, fit_targets, **compile_args) -> keras.Model:
    """``model`` compiled and trained one step (so that optimizer state exists)."""
    model.compile(**compile_args)
    model.fit(fit_inputs, fit_targets, batch_size=len(fit_inputs), epochs=1, verbose=0)
    return model


def compiled_probe(inputs, targets) -> Callable[[keras.Model, Any], dict[str, np.ndarray]]:
    """Outputs, the evaluation (loss and metrics), and the optimizer's state and rate."""

    def probe(model: keras.Model, _inputs) -> dict[str, np.ndarray]:
        result = outputs_of(model, inputs)
        result["evaluate"] = np.asarray(
            model.evaluate(inputs, targets, batch_size=len(inputs), verbose=0)
        )
        optimizer = model.optimizer
        result["learning_rate"] = np.asarray(optimizer.learning_rate)
        for variable in optimizer.variables:
            result[f"optimizer/{variable.path}"] = np.asarray(variable)
        return result

    return probe


def as_json(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config))


def unbuilt(config: Any) -> Any:
    """``config`` without the ``build_config`` entries of nested serialized layers."""
    if isinstance(config, dict):
        return {k: unbuilt(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [unbuilt(v) for v in config]
    return config


@dataclass
class Case:
    """One save/load round trip: ``build(tmp)`` gives the model to save and the probe's input;
    ``registered`` is the class under test."""

    registered: str
    build: Callable[[Path], tuple[keras.Model, Any]]  # given a temporary directory
    probe: Callable[[keras.Model, Any], dict[str, np.ndarray]] = outputs_of
    safe_mode: bool = True


def find(model: keras.Model, cls: type) -> object:
    """The instance of ``cls`` in ``model``: a (nested) layer, its optimizer and learning-rate
    schedule, its loss or its metrics."""
    candidates: list[object] = [model, *model._flatten_layers(include_self=False)]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        candidates += [optimizer, getattr(optimizer, "_learning_rate", None)]
    candidates.append(getattr(model, "loss", None))
    compile_metrics = getattr(model, "_compile_metrics", None)
    if compile_metrics is not None:
        candidates += [*compile_metrics.metrics, *(compile_metrics._user_metrics or [])]
    found = [obj for obj in candidates if type(obj) is cls]
    assert found, f"no {cls.__name__} in {model.name}"
    return found[0]


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------


def _spm_model(tmp: Path) -> Path:
    with SENT.open(encoding="utf-8") as handle:
        texts = [row["sentence"] for row in csv.DictReader(handle, delimiter="\t")]
    return train_spm(texts, tmp / "m", vocab_size=100)


class ExportModule(tf.Module):
    """The ids endpoint of a stage-05 SavedModel, for :class:`SavedModelEncoder`."""

    def __init__(self, encoder: keras.Model) -> None:
        super().__init__()
        self.encoder = encoder

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")])
    def numericalized_encoder(self, token_ids):
        return {"output": self.encoder(token_ids), "mask": tf.not_equal(token_ids, 1)}


def _saved_model_encoder(tmp: Path) -> tuple[keras.Model, Any]:
    path = tmp / "saved_model"
    module = ExportModule(tiny_encoder())
    tf.saved_model.save(
        module, str(path), signatures={"numericalized_encoder": module.numericalized_encoder}
    )
    ids = keras.Input((None,), dtype="int32")
    hidden = uk.SavedModelEncoder(path, name="saved_model_encoder")(ids)
    pooled = uk.MaskedConcatPool(name="pool")(hidden)
    return keras.Model(ids, pooled), IDS


def _numericalizer(tmp: Path) -> tuple[keras.Model, Any]:
    layer = uk.SPMNumericalizer(_spm_model(tmp), fixed_seq_len=9, name="numericalizer")
    text = keras.Input((), dtype="string")
    return keras.Model(text, layer(text)), tf.constant(["a clever film .", "dull", ""])


def _attention_pooling() -> keras.Model:
    def head(x):
        scores = keras.layers.Dense(1, name="scores")(x)
        weights = uk.MaskedSoftmax(name="weights")(scores)
        return {"weights": weights, "pooled": uk.WeightedSum(name="sum")([weights, x])}

    return over_ids(head)


def _tied_head() -> keras.Model:
    ids = keras.Input((None,), dtype="int32")
    embedding = uk.MaskedEmbedding(VOCAB, EMB, name="encoder_embedding")
    head = uk.TiedLMHead(embedding, output_p=0.2, name="lm_head")
    return keras.Model(ids, head(embedding(ids)))


def _classifier_with(optimizer) -> tuple[keras.Model, Any]:
    model = uk.ULMFiTClassifier(tiny_encoder(), num_classes=2, seed=0)
    groups = uk.layer_groups(model)
    kwargs = {} if optimizer is keras.optimizers.Adam else {
        "lr_multipliers": uk.discriminative_multipliers(groups)
    }  # fmt: skip
    schedule = uk.SlantedTriangularLR(1e-2, 10)
    compiled(
        model,
        IDS,
        LABELS,
        optimizer=optimizer(learning_rate=schedule, **kwargs),
        loss="sparse_categorical_crossentropy",
    )
    return model, IDS


def _schedule_case(schedule) -> tuple[keras.Model, Any]:
    model = uk.ULMFiTClassifier(tiny_encoder(), num_classes=2, seed=0)
    compiled(
        model,
        IDS,
        LABELS,
        optimizer=keras.optimizers.SGD(learning_rate=schedule),
        loss="sparse_categorical_crossentropy",
    )
    return model, IDS


def _tagger_compiled(_tmp: Path) -> tuple[keras.Model, Any]:
    model = uk.ULMFiTTagger(tiny_encoder(), num_labels=3, seed=0)
    compiled(
        model,
        IDS,
        TAGS,
        optimizer=keras.optimizers.Adam(1e-2),
        loss=uk.MaskedSparseCategoricalCrossentropy(),
        metrics=[uk.MaskedSparseCategoricalAccuracy()],
    )
    return model, IDS


def _layer(layer_fn: Callable[[], keras.layers.Layer], shape=(7, EMB)):
    def build(_tmp: Path):
        keras.utils.set_random_seed(0)
        x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
        return single_layer(layer_fn(), shape), x

    return build


CLASSIFIER_PROBE = compiled_probe(IDS, LABELS)
CASES = {
    "MaskedEmbedding": Case(
        "MaskedEmbedding",
        lambda _: (over_ids(lambda x: uk.RNNDropout(0.0, name="identity")(x)), IDS),
    ),
    "RNNDropout": Case("RNNDropout", _layer(lambda: uk.RNNDropout(0.3, seed=2, name="drop"))),
    "WeightDropLSTM": Case(
        "WeightDropLSTM", _layer(lambda: uk.WeightDropLSTM(HIDDEN, weight_p=0.2, name="lstm_1"))
    ),
    "QRNNLayer-sequential": Case(
        "QRNNLayer",
        _layer(lambda: uk.QRNNLayer(HIDDEN, window=2, zoneout=0.1, weight_p=0.2, name="q")),
    ),
    "QRNNLayer-log_depth": Case(
        "QRNNLayer",
        _layer(lambda: uk.QRNNLayer(HIDDEN, window=1, forget_mult_impl="log_depth", name="q")),
    ),
    "LMHead": Case(
        "LMHead", _layer(lambda: uk.LMHead(VOCAB, output_p=0.2, use_bias=False, name="lm_head"))
    ),
    "TiedLMHead": Case("TiedLMHead", lambda _: (_tied_head(), IDS)),
    "MaskedConcatPool": Case(
        "MaskedConcatPool", lambda _: (over_ids(uk.MaskedConcatPool(name="pool")), IDS)
    ),
    "MaskedSoftmax": Case("MaskedSoftmax", lambda _: (_attention_pooling(), IDS)),
    "WeightedSum": Case("WeightedSum", lambda _: (_attention_pooling(), IDS)),
    "SPMNumericalizer": Case("SPMNumericalizer", _numericalizer),
    "SavedModelEncoder": Case("SavedModelEncoder", _saved_model_encoder, safe_mode=False),
    "ULMFiTEncoder-awd-lstm": Case("ULMFiTEncoder", lambda _: (tiny_encoder(), IDS)),
    "ULMFiTEncoder-qrnn": Case("ULMFiTEncoder", lambda _: (tiny_encoder("qrnn", zoneout=0.1), IDS)),
    "ULMFiTLanguageModel-tied-qrnn": Case(
        "ULMFiTLanguageModel",
        lambda _: (uk.ULMFiTLanguageModel(tiny_encoder("qrnn"), output_p=0.1, seed=3), IDS),
    ),
    "ULMFiTLanguageModel-untied-awd-lstm": Case(
        "ULMFiTLanguageModel",
        lambda _: (uk.ULMFiTLanguageModel(tiny_encoder(), tie_weights=False, out_bias=False), IDS),
    ),
    "ULMFiTClassifier": Case(
        "ULMFiTClassifier",
        lambda _: (uk.ULMFiTClassifier(tiny_encoder("qrnn"), num_classes=3, seed=0), IDS),
    ),
    "ULMFiTRegressor": Case(
        "ULMFiTRegressor",
        lambda _: (uk.ULMFiTRegressor(tiny_encoder(), use_batch_norm=False, seed=0), IDS),
    ),
    "BranchingAttentionClassifier": Case(
        "BranchingAttentionClassifier",
        lambda _: (uk.BranchingAttentionClassifier(tiny_encoder(), num_classes=2, seed=0), IDS),
    ),
    "ULMFiTTagger": Case(
        "ULMFiTTagger", lambda _: (uk.ULMFiTTagger(tiny_encoder(), num_labels=4, seed=0), IDS)
    ),
    "DiscriminativeAdam": Case(
        "DiscriminativeAdam", lambda _: _classifier_with(uk.DiscriminativeAdam), CLASSIFIER_PROBE
    ),
    "DiscriminativeAdamW": Case(
        "DiscriminativeAdamW", lambda _: _classifier_with(uk.DiscriminativeAdamW), CLASSIFIER_PROBE
    ),
    "DiscriminativeSGD": Case(
        "DiscriminativeSGD", lambda _: _classifier_with(uk.DiscriminativeSGD), CLASSIFIER_PROBE
    ),
    "SlantedTriangularLR": Case(
        "SlantedTriangularLR",
        lambda _: _schedule_case(uk.SlantedTriangularLR(0.02, 50, cut_frac=0.2, ratio=16.0)),
        CLASSIFIER_PROBE,
    ),
    "OneCycleLR": Case(
        "OneCycleLR", lambda _: _schedule_case(uk.OneCycleLR(0.02, 50, 0.3, 10.0)), CLASSIFIER_PROBE
    ),
    "ExponentialSweep": Case(
        "ExponentialSweep",
        lambda _: _schedule_case(uk.ExponentialSweep(1e-4, 1.0, 10)),
        CLASSIFIER_PROBE,
    ),
    "MaskedSparseCategoricalCrossentropy": Case(
        "MaskedSparseCategoricalCrossentropy", _tagger_compiled, compiled_probe(IDS, TAGS)
    ),
    "MaskedSparseCategoricalAccuracy": Case(
        "MaskedSparseCategoricalAccuracy", _tagger_compiled, compiled_probe(IDS, TAGS)
    ),
}


def test_every_registered_class_has_a_case():
    registered = registered_classes()
    assert len(registered) >= 25
    covered = {f"{PACKAGE}>{case.registered}" for case in CASES.values()}
    assert covered == set(registered), sorted(set(registered) ^ covered)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_save_load_allclose(case_id, tmp_path):
    case = CASES[case_id]
    cls = keras.saving.get_registered_object(f"{PACKAGE}>{case.registered}")
    model, inputs = case.build(tmp_path)
    want = case.probe(model, inputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=case.safe_mode)

    original, restored = find(model, cls), find(loaded, cls)
    config = as_json(original.get_config())  # JSON-serializable (tuples read back as lists)
    assert as_json(restored.get_config()) == config
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(original)))
    again = keras.saving.deserialize_keras_object(serialized, safe_mode=case.safe_mode)
    # Unbuilt, it has no build_config for nested layers (a TiedLMHead's own embedding).
    assert type(again) is cls and unbuilt(as_json(again.get_config())) == unbuilt(config)

    got = case.probe(loaded, inputs)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("kind", ["QRNNLayer-sequential", "WeightDropLSTM", "LMHead", "TiedLMHead"])
def test_config_clone_computes_the_same(kind, tmp_path):
    """A clone from ``get_config`` holding the same weights computes the same outputs."""
    model, _ = CASES[kind].build(tmp_path)
    layer = find(model, keras.saving.get_registered_object(f"{PACKAGE}>{CASES[kind].registered}"))
    h = np.random.default_rng(1).normal(size=(2, 6, EMB)).astype("float32")
    out = np.asarray(layer(h))
    clone = type(layer).from_config(layer.get_config())
    clone(h)
    own = {w.name: w for w in layer.weights}  # names are unique within these layers
    for w in clone.weights:
        w.assign(own[w.name].numpy())
    np.testing.assert_array_equal(np.asarray(clone(h)), out)


LEGACY_FILES = ["qrnn_lm", "lstm_classifier", "qrnn_attention_classifier", "lstm_regressor",
                "lstm_tagger"]  # fmt: skip


@pytest.mark.parametrize("name", LEGACY_FILES)
def test_files_saved_before_the_restructuring_still_load(name):
    """Written by the pre-issue-10 modules (tests/tf/data/saved_before_issue_10/README.md)."""
    outputs = np.load(LEGACY / "outputs.npz")
    model = keras.saving.load_model(LEGACY / f"{name}.keras")
    got = outputs_of(model, outputs["ids"])
    if len(got) == 1:
        want = {"output": outputs[name]}
    else:
        want = {key: outputs[f"{name}.{key}"] for key in got}
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
    backbone = model.backbone
    if backbone.arch == "qrnn":  # saved as "scan", the sequential algorithm's former name
        assert backbone.qrnn_forget_mult == "sequential"
        assert {layer.forget_mult_impl for layer in backbone.recurrent_layers} == {"sequential"}
