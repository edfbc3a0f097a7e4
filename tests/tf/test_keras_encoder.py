"""The Keras encoder and language model: parity with PyTorch, masking, saving, loading, training.

The PyTorch references are built from torch modules only (``nn.Embedding``, ``nn.LSTM`` wrapped
in our torch ``WeightDropout`` as fastai 2.8 does, and ``ulmfit_torch.qrnn.awd_qrnn_layer``
as fastai 2.2.7's AWD-QRNN), so their state dicts use fastai's key names. Weights are copied into
the Keras models by variable path (see :func:`copy_torch_weights`), not by position.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import ulmfit_keras as uk  # noqa: E402
from ulmfit_core.lm_config import LMConfig  # noqa: E402
from ulmfit_torch.qrnn import awd_qrnn_layer  # noqa: E402
from ulmfit_torch.weight_dropout import WeightDropout  # noqa: E402

VOCAB, EMB, HIDDEN, LAYERS = 64, 16, 24, 3
BATCH, SEQ = 3, 17
PAD = 1
ARCHS = ["awd-lstm", "qrnn"]
PARITY_TOL = 1e-5

# Keras 3.15 converts variables with np.array(x) while saving (a numpy 2 deprecation, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def tiny_config(arch: str, /, **changes) -> dict:
    config = {
        "arch": arch,
        "vocab_size": VOCAB,
        "emb_size": EMB,
        "hidden_size": HIDDEN,
        "n_layers": LAYERS,
        "pad_id": PAD,
        "input_p": 0.3,
        "weight_p": 0.4,
        "embed_p": 0.1,
        "hidden_p": 0.2,
        "output_p": 0.1,
        "windows": [2, 1, 1] if arch == "qrnn" else None,
        "tie_weights": True,
        "out_bias": True,
        "bidir": False,
    }
    config.update(changes)
    return config


def random_ids(seed: int, shape=(BATCH, SEQ)) -> np.ndarray:
    """Token ids without the pad id (parity is defined on unpadded sequences)."""
    ids = np.random.default_rng(seed).integers(2, VOCAB, size=shape).astype("int32")
    ids[0, 3] = 0  # <unk> is an ordinary token
    return ids


# ---------------------------------------------------------------------------------------------
# PyTorch references (eval mode, state reset before every forward)
# ---------------------------------------------------------------------------------------------


class TorchLM(nn.Module):
    """Embedding -> recurrent layers -> decoder, as fastai's ``SequentialRNN(AWD_*, LinearDecoder)``
    computes it in eval mode after ``reset()`` (dropouts are identities then)."""

    def __init__(
        self,
        arch: str,
        tie: bool = True,
        sizes: tuple[int, int, int, int] = (VOCAB, EMB, HIDDEN, LAYERS),
        init_range: float | None = 0.5,
    ) -> None:
        """``sizes`` = (vocab, emb, hidden, layers); ``init_range``: every parameter uniform in
        ``±init_range`` (large, to exercise the saturating parts), ``None``: fastai-like init."""
        super().__init__()
        vocab, emb, hidden, n_layers = sizes
        self.arch, self.n_layers = arch, n_layers
        self.encoder = nn.Embedding(vocab, emb, padding_idx=PAD)
        rnns = []
        for layer, n_out in enumerate([hidden] * (n_layers - 1) + [emb]):
            n_in = emb if layer == 0 else hidden
            if arch == "awd-lstm":
                rnn = WeightDropout(
                    nn.LSTM(n_in, n_out, 1, batch_first=True), 0.4, layer_names="weight_hh_l0"
                )
            else:
                rnn = awd_qrnn_layer(n_in, n_out, layer, weight_p=0.4)
            rnns.append(rnn)
        self.rnns = nn.ModuleList(rnns)
        self.decoder = nn.Linear(emb, vocab)
        if tie:
            self.decoder.weight = self.encoder.weight
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            if init_range is None:
                self.encoder.weight.uniform_(-0.1, 0.1, generator=generator)
                self.decoder.bias.uniform_(-0.1, 0.1, generator=generator)
            else:
                for param in self.parameters():
                    param.uniform_(-init_range, init_range, generator=generator)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(ids)
        for rnn in self.rnns:
            if self.arch == "qrnn":
                rnn.reset()
            x, _ = rnn(x)
        return x, self.decoder(x)


def torch_forward(model: TorchLM, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    with torch.no_grad():
        hidden, logits = model(torch.from_numpy(ids.astype("int64")))
    return hidden.numpy(), logits.numpy()


def keras_weight_targets(
    sd: dict[str, np.ndarray], arch: str, n_layers: int, tie: bool
) -> dict[str, np.ndarray]:
    """fastai-layout state dict -> ``{keras variable path: value}``, with the transforms."""
    targets = {"encoder_embedding/embeddings": sd["encoder.weight"]}
    for layer in range(n_layers):
        if arch == "awd-lstm":
            prefix, cell = f"rnns.{layer}", f"lstm_{layer}/lstm_cell"
            targets[f"{cell}/kernel"] = sd[f"{prefix}.module.weight_ih_l0"].T
            targets[f"{cell}/recurrent_kernel"] = sd[f"{prefix}.weight_hh_l0_raw"].T
            targets[f"{cell}/bias"] = (
                sd[f"{prefix}.module.bias_ih_l0"] + sd[f"{prefix}.module.bias_hh_l0"]
            )
        else:
            prefix = f"rnns.{layer}.layers.0.linear"
            targets[f"qrnn_{layer}/kernel"] = sd[f"{prefix}.weight_raw"].T
            targets[f"qrnn_{layer}/bias"] = sd[f"{prefix}.module.bias"]
    if not tie:
        targets["lm_head/kernel"] = sd["decoder.weight"].T
    targets["lm_head/bias"] = sd["decoder.bias"]
    return targets


def copy_torch_weights(model: TorchLM, lm: keras.Model, tie: bool = True) -> None:
    """Assign every Keras weight once, by path, failing on a missing path or a shape mismatch."""
    sd = {key: value.detach().numpy() for key, value in model.state_dict().items()}
    targets = keras_weight_targets(sd, model.arch, model.n_layers, tie)
    weights = {w.path: w for w in lm.weights}
    assert sorted(weights) == sorted(targets)
    for path, value in targets.items():
        variable = weights[path]
        assert tuple(variable.shape) == value.shape, path
        variable.assign(value.astype("float32"))


@pytest.fixture(scope="module", params=ARCHS)
def converted(request):
    """A random PyTorch LM and the Keras (encoder, lm) holding its weights."""
    arch = request.param
    model = TorchLM(arch)
    encoder, lm = uk.build_encoder(tiny_config(arch), seed=0)
    copy_torch_weights(model, lm)
    return arch, model, encoder, lm


def snapshot(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: np.array(w.numpy()) for w in model.weights}


# ---------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------


def test_parity_with_pytorch(converted):
    _, model, encoder, lm = converted
    ids = random_ids(0)
    want_hidden, want_logits = torch_forward(model, ids)
    hidden = np.asarray(encoder(ids, training=False))
    logits = np.asarray(lm(ids, training=False))
    assert hidden.shape == (BATCH, SEQ, EMB) and logits.shape == (BATCH, SEQ, VOCAB)
    assert np.abs(hidden - want_hidden).max() <= PARITY_TOL
    assert np.abs(logits - want_logits).max() <= PARITY_TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_parity_untied_decoder(arch):
    model = TorchLM(arch, tie=False)
    encoder, lm = uk.build_encoder(tiny_config(arch, tie_weights=False), seed=0)
    assert isinstance(lm.lm_head, uk.LMHead)
    copy_torch_weights(model, lm, tie=False)
    ids = random_ids(1)
    want_hidden, want_logits = torch_forward(model, ids)
    assert np.abs(np.asarray(encoder(ids)) - want_hidden).max() <= PARITY_TOL
    assert np.abs(np.asarray(lm(ids)) - want_logits).max() <= PARITY_TOL


def test_parity_in_tf_function_with_fixed_length():
    """The graph path (fixed length, log-depth forget-mult for QRNN) gives the same numbers."""
    model = TorchLM("qrnn")
    _, lm = uk.build_encoder(tiny_config("qrnn"), fixed_seq_len=SEQ, qrnn_forget_mult="log_depth")
    copy_torch_weights(model, lm)
    ids = random_ids(2)
    _, want_logits = torch_forward(model, ids)
    logits = tf.function(lambda x: lm(x, training=False))(tf.constant(ids))
    assert np.abs(logits.numpy() - want_logits).max() <= PARITY_TOL


@pytest.mark.slow
@pytest.mark.parametrize("arch, hidden, n_layers", [("awd-lstm", 1152, 3), ("qrnn", 1552, 4)])
def test_parity_at_full_size(arch, hidden, n_layers):
    """ULMFiT's and MultiFiT's real layer sizes (a 2000-word vocabulary), fastai-like init."""
    sizes = (2000, 400, hidden, n_layers)
    model = TorchLM(arch, sizes=sizes, init_range=None)
    config = tiny_config(arch, vocab_size=2000, emb_size=400, hidden_size=hidden)
    config.update(n_layers=n_layers, windows=None)
    encoder, lm = uk.build_encoder(config)
    copy_torch_weights(model, lm)
    ids = np.random.default_rng(0).integers(2, 2000, size=(3, 70)).astype("int32")
    want_hidden, want_logits = torch_forward(model, ids)
    assert np.abs(np.asarray(encoder(ids)) - want_hidden).max() <= PARITY_TOL
    assert np.abs(np.asarray(lm(ids)) - want_logits).max() <= PARITY_TOL


# ---------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------

LENGTHS = [SEQ, 11, 5]


def padded_batch(seed: int, post: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    rows = [random_ids(seed + i, (1, n))[0] for i, n in enumerate(LENGTHS)]
    batch = np.full((len(rows), SEQ), PAD, dtype="int32")
    for i, row in enumerate(rows):
        if post:
            batch[i, : len(row)] = row
        else:
            batch[i, SEQ - len(row) :] = row
    return batch, rows


@pytest.mark.parametrize("post", [True, False], ids=["post-padding", "pre-padding"])
def test_padding_does_not_change_valid_outputs(converted, post):
    _, _, encoder, lm = converted
    batch, rows = padded_batch(10, post=post)
    hidden = encoder(batch)
    mask = keras.src.backend.get_keras_mask(hidden)
    assert mask is not None
    np.testing.assert_array_equal(np.asarray(mask), batch != PAD)
    hidden = np.asarray(hidden)
    logits = np.asarray(lm(batch))
    for i, row in enumerate(rows):
        valid = slice(0, len(row)) if post else slice(SEQ - len(row), SEQ)
        alone = np.asarray(encoder(row[None]))[0]
        np.testing.assert_allclose(hidden[i, valid], alone, atol=1e-6, rtol=0)
        np.testing.assert_allclose(logits[i, valid], np.asarray(lm(row[None]))[0], atol=1e-6)
        padding = np.ones(SEQ, bool)
        padding[valid] = False
        assert not hidden[i, padding].any()  # outputs at padded steps are zeros


def test_mask_reaches_downstream_layers(converted):
    """A masking-aware layer after the encoder sees the pad mask (the masked mean)."""
    _, _, encoder, _ = converted
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(encoder.output)
    model = keras.Model(encoder.input, pooled)
    batch, rows = padded_batch(20)
    got = np.asarray(model(batch))
    for i, row in enumerate(rows):
        want = np.asarray(encoder(row[None]))[0].mean(axis=0)
        np.testing.assert_allclose(got[i], want, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Dropouts and weight-drop
# ---------------------------------------------------------------------------------------------


def test_dropouts_only_in_training(converted):
    _, _, encoder, lm = converted
    ids = random_ids(3)
    eval_1, eval_2 = (np.asarray(lm(ids, training=False)) for _ in range(2))
    np.testing.assert_array_equal(eval_1, eval_2)
    train_1, train_2 = (np.asarray(lm(ids, training=True)) for _ in range(2))
    assert np.abs(train_1 - eval_1).max() > 1e-3
    assert np.abs(train_1 - train_2).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(encoder(ids)), np.asarray(encoder(ids)))


def test_training_step_math_never_mutates_weights(converted):
    """Weight-drop, embedding dropout and zoneout work on copies: the variables keep their values
    through training-mode forwards and gradient computation (only the optimizer changes them)."""
    _, _, _, lm = converted
    before = snapshot(lm)
    ids = random_ids(4)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(lm(ids, training=True) ** 2)
    grads = tape.gradient(loss, lm.trainable_weights)
    assert all(g is not None for g in grads)
    after = snapshot(lm)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)


# ---------------------------------------------------------------------------------------------
# Names and configs
# ---------------------------------------------------------------------------------------------


def expected_paths(arch: str, tie: bool = True) -> dict[str, tuple[int, ...]]:
    paths = {"encoder_embedding/embeddings": (VOCAB, EMB)}
    sizes = [HIDDEN] * (LAYERS - 1) + [EMB]
    for i, n_out in enumerate(sizes):
        n_in = EMB if i == 0 else HIDDEN
        if arch == "awd-lstm":
            paths[f"lstm_{i}/lstm_cell/kernel"] = (n_in, 4 * n_out)
            paths[f"lstm_{i}/lstm_cell/recurrent_kernel"] = (n_out, 4 * n_out)
            paths[f"lstm_{i}/lstm_cell/bias"] = (4 * n_out,)
        else:
            window = 2 if i == 0 else 1
            paths[f"qrnn_{i}/kernel"] = (window * n_in, 3 * n_out)
            paths[f"qrnn_{i}/bias"] = (3 * n_out,)
    if not tie:
        paths["lm_head/kernel"] = (EMB, VOCAB)
    paths["lm_head/bias"] = (VOCAB,)
    return paths


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("arch", ARCHS)
def test_variable_paths(arch, tie):
    encoder, lm = uk.build_encoder(tiny_config(arch, tie_weights=tie))
    assert uk.variable_paths(lm) == expected_paths(arch, tie)
    encoder_paths = {k: v for k, v in expected_paths(arch, tie).items() if "lm_head" not in k}
    assert uk.variable_paths(encoder) == encoder_paths
    names = [layer.name for layer in encoder.layers]
    prefix = "lstm" if arch == "awd-lstm" else "qrnn"
    assert names == [
        "token_ids",
        "encoder_embedding",
        "input_dropout",
        f"{prefix}_0",
        "hidden_dropout_0",
        f"{prefix}_1",
        "hidden_dropout_1",
        f"{prefix}_2",
    ]


def test_build_encoder_accepts_lm_config():
    config = LMConfig.create("qrnn", VOCAB, emb_size=EMB, hidden_size=HIDDEN, n_layers=2)
    encoder, lm = uk.build_encoder(config)
    assert encoder.windows == (2, 1)
    assert encoder.weight_p == pytest.approx(config.weight_p)
    assert lm.output_p == pytest.approx(config.output_p)
    assert uk.build_encoder(config.to_dict())[0].get_config() == encoder.get_config()


def test_one_schema_and_one_set_of_defaults():
    """The encoder is built from ``LMConfig`` (``EncoderConfig`` is it); whatever a config or a
    constructor leaves out takes the recipe's defaults, the same everywhere."""
    assert uk.EncoderConfig is LMConfig
    sizes = {"vocab_size": VOCAB, "emb_size": EMB, "hidden_size": HIDDEN, "n_layers": 2}
    for arch in ARCHS:
        recipe = LMConfig.create(arch, VOCAB, emb_size=EMB, hidden_size=HIDDEN, n_layers=2)
        assert uk.EncoderConfig(arch=arch, **sizes).dropouts == recipe.dropouts
        encoder, lm = uk.build_encoder({"arch": arch, **sizes})
        direct = uk.ULMFiTEncoder(arch, **sizes)
        from_config = uk.ULMFiTEncoder.from_lm_config(recipe)
        for name in ("input_p", "weight_p", "embed_p", "hidden_p"):
            assert getattr(encoder, name) == getattr(direct, name) == getattr(recipe, name)
            assert getattr(from_config, name) == getattr(recipe, name)
        assert lm.output_p == recipe.output_p
        assert uk.ULMFiTLanguageModel(direct).output_p == recipe.output_p
    scaled = uk.ULMFiTEncoder.from_lm_config({"arch": "qrnn", **sizes, "drop_mult": 0.5})
    assert scaled.input_p == pytest.approx(0.2)  # fastai's drop_mult scales the defaults


