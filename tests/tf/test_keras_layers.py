"""The layers of ``ulmfit_keras`` one by one: math against PyTorch, masks, dropouts, configs.

References are ``ulmfit_torch.qrnn`` (torch-only, fastai 2.2.7's QRNN) and ``torch.nn``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
sentencepiece = pytest.importorskip("sentencepiece")

from torch import nn  # noqa: E402

import ulmfit_keras as uk  # noqa: E402
from pretraining_utils.demo_corpus import write_demo_corpus  # noqa: E402
from pretraining_utils.spm import SpmConfig, build_spm  # noqa: E402
from tests.helpers import SHARED_DATA  # noqa: E402
from ulmfit_torch import qrnn as torch_qrnn  # noqa: E402
from ulmfit_torch.forget_mult import forget_mult_reference  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PAD = 1
VOCAB, EMB, HIDDEN = 50, 16, 24


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def normal(shape, seed: int = 0) -> np.ndarray:
    return rng(seed).normal(size=shape).astype("float32")


def assign(variable, value) -> None:
    value = np.asarray(value, dtype="float32")
    assert tuple(variable.shape) == value.shape, variable.path
    variable.assign(value)


def values(layer) -> dict[str, np.ndarray]:
    return {w.path: np.array(w.numpy()) for w in layer.weights}


def mask_of(tensor) -> np.ndarray | None:
    mask = keras.src.backend.get_keras_mask(tensor)
    return None if mask is None else np.asarray(mask)


# ---------------------------------------------------------------------------------------------
# MaskedEmbedding
# ---------------------------------------------------------------------------------------------


def test_embedding_masks_pad_id_one_not_zero():
    layer = uk.MaskedEmbedding(VOCAB, EMB, name="encoder_embedding")
    ids = np.array([[2, 0, 5, 1, 1], [1, 7, 3, 4, 0]], dtype="int32")
    out = layer(ids)
    np.testing.assert_array_equal(mask_of(out), ids != 1)
    np.testing.assert_array_equal(np.asarray(out), layer.embeddings.numpy()[ids])
    assert layer.embeddings.path == "encoder_embedding/embeddings"


def test_embedding_dropout_drops_whole_vocabulary_rows():
    p = 0.5
    layer = uk.MaskedEmbedding(VOCAB, EMB, embed_p=p, seed=3)
    table = np.array(layer.embeddings.numpy()) if layer.built else None
    ids = np.tile(np.arange(VOCAB, dtype="int32"), (4, 3))  # every id 12 times, batch 4
    out = np.asarray(layer(ids, training=True))
    table = layer.embeddings.numpy()
    dropped = kept = 0
    for token in range(VOCAB):
        rows = out[ids == token]  # every occurrence of the token in the batch
        if not rows.any():
            dropped += 1
        else:
            np.testing.assert_allclose(rows, np.broadcast_to(table[token] / (1 - p), rows.shape))
            kept += 1
    assert dropped > 5 and kept > 5
    np.testing.assert_array_equal(layer.embeddings.numpy(), table)  # the variable is untouched


def test_embedding_dropout_only_in_training():
    layer = uk.MaskedEmbedding(VOCAB, EMB, embed_p=0.5, seed=1)
    ids = rng().integers(0, VOCAB, (3, 20)).astype("int32")
    eval_1, eval_2 = np.asarray(layer(ids)), np.asarray(layer(ids, training=False))
    np.testing.assert_array_equal(eval_1, eval_2)
    np.testing.assert_array_equal(eval_1, layer.embeddings.numpy()[ids])
    train_1, train_2 = np.asarray(layer(ids, training=True)), np.asarray(layer(ids, training=True))
    assert not np.array_equal(train_1, train_2)


# ---------------------------------------------------------------------------------------------
# RNNDropout
# ---------------------------------------------------------------------------------------------


def test_rnn_dropout_mask_is_constant_over_time():
    p = 0.4
    layer = uk.RNNDropout(p, seed=0)
    x = np.abs(normal((4, 30, 16))) + 0.1
    out = np.asarray(layer(x, training=True))
    ratio = out / x
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-6)
    np.testing.assert_allclose(np.unique(np.round(ratio, 5)), [0.0, 1 / (1 - p)], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # identity in inference


def test_rnn_dropout_passes_the_mask_through():
    ids = keras.Input((None,), dtype="int32")
    x = uk.MaskedEmbedding(VOCAB, EMB)(ids)
    model = keras.Model(ids, uk.RNNDropout(0.5, name="input_dropout")(x))
    batch = np.array([[3, 4, 1], [5, 1, 1]], dtype="int32")
    np.testing.assert_array_equal(mask_of(model(batch, training=True)), batch != PAD)


# ---------------------------------------------------------------------------------------------
# WeightDropLSTM
# ---------------------------------------------------------------------------------------------


def lstm_pair(weight_p: float = 0.5):
    """A WeightDropLSTM and a plain keras LSTM holding the same weights."""
    ours = uk.WeightDropLSTM(HIDDEN, weight_p=weight_p, weight_drop_seed=0, name="lstm_0")
    plain = keras.layers.LSTM(HIDDEN, return_sequences=True, zero_output_for_mask=True)
    x = normal((3, 9, EMB))
    ours(x), plain(x)
    for w_ours, w_plain in zip(ours.weights, plain.weights, strict=True):
        value = normal(tuple(w_ours.shape), seed=len(w_ours.path)) * 0.5
        assign(w_ours, value)
        assign(w_plain, value)
    return ours, plain


def test_weight_drop_lstm_variable_paths():
    ours, _ = lstm_pair()
    assert uk.variable_paths(ours) == {
        "lstm_0/lstm_cell/kernel": (EMB, 4 * HIDDEN),
        "lstm_0/lstm_cell/recurrent_kernel": (HIDDEN, 4 * HIDDEN),
        "lstm_0/lstm_cell/bias": (4 * HIDDEN,),
    }


def test_weight_drop_lstm_matches_torch_lstm():
    ours, _ = lstm_pair()
    torch_lstm = nn.LSTM(EMB, HIDDEN, batch_first=True)
    with torch.no_grad():
        for param in torch_lstm.parameters():
            param.uniform_(-0.5, 0.5)
    cell = "lstm_0/lstm_cell"
    weights = {w.path: w for w in ours.weights}
    assign(weights[f"{cell}/kernel"], torch_lstm.weight_ih_l0.detach().numpy().T)
    assign(weights[f"{cell}/recurrent_kernel"], torch_lstm.weight_hh_l0.detach().numpy().T)
    bias = torch_lstm.bias_ih_l0 + torch_lstm.bias_hh_l0
    assign(weights[f"{cell}/bias"], bias.detach().numpy())
    x = normal((3, 13, EMB), seed=5)
    with torch.no_grad():
        want = torch_lstm(torch.from_numpy(x))[0].numpy()
    assert np.abs(np.asarray(ours(x)) - want).max() <= 1e-5


def test_weight_drop_only_in_training_and_never_mutates():
    ours, plain = lstm_pair(weight_p=0.5)
    x = normal((3, 9, EMB), seed=1)
    before = values(ours)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(plain(x)), atol=1e-6)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        train = ours(xt, training=True)
        loss = tf.reduce_sum(train**2)
    grads = tape.gradient(loss, ours.trainable_weights)
    assert all(g is not None for g in grads)
    assert np.abs(np.asarray(train) - np.asarray(plain(x))).max() > 1e-3
    for path, value in values(ours).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(plain(x)), atol=1e-6)


def test_dropped_recurrent_kernel_is_a_scaled_copy():
    ours, _ = lstm_pair(weight_p=0.3)
    raw = ours.cell.recurrent_kernel.numpy()
    np.testing.assert_array_equal(np.asarray(ours.recurrent_kernel_for_call()), raw)
    dropped = np.asarray(ours.recurrent_kernel_for_call(training=True))
    zero = dropped == 0
    assert 0.2 < zero.mean() < 0.4
    np.testing.assert_allclose(dropped[~zero], raw[~zero] / 0.7, rtol=1e-6)


def test_weight_drop_loop_equals_keras_lstm_with_masks(monkeypatch):
    """The time loop is Keras' LSTM math: with the kernel left undropped, training gives
    ``keras.layers.LSTM``'s outputs, masks (zero outputs, carried states) included."""
    ours, plain = lstm_pair(weight_p=0.5)

    def undropped(training: bool = False):
        del training  # the kernel as in inference, also in training
        return keras.ops.copy(ours.cell.recurrent_kernel)

    monkeypatch.setattr(ours, "recurrent_kernel_for_call", undropped)
    x = normal((3, 9, EMB), seed=2)
    mask = np.arange(9)[None, :] < np.array([[9], [4], [6]])
    got = np.asarray(ours(x, mask=mask, training=True))
    want = np.asarray(plain(x, mask=mask))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not got[~mask].any()


