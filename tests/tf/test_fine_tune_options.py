"""Fine-tuning options of the task drivers: the AWD weight-drop callback, fine-tuning a
SavedModel (``from_hub``) with layer groups and gradual unfreezing, and ``--zoneout``."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
from click.testing import CliRunner  # noqa: E402

import ulmfit_keras as uk  # noqa: E402
from tests.tf.test_task_clis import CLASSIFIER_FLAGS, LABELS, SENT, load_script  # noqa: E402
from tests.tf.tiny import ChangedGroups  # noqa: E402
from ulmfit_tasks.backbone import load_backbone  # noqa: E402
from ulmfit_tasks.classifier import train_classifier  # noqa: E402
from ulmfit_tasks.config import ClassifierConfig, TrainingConfig  # noqa: E402
from ulmfit_tasks.predictors import TextClassifierPredictor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

P = 0.4


def plain_lstm_model(seed: int = 0) -> keras.Model:
    """Embedding -> keras.layers.LSTM -> Dense: no layer of it drops weights itself."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(40, 6)(ids)
    x = keras.layers.LSTM(5, name="plain_lstm")(x)
    return keras.Model(ids, keras.layers.Dense(2)(x))


def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 40, (4, 7)), np.array([0, 1, 0, 1])


class SeesDropped(keras.callbacks.Callback):
    """After the weight-drop callback: the value the training step will use, per batch."""

    def __init__(self, variable) -> None:
        super().__init__()
        self.variable, self.values = variable, []

    def on_train_batch_begin(self, batch, logs=None) -> None:
        del batch, logs
        self.values.append(np.array(self.variable.numpy()))


def test_weight_drop_variables_finds_recurrent_kernels_and_refuses_double_drop():
    model = plain_lstm_model()
    assert [v.path for v in uk.weight_drop_variables(model)] == [
        "plain_lstm/lstm_cell/recurrent_kernel"
    ]
    encoder, _ = uk.build_encoder(
        {"arch": "qrnn", "vocab_size": 40, "emb_size": 4, "hidden_size": 6, "n_layers": 2,
         "weight_p": 0.0},
        seed=0,
    )  # fmt: skip
    assert [v.path for v in uk.weight_drop_variables(encoder)] == ["qrnn_0/kernel", "qrnn_1/kernel"]
    dropping, _ = uk.build_encoder(
        {"arch": "awd-lstm", "vocab_size": 40, "emb_size": 4, "hidden_size": 6, "n_layers": 2,
         "weight_p": 0.2},
        seed=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="'lstm_0' already drops weights"):
        uk.weight_drop_variables(dropping)


@pytest.mark.parametrize(
    ("weight_p", "variables", "message"),
    [(0.0, True, "weight_p must be in"), (1.0, True, "weight_p must be in"), (0.5, False, "one")],
)
def test_weight_drop_callback_rejects_bad_arguments(weight_p, variables, message):
    model = plain_lstm_model()
    with pytest.raises(ValueError, match=message):
        uk.WeightDropCallback(uk.weight_drop_variables(model) if variables else [], weight_p)


def test_weight_drop_callback_step_uses_the_dropped_kernel_and_updates_the_raw_one():
    """SGD: the raw weight moves by -lr * grad(dropped) on kept entries, not at all elsewhere."""
    model = plain_lstm_model()
    (kernel,) = uk.weight_drop_variables(model)
    raw = np.array(kernel.numpy())
    start = [np.array(w.numpy()) for w in model.weights]
    ids, labels = batch()
    lr = 0.5
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss_fn)
    spy = SeesDropped(kernel)
    model.fit(
        ids,
        labels,
        batch_size=4,
        epochs=1,
        verbose=0,
        callbacks=[uk.WeightDropCallback([kernel], P, seed=1), spy],
    )
    trained = np.array(kernel.numpy())
    (dropped,) = spy.values
    keep = dropped != 0
    assert 0.3 < keep.mean() < 0.9  # Bernoulli(0.6) over 100 entries
    np.testing.assert_allclose(dropped[keep], raw[keep] / (1 - P), rtol=1e-6)

    # The gradient of the step's loss at the dropped kernel (the other weights as they were
    # before the step), computed here independently.
    model.set_weights(start)
    kernel.assign(dropped)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(ids, training=True))
    grad = tape.gradient(loss, kernel.value).numpy()
    np.testing.assert_allclose(trained, raw - lr * keep * grad, atol=1e-6)
    np.testing.assert_array_equal(trained[~keep], raw[~keep])