def test_encoder_config_fields_round_trip_through_get_config():
    config = LMConfig.create("qrnn", VOCAB, emb_size=EMB, hidden_size=HIDDEN, n_layers=2)
    encoder = uk.ULMFiTEncoder.from_lm_config(config.replace(zoneout=0.3), seed=5)
    keras_config = encoder.get_config()
    rebuilt = LMConfig.from_any(keras_config)  # the encoder's config is a plain LM-config dict
    for name in ("arch", "vocab_size", "emb_size", "hidden_size", "n_layers", "windows"):
        assert getattr(rebuilt, name) == getattr(config, name)
    assert rebuilt.zoneout == 0.3 and keras_config["seed"] == 5
    assert keras_config["qrnn_forget_mult"] == "sequential"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bidir": True}, "bidirectional"),
        ({"arch": "transformer"}, "unknown architecture"),
        ({"windows": [2, 2]}, "windows"),
        ({"input_p": 1.0}, "input_p"),
    ],
)
def test_build_encoder_rejects_bad_configs(change, message):
    with pytest.raises(ValueError, match=message):
        uk.build_encoder(tiny_config("qrnn", **change))
    with pytest.raises(ValueError, match="missing keys"):
        uk.build_encoder({"arch": "qrnn"})


# ---------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------