def test_weight_drop_lstm_rejects_keras_dropouts():
    with pytest.raises(ValueError, match="recurrent_dropout"):
        uk.WeightDropLSTM(4, weight_p=0.2, recurrent_dropout=0.1)
    with pytest.raises(ValueError, match="dropout"):
        uk.WeightDropLSTM(4, dropout=0.1)


# ---------------------------------------------------------------------------------------------
# QRNN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["sequential", "log_depth", "scan", "associative"])
def test_forget_mult_matches_reference(impl):
    """Both algorithms, under their names and the former ones (``scan``, ``associative``)."""
    z = np.tanh(normal((3, 23, 7), seed=1))
    f = 1 / (1 + np.exp(-normal((3, 23, 7), seed=2)))
    want = forget_mult_reference(torch.from_numpy(z), torch.from_numpy(f)).numpy()
    got = np.asarray(uk.forget_mult(tf.constant(z), tf.constant(f), impl))
    assert np.abs(got - want).max() <= 1e-6


def test_forget_mult_sequential_with_unknown_lengths():
    fn = tf.function(
        lambda z, f: uk.forget_mult(z, f, "sequential"),
        input_signature=[tf.TensorSpec([None, None, 7])] * 2,
    )
    for length in (1, 5, 12):
        z, f = normal((2, length, 7), seed=length), np.full((2, length, 7), 0.5, "float32")
        want = forget_mult_reference(torch.from_numpy(z), torch.from_numpy(f))
        np.testing.assert_allclose(fn(z, f).numpy(), want.numpy(), atol=1e-6)