def test_weight_drop_callback_leaves_the_raw_weight_between_steps():
    """With a zero learning rate the variable is back to its raw value after every step, so
    validation, prediction and saving never see a dropped kernel."""
    model = plain_lstm_model()
    (kernel,) = uk.weight_drop_variables(model)
    raw = np.array(kernel.numpy())
    ids, labels = batch()
    before = model.predict(ids, verbose=0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    spy = SeesDropped(kernel)
    model.fit(
        np.tile(ids, (3, 1)),
        np.tile(np.eye(2)[labels], (3, 1)),
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[uk.WeightDropCallback([kernel], P, seed=2), spy],
    )
    np.testing.assert_array_equal(kernel.numpy(), raw)
    np.testing.assert_array_equal(model.predict(ids, verbose=0), before)
    # A fresh mask each of the 6 steps.
    masks = {(value != 0).tobytes() for value in spy.values}
    assert len(spy.values) == 6 and len(masks) == 6


def hub_config(export_dir, tmp_path, **changes) -> TrainingConfig:
    return TrainingConfig(
        model_weights_cp=export_dir,
        out_path=tmp_path / "out",
        model_type="from_hub",
        **changes,
    )


def test_from_hub_layer_groups_are_the_saved_model_variables(export_dir, tmp_path):
    backbone = load_backbone(hub_config(export_dir, tmp_path), export_dir)
    model = uk.ULMFiTClassifier(backbone=backbone, num_classes=2, seed=0)
    groups = uk.layer_groups(model, backbone)
    assert [g.name for g in groups] == ["embedding", "lstm_0", "lstm_1", "head"]
    assert [v.name for v in groups[1].variables] == [
        "lstm_0_lstm_cell_kernel",
        "lstm_0_lstm_cell_bias",
        "lstm_0_lstm_cell_recurrent_kernel",
    ]
    # Every weight of the model is in exactly one group.
    paths = [v.path for g in groups for v in g.variables]
    assert sorted(paths) == sorted(v.path for v in model.weights)


def test_from_hub_gradual_unfreezing_with_weight_drop(export_dir, tmp_path):
    backbone = load_backbone(hub_config(export_dir, tmp_path), export_dir)
    model = uk.ULMFiTClassifier(backbone=backbone, num_classes=2, seed=0)
    groups = uk.layer_groups(model, backbone)
    model.compile(
        optimizer=uk.DiscriminativeAdam(
            learning_rate=1e-2, lr_multipliers=uk.discriminative_multipliers(groups)
        ),
        loss="sparse_categorical_crossentropy",
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 300, (16, 9))
    labels = (ids[:, 0] % 2).astype("int32")
    recorder = ChangedGroups(groups)
    weight_drop = uk.WeightDropCallback(uk.weight_drop_variables(backbone), 0.3, seed=0)
    model.fit(
        ids,
        labels,
        batch_size=8,
        epochs=4,
        verbose=0,
        callbacks=[uk.GradualUnfreezing(groups), weight_drop, recorder],
    )
    # Frozen recurrent kernels come back unchanged although weight-drop ran on them.
    assert recorder.per_epoch == [
        ["head"],
        ["lstm_1", "head"],
        ["lstm_0", "lstm_1", "head"],
        ["embedding", "lstm_0", "lstm_1", "head"],
    ]


def test_from_hub_qrnn_fine_tunes_and_reloads_identically(qrnn_export_dir, tmp_path, caplog):
    config = ClassifierConfig(
        train_tsv=SENT,
        label_map=LABELS,
        gold_column="sentiment",
        model_weights_cp=qrnn_export_dir,
        out_path=tmp_path / "hub-qrnn",
        model_type="from_hub",
        qrnn=True,
        unfreeze="none",
        num_epochs=2,
        batch_size=64,
        max_seq_len=40,
        lr=1e-2,
    )
    with caplog.at_level(logging.INFO):
        result = train_classifier(config)
    assert "AWD weight-drop callback: p=0.10 on qrnn_0_kernel, qrnn_1_kernel" in caplog.text
    assert result.history["loss"][-1] < result.history["loss"][0]
    pretrained = {w.name: w.numpy() for w in uk.SavedModelEncoder(qrnn_export_dir).weights}
    predictor = TextClassifierPredictor(result.out_path)
    for weight in predictor.model.backbone.weights:  # all groups trained (no unfreezing)
        assert not np.array_equal(weight.numpy(), pretrained[weight.name]), weight.name
    texts = ["a clever blend of fact and fiction .", "dull and far too long"]
    ids = predictor.encode(texts)
    np.testing.assert_array_equal(predictor.predict(texts)[0], result.model.predict(ids, verbose=0))


def test_zoneout_reaches_the_qrnn_layers(qrnn_export_dir, tmp_path):
    config = TrainingConfig(
        model_weights_cp=qrnn_export_dir, out_path=tmp_path, qrnn=True, zoneout=0.25
    )
    encoder = load_backbone(config, qrnn_export_dir)
    assert [layer.zoneout for layer in encoder.recurrent_layers] == [0.25, 0.25]
    default = load_backbone(dataclasses.replace(config, zoneout=None), qrnn_export_dir)
    assert [layer.zoneout for layer in default.recurrent_layers] == [0.0, 0.0]


@pytest.mark.parametrize(
    ("qrnn", "extra", "message"),
    [
        (False, [], "--zoneout is a QRNN option"),
        (True, ["--model-type", "from_hub"], "--zoneout needs --model-type from_cp"),
    ],
)
def test_zoneout_flag_errors(export_dir, qrnn_export_dir, tmp_path, qrnn, extra, message):
    result = CliRunner().invoke(
        load_script("10_train_classifier"),
        [
            *CLASSIFIER_FLAGS,
            *(["--qrnn"] if qrnn else []),
            *extra,
            "--zoneout",
            "0.2",
            "--model-weights-cp",
            str(qrnn_export_dir if qrnn else export_dir),
            "--out-path",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert not (tmp_path / "o").exists()