def test_keras_file_round_trip(converted, tmp_path):
    """What the shared round trip (test_keras_saving.py) does not check: the loaded LM's
    backbone, its tied decoder and its variable paths, on converted PyTorch weights."""
    _, _, encoder, lm = converted
    ids, _ = padded_batch(30)
    lm.save(tmp_path / "lm.keras")
    encoder.save(tmp_path / "encoder.keras")
    lm_2 = keras.models.load_model(tmp_path / "lm.keras")
    encoder_2 = keras.models.load_model(tmp_path / "encoder.keras")
    assert isinstance(lm_2, uk.ULMFiTLanguageModel) and isinstance(encoder_2, uk.ULMFiTEncoder)
    np.testing.assert_array_equal(np.asarray(lm_2(ids)), np.asarray(lm(ids)))
    np.testing.assert_array_equal(np.asarray(lm_2.backbone(ids)), np.asarray(encoder(ids)))
    # The decoder is still the embedding variable, not a copy.
    assert lm_2.lm_head.embedding is lm_2.backbone.token_embedding
    assert uk.variable_paths(lm_2) == uk.variable_paths(lm)


def write_export_dir(root: Path, config: dict, lm: keras.Model) -> Path:
    """The reading side's view of the converter's output (config.json + keras_weights/)."""
    (root / "keras_weights").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    lm.save_weights(root / "keras_weights" / "tiny.weights.h5")
    return root