def test_forget_mult_names():
    """Former names are read as the algorithms they ran (saved configs hold them)."""
    assert uk.FORGET_MULT_IMPLS == ("sequential", "log_depth")
    assert uk.QRNNLayer(4, forget_mult_impl="scan").forget_mult_impl == "sequential"
    assert uk.QRNNLayer(4, forget_mult_impl="associative").forget_mult_impl == "log_depth"
    with pytest.raises(ValueError, match="unknown forget-mult implementation 'cumsum'"):
        uk.QRNNLayer(4, forget_mult_impl="cumsum")


def qrnn_pair(window: int, n_in: int = EMB, n_out: int = HIDDEN, **kwargs):
    """A torch QRNNLayer with random weights and the Keras layer holding them."""
    torch_layer = torch_qrnn.QRNNLayer(n_in, n_out, window=window)
    with torch.no_grad():
        for param in torch_layer.parameters():
            param.uniform_(-0.5, 0.5)
    layer = uk.QRNNLayer(n_out, window=window, name="qrnn_0", **kwargs)
    layer.build((None, None, n_in))
    assign(layer.kernel, torch_layer.linear.weight.detach().numpy().T)
    assign(layer.bias, torch_layer.linear.bias.detach().numpy())
    return torch_layer.eval(), layer


@pytest.mark.parametrize("impl", ["sequential", "log_depth"])
@pytest.mark.parametrize("window", [1, 2])
def test_qrnn_layer_matches_torch(window, impl):
    torch_layer, layer = qrnn_pair(window, forget_mult_impl=impl)
    assert uk.variable_paths(layer) == {
        "qrnn_0/kernel": (window * EMB, 3 * HIDDEN),
        "qrnn_0/bias": (3 * HIDDEN,),
    }
    x = normal((3, 17, EMB), seed=window)
    with torch.no_grad():
        want = torch_layer(torch.from_numpy(x))[0].numpy()
    assert np.abs(np.asarray(layer(x)) - want).max() <= 1e-5


@pytest.mark.parametrize("window", [1, 2])
def test_qrnn_padding_keeps_valid_outputs(window):
    _, layer = qrnn_pair(window)
    lengths = [11, 6, 3]
    x = normal((3, 11, EMB), seed=9)
    for post in (True, False):
        mask = np.zeros((3, 11), bool)
        for i, n in enumerate(lengths):
            if post:
                mask[i, :n] = True
            else:
                mask[i, 11 - n :] = True
        out = np.asarray(layer(x, mask=mask))
        for i in range(len(lengths)):
            alone = np.asarray(layer(x[i : i + 1][mask[i : i + 1]][None]))[0]
            np.testing.assert_allclose(out[i][mask[i]], alone, atol=1e-6)
        assert not out[~mask].any()


def test_qrnn_window_shift_starts_from_zeros():
    """Layer 0 sees [x_t, x_{t-1}] with x_{-1} = 0: the first output depends on x_0 only."""
    _, layer = qrnn_pair(2)
    x = normal((1, 4, EMB), seed=3)
    y = x.copy()
    y[:, 1:] = normal((1, 3, EMB), seed=4)
    np.testing.assert_array_equal(np.asarray(layer(x))[:, 0], np.asarray(layer(y))[:, 0])


@pytest.mark.parametrize("option", ["zoneout", "weight_p"])
def test_qrnn_regularisers_only_in_training(option):
    torch_layer, layer = qrnn_pair(2, **{option: 0.5, "seed": 0})
    x = normal((3, 17, EMB), seed=6)
    with torch.no_grad():
        want = torch_layer(torch.from_numpy(x))[0].numpy()
    before = values(layer)
    np.testing.assert_allclose(np.asarray(layer(x)), want, atol=1e-5)
    with tf.GradientTape() as tape:
        train = layer(tf.constant(x), training=True)
        loss = tf.reduce_sum(train**2)
    assert all(g is not None for g in tape.gradient(loss, layer.trainable_weights))
    assert np.abs(np.asarray(train) - want).max() > 1e-3
    for path, value in values(layer).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)
    np.testing.assert_allclose(np.asarray(layer(x)), want, atol=1e-5)


def test_qrnn_zoneout_is_fastai_mask_on_f():
    """Zoneout multiplies f by a mask in {0, 1/(1-p)}: with p close to 1 almost every f is 0,
    so h stays at its initial 0 and the output is almost all zeros."""
    _, layer = qrnn_pair(1, zoneout=0.95, seed=1)
    out = np.asarray(layer(normal((2, 8, EMB)), training=True))
    assert (out == 0).mean() > 0.5


# ---------------------------------------------------------------------------------------------
# LM heads
# ---------------------------------------------------------------------------------------------