def test_load_encoder_round_trip(converted, tmp_path):
    arch, _, encoder, lm = converted
    config = LMConfig.create(arch, VOCAB, emb_size=EMB, hidden_size=HIDDEN, n_layers=LAYERS)
    export = write_export_dir(tmp_path / "export", config.to_dict(), lm)
    ids, _ = padded_batch(40)

    loaded = uk.load_encoder(export)
    np.testing.assert_array_equal(np.asarray(loaded(ids)), np.asarray(encoder(ids)))
    assert keras.src.backend.get_keras_mask(loaded(ids)) is not None
    enc_2, lm_2 = uk.load_language_model(export, fixed_seq_len=SEQ, weights_name="tiny")
    assert enc_2.input_shape == (None, SEQ)
    np.testing.assert_array_equal(np.asarray(lm_2(ids)), np.asarray(lm(ids)))

    lm.save_weights(export / "keras_weights" / "other.weights.h5")
    with pytest.raises(ValueError, match="several weights files"):
        uk.load_encoder(export)
    with pytest.raises(FileNotFoundError):
        uk.load_encoder(export, weights_name="missing")


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_load_encoder_rejects_weights_of_another_shape(tmp_path):
    _, lm = uk.build_encoder(tiny_config("qrnn", hidden_size=HIDDEN + 1))
    export = write_export_dir(tmp_path / "export", tiny_config("qrnn"), lm)
    with pytest.raises(ValueError):
        uk.load_encoder(export)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_one_fit_step_trains(arch):
    _, lm = uk.build_encoder(tiny_config(arch), seed=1)
    lm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    batch, _ = padded_batch(50)
    x, y = batch[:, :-1], batch[:, 1:]
    before = snapshot(lm)
    history = lm.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = snapshot(lm)
    changed = [path for path in before if not np.array_equal(before[path], after[path])]
    assert sorted(changed) == sorted(before)  # every weight, the encoder's included


def test_lm_loss_ignores_padding(converted):
    """The logits carry the mask, so Keras leaves padded targets out of the loss."""
    _, _, _, lm = converted
    lm.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batch, _ = padded_batch(55)
    x, y = batch[:, :-1], batch[:, 1:]
    per_token = keras.losses.sparse_categorical_crossentropy(y, lm(x), from_logits=True)
    valid = x != PAD
    want = np.asarray(per_token)[valid].mean()
    assert lm.evaluate(x, y, batch_size=BATCH, verbose=0) == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The SavedModel wrapper
# ---------------------------------------------------------------------------------------------


class ExportModule(tf.Module):
    """A stand-in for the converter's export: the signatures that take token ids."""

    def __init__(self, encoder: keras.Model, lm: keras.Model) -> None:
        super().__init__()
        self.encoder = encoder
        self.lm = lm

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")])
    def numericalized_encoder(self, token_ids):
        output = self.encoder(token_ids, training=False)
        return {"output": output, "mask": tf.not_equal(token_ids, PAD)}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")])
    def lm_logits(self, token_ids):
        output = self.lm(token_ids, training=False)
        return {"output": output, "mask": tf.not_equal(token_ids, PAD)}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    encoder, lm = uk.build_encoder(tiny_config("awd-lstm"), seed=2)
    module = ExportModule(encoder, lm)
    path = tmp_path_factory.mktemp("export") / "saved_model"
    signatures = {name: getattr(module, name) for name in ("numericalized_encoder", "lm_logits")}
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path, encoder, lm