def test_tied_head_uses_the_embedding_variable():
    embedding = uk.MaskedEmbedding(VOCAB, EMB, name="encoder_embedding")
    embedding.build()
    head = uk.TiedLMHead(embedding, output_p=0.5, name="lm_head")
    h = normal((2, 5, EMB))
    head(h)
    assign(head.bias, normal((VOCAB,), seed=1))
    assert [w.path for w in head.weights if w.path.startswith("lm_head")] == ["lm_head/bias"]
    want = h @ embedding.embeddings.numpy().T + head.bias.numpy()
    np.testing.assert_allclose(np.asarray(head(h)), want, atol=1e-5)
    assign(embedding.embeddings, normal((VOCAB, EMB), seed=2))  # a change in one is in the other
    want = h @ embedding.embeddings.numpy().T + head.bias.numpy()
    np.testing.assert_allclose(np.asarray(head(h)), want, atol=1e-5)
    assert not np.allclose(np.asarray(head(h, training=True)), want, atol=1e-3)


def test_untied_head():
    head = uk.LMHead(VOCAB, output_p=0.1, use_bias=False, name="lm_head")
    h = normal((2, 5, EMB))
    out = np.asarray(head(h))
    assert uk.variable_paths(head) == {"lm_head/kernel": (EMB, VOCAB)}
    np.testing.assert_allclose(out, h @ head.kernel.numpy(), atol=1e-5)


def test_tied_head_checks_the_hidden_size():
    embedding = uk.MaskedEmbedding(VOCAB, EMB)
    with pytest.raises(ValueError, match="hidden size"):
        uk.TiedLMHead(embedding)(normal((1, 2, EMB + 1)))


# ---------------------------------------------------------------------------------------------
# SPMNumericalizer
# ---------------------------------------------------------------------------------------------

EXTRA = ["", "Zürich — naïve café, 1998 and 日本語 ☃", "  spaced   out  "]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("keras_spm")
    write_demo_corpus(root / "demo.txt", max_bytes=150_000)
    return build_spm(SpmConfig(root / "demo.txt", 300, root / "m")).model_path


def sent200() -> list[str]:
    with open(SHARED_DATA / "sent200.tsv", encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]


def test_spm_numericalizer_matches_sentencepiece(spm_model):
    texts = sent200() + EXTRA
    want = sentencepiece.SentencePieceProcessor(model_file=str(spm_model)).encode(
        texts, add_bos=True, add_eos=True
    )
    layer = uk.SPMNumericalizer(spm_model, name="numericalizer")
    ids = layer(tf.constant(texts))
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.to_list() == want
    assert layer.vocab_size == 300
    assert all(row[0] == 2 and row[-1] == 3 for row in want)


def test_spm_numericalizer_fixed_length_pads_with_one(spm_model):
    texts = [*sent200()[:20], "a film .", ""]
    want = sentencepiece.SentencePieceProcessor(model_file=str(spm_model)).encode(
        texts, add_bos=True, add_eos=True
    )
    n = 12
    layer = uk.SPMNumericalizer(spm_model.read_bytes(), fixed_seq_len=n)
    dense = tf.function(layer)(tf.constant(texts)).numpy()
    assert dense.shape == (len(texts), n) and dense.dtype == np.int32
    assert any(len(ids) > n for ids in want) and any(len(ids) < n for ids in want)
    for row, ids in zip(dense, want, strict=True):
        expected = (ids + [PAD] * n)[:n]  # cut at n: BOS kept, EOS lost when truncated
        assert row.tolist() == expected


def test_spm_numericalizer_config_round_trip(spm_model):
    layer = uk.SPMNumericalizer(spm_model, add_bos=False, fixed_seq_len=8, name="numericalizer")
    config = json.loads(json.dumps(layer.get_config()))
    clone = uk.SPMNumericalizer.from_config(config)
    assert clone.get_config() == layer.get_config()
    texts = tf.constant(sent200()[:5])
    np.testing.assert_array_equal(clone(texts).numpy(), layer(texts).numpy())
    assert (layer(texts).numpy()[:, 0] != 2).all()  # no BOS