def test_saved_model_encoder_outputs_carry_the_mask(saved_model):
    path, encoder, _ = saved_model
    layer = uk.SavedModelEncoder(path.parent, name="pretrained_encoder")  # DIR or DIR/saved_model
    batch, _ = padded_batch(60)
    out = layer(batch)
    np.testing.assert_allclose(np.asarray(out), np.asarray(encoder(batch)), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(keras.src.backend.get_keras_mask(out)), batch != PAD)
    # In a functional model the mask reaches the next layer.
    ids = keras.Input((None,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(uk.SavedModelEncoder(path)(ids))
    model = keras.Model(ids, pooled)
    want = [np.asarray(encoder(batch[i : i + 1, :n]))[0].mean(0) for i, n in enumerate(LENGTHS)]
    np.testing.assert_allclose(np.asarray(model(batch)), np.stack(want), atol=1e-6)


# Adam keeps slot variables named after each variable: the wrapped SavedModel's names must suit.
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_saved_model_encoder_is_trainable(saved_model, optimizer):
    path, _, _ = saved_model
    ids = keras.Input((None,), dtype="int32")
    hidden = uk.SavedModelEncoder(path, name="pretrained_encoder")(ids)
    logits = keras.layers.Dense(2, name="classifier")(keras.layers.GlobalAveragePooling1D()(hidden))
    model = keras.Model(ids, logits)
    encoder_layer = model.get_layer("pretrained_encoder")
    assert len(encoder_layer.trainable_weights) == len(uk.variable_paths(saved_model[1]))
    batch, _ = padded_batch(70)
    labels = np.array([0, 1, 1])
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(labels, model(batch), from_logits=True)
    grads = tape.gradient(loss, encoder_layer.trainable_weights)
    assert all(g is not None for g in grads)
    before = [np.array(w.numpy()) for w in encoder_layer.trainable_weights]
    model.compile(
        optimizer=keras.optimizers.SGD(0.5) if optimizer == "sgd" else keras.optimizers.Adam(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(batch, labels, epochs=1, verbose=0)
    after = [np.array(w.numpy()) for w in encoder_layer.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_saved_model_lm_logits_endpoint(saved_model):
    path, _, lm = saved_model
    layer = uk.SavedModelEncoder(path, call_endpoint="lm_logits")
    batch, _ = padded_batch(80)
    logits = layer(batch)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(lm(batch)), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(keras.src.backend.get_keras_mask(logits)), batch != 1)


def test_saved_model_encoder_config_needs_unsafe_mode(saved_model):
    """Deserializing runs the SavedModel's graph: refused in safe mode, like TFSMLayer."""
    layer = uk.SavedModelEncoder(saved_model[0], name="pretrained_encoder")
    serialized = json.loads(json.dumps(keras.layers.serialize(layer)))
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    clone = keras.saving.deserialize_keras_object(serialized, safe_mode=False)
    assert isinstance(clone, uk.SavedModelEncoder)
    assert clone.get_config() == layer.get_config()


def test_saved_model_encoder_rejects_text_endpoints(saved_model):
    with pytest.raises(ValueError, match="token ids"):
        uk.SavedModelEncoder(saved_model[0], call_endpoint="string_encoder")
