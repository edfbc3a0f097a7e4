"""The torch-only QRNN: forget-mult paths, layer math, fastai 2.2.7 state-dict layout, dropouts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.helpers import REPO_ROOT
from tests.torch_models import awd_qrnn_lm_state_dict_shapes
from ulmfit_torch import forget_mult as dispatch
from ulmfit_torch.forget_mult import (
    forget_mult,
    forget_mult_cpu,
    forget_mult_reference,
    forget_mult_scan,
    forget_mult_triton,
    select_forget_mult,
)
from ulmfit_torch.qrnn import QRNN, QRNNLayer, awd_qrnn_layer
from ulmfit_torch.weight_dropout import WeightDropout

FAST_PATHS = [forget_mult_cpu, forget_mult_scan]
needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TRITON_CHECK = """
import torch
from ulmfit_torch.forget_mult import forget_mult_reference, forget_mult_triton
gen = torch.Generator().manual_seed(0)
for shape, dtype, tol in [((3, 9, 5), torch.float32, 1e-5), ((2, 4, 130), torch.float16, 3e-2)]:
    z, f, g = (torch.rand(shape, generator=gen) for _ in range(3))
    h0 = torch.rand(shape[0], shape[2], generator=gen)
    z_tm = z.transpose(0, 1).contiguous().transpose(0, 1)  # strided, as QRNNLayer passes them
    for h in (None, h0):
        args = [t.to(dtype).requires_grad_() for t in (z_tm.clone(), f.clone(), h) if t is not None]
        ref_args = [t.detach().double().requires_grad_() for t in args]
        out, ref = forget_mult_triton(*args), forget_mult_reference(*ref_args)
        out.backward(g.to(dtype)), ref.backward(g.double())
        assert out.dtype == dtype and args[0].grad.dtype == dtype
        for a, b in zip([out, *(t.grad for t in args)], [ref, *(t.grad for t in ref_args)]):
            assert (a.double() - b).abs().max() < tol, (shape, dtype, h is None)
print("ok")
"""

# fastai 2.2.7: SequentialRNN(AWD_QRNN(vocab_sz=10, emb_sz=6, n_hid=8, n_layers=3), LinearDecoder),
# written out by hand from its source (AWD_QRNN._one_rnn, QRNN, QRNNLayer, WeightDropout).
FASTAI_227_AWD_QRNN_KEYS = [
    ("0.encoder.weight", (10, 6)),
    ("0.encoder_dp.emb.weight", (10, 6)),
    ("0.rnns.0.layers.0.linear.weight_raw", (24, 12)),
    ("0.rnns.0.layers.0.linear.module.bias", (24,)),
    ("0.rnns.1.layers.0.linear.weight_raw", (24, 8)),
    ("0.rnns.1.layers.0.linear.module.bias", (24,)),
    ("0.rnns.2.layers.0.linear.weight_raw", (18, 8)),
    ("0.rnns.2.layers.0.linear.module.bias", (18,)),
    ("1.decoder.weight", (10, 6)),
    ("1.decoder.bias", (10,)),
]


def gates(shape, dtype=torch.float32, seed=0, spread=3.0):
    """z in (-1, 1), f in (0, 1); ``spread`` pushes f towards 0/1 so products underflow."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=gen, dtype=dtype).tanh()
    f = (spread * torch.randn(shape, generator=gen, dtype=dtype)).sigmoid()
    h0 = torch.randn(shape[0], shape[2], generator=gen, dtype=dtype)
    return z, f, h0


def loop_formula(layer: QRNNLayer, x: torch.Tensor, h: torch.Tensor | None = None, prev=None):
    """The layer written out step by step from fastai 2.2.7's definition (batch first, forward)."""
    weight = layer.linear.weight if isinstance(layer.linear, nn.Linear) else layer.linear.weight_raw
    bias = layer.linear.bias if isinstance(layer.linear, nn.Linear) else layer.linear.module.bias
    hidden = layer.hidden_size
    batch, seq_len, _ = x.shape
    h = torch.zeros(batch, hidden, dtype=x.dtype) if h is None else h
    x_prev = torch.zeros_like(x[:, 0]) if prev is None else prev
    outs = []
    for t in range(seq_len):
        source = x[:, t] if layer.window == 1 else torch.cat([x[:, t], x_prev], dim=1)
        y = source @ weight.T + bias
        z = torch.tanh(y[:, :hidden])
        f = torch.sigmoid(y[:, hidden : 2 * hidden])
        h = f * z + (1 - f) * h
        outs.append(torch.sigmoid(y[:, 2 * hidden :]) * h if layer.output_gate else h)
        x_prev = x[:, t]
    return torch.stack(outs, dim=1), h


# --- forget-mult -----------------------------------------------------------------------------


@pytest.mark.parametrize("fn", FAST_PATHS, ids=lambda fn: fn.__name__)
@pytest.mark.parametrize("shape", [(3, 1, 5), (2, 7, 4), (5, 33, 3), (64, 70, 9), (2, 500, 6)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_fast_forget_mult_equals_reference(fn, shape, with_h0):
    z, f, h0 = gates(shape)
    h0 = h0 if with_h0 else None
    torch.testing.assert_close(fn(z, f, h0), forget_mult_reference(z, f, h0), atol=1e-6, rtol=0)


def test_long_sequences_do_not_underflow():
    # spread=30 pushes f to 0 or 1: some products of (1 - f) over 500 steps underflow to 0.
    z, f, h0 = gates((2, 500, 4), spread=30.0)
    assert (1 - f).prod(dim=1).min() == 0
    for fn in FAST_PATHS:
        out = fn(z, f, h0)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, forget_mult_reference(z, f, h0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fn", [*FAST_PATHS, forget_mult_reference], ids=lambda fn: fn.__name__)
@pytest.mark.parametrize("shape", [(2, 1, 3), (3, 6, 2), (2, 41, 2)])
def test_forget_mult_gradcheck(fn, shape):
    z, f, h0 = (t.requires_grad_() for t in gates(shape, dtype=torch.float64))
    assert torch.autograd.gradcheck(fn, (z, f, h0))
    assert torch.autograd.gradcheck(fn, (z, f, None))


def test_fast_backward_handles_strided_and_expanded_gradients():
    z, f, h0 = (t.requires_grad_() for t in gates((4, 30, 5)))
    # Time-major storage seen batch first (what a transposed caller passes), expanded grad from sum.
    z_tm = z.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    forget_mult_cpu(z_tm, f, h0).sum().backward()
    grads = [z_tm.grad, f.grad, h0.grad]
    for t in (f, h0):
        t.grad = None
    forget_mult_reference(z, f, h0).sum().backward()
    for got, expected in zip(grads, [z.grad, f.grad, h0.grad], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_low_precision_is_computed_in_float32():
    z, f, h0 = gates((2, 50, 8))
    out = forget_mult(z.bfloat16(), f.bfloat16(), h0.bfloat16())
    assert out.dtype == torch.bfloat16
    rounded = [t.bfloat16().float() for t in (z, f, h0)]
    expected = forget_mult_reference(*rounded).bfloat16()
    torch.testing.assert_close(out.float(), expected.float(), atol=1e-2, rtol=0)


def test_dispatch(monkeypatch):
    assert select_forget_mult("cpu") is forget_mult_cpu
    assert select_forget_mult(torch.device("cpu")) is forget_mult_cpu
    # Without Triton, CUDA tensors go to the plain-torch scan; nothing is run to decide that.
    monkeypatch.setattr(dispatch, "_triton_importable", lambda: False)
    monkeypatch.setattr(dispatch, "_triton_checked", {})
    assert select_forget_mult(torch.device("cuda", 0)) is forget_mult_scan
    # A Triton that fails its first-use self-check is not used either.
    monkeypatch.setattr(dispatch, "_triton_checked", {})
    monkeypatch.setattr(dispatch, "_triton_importable", lambda: True)
    monkeypatch.setattr(dispatch, "_triton_self_check", lambda _device: False)
    assert select_forget_mult(torch.device("cuda", 0)) is forget_mult_scan


@needs_triton
def test_triton_kernels_in_interpreter():
    """The CUDA kernels, run on CPU by Triton's interpreter: same values and gradients."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", TRITON_CHECK], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@needs_cuda
def test_cuda_forget_mult_equals_reference():
    z, f, h0 = (t.cuda().requires_grad_() for t in gates((4, 50, 33)))
    fast = select_forget_mult(z.device)
    if importlib.util.find_spec("triton") is not None:
        assert fast is forget_mult_triton
    out = forget_mult(z, f, h0)
    grads = torch.autograd.grad(out.sum(), (z, f, h0))
    ref = forget_mult_reference(z, f, h0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    for got, expected in zip(grads, torch.autograd.grad(ref.sum(), (z, f, h0)), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    layer = QRNNLayer(5, 33, window=2).cuda().half()
    out, _ = layer(torch.randn(2, 7, 5, device="cuda", dtype=torch.half))
    assert out.dtype == torch.half and torch.isfinite(out).all()


def test_shape_errors_are_clear():
    z, f, h0 = gates((2, 3, 4))
    with pytest.raises(ValueError, match="same"):
        forget_mult(z, f[:, :2])
    with pytest.raises(ValueError, match="h0"):
        forget_mult(z, f, h0[:, :3])


# --- layers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("output_gate", [True, False])
def test_layer_equals_step_by_step_formula(window, output_gate):
    torch.manual_seed(0)
    layer = QRNNLayer(5, 4, window=window, output_gate=output_gate).eval()
    x, h = torch.randn(3, 9, 5), torch.randn(3, 4)
    for hid in (None, h):
        out, last = layer(x, hid)
        expected, expected_last = loop_formula(layer, x, hid)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(last, expected_last, atol=1e-6, rtol=0)


def test_window_2_concatenates_current_then_previous_input():
    layer = QRNNLayer(2, 1, window=2, output_gate=False)
    with torch.no_grad():
        layer.linear.weight.zero_()
        layer.linear.weight[0, 2] = 1.0  # z reads only feature 0 of x_{t-1}
        layer.linear.bias.copy_(torch.tensor([0.0, 100.0]))  # f = 1: h_t = tanh(z_t)
    x = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]])
    out, _ = layer(x)
    torch.testing.assert_close(out[0, :, 0], torch.tanh(torch.tensor([0.0, 1.0, 2.0])))


def test_save_prev_x_continues_the_sequence_and_reset_forgets():
    torch.manual_seed(0)
    layer = QRNNLayer(5, 4, save_prev_x=True, window=2).eval()
    x = torch.randn(2, 10, 5)
    whole, whole_last = layer(x)
    layer.reset()
    first, h = layer(x[:, :6])
    second, last = layer(x[:, 6:], h)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(last, whole_last, atol=1e-6, rtol=0)
    # Without reset the first step sees the saved x; after reset it sees zeros again.
    continued, _ = layer(x[:, 6:])
    expected_continued, _ = loop_formula(layer, x[:, 6:], prev=x[:, -1])
    torch.testing.assert_close(continued, expected_continued, atol=1e-6, rtol=0)
    layer.reset()
    restarted, _ = layer(x[:, 6:])
    torch.testing.assert_close(restarted, loop_formula(layer, x[:, 6:])[0], atol=1e-6, rtol=0)


def test_saved_input_follows_batch_size_changes():
    torch.manual_seed(0)
    layer = QRNNLayer(3, 2, save_prev_x=True, window=2).eval()
    x = torch.randn(4, 5, 3)
    layer(x)
    smaller, _ = layer(x[:2])  # fastai's last batch: the saved step is cut to the batch
    torch.testing.assert_close(smaller, loop_formula(layer, x[:2], prev=x[:2, -1])[0])
    layer(x[:2])
    larger, _ = layer(x)  # and padded with zeros when the batch grows again
    prev = torch.cat([x[:2, -1], torch.zeros(2, 3)])
    torch.testing.assert_close(larger, loop_formula(layer, x, prev=prev)[0])


def test_time_first_and_backward_layers():
    torch.manual_seed(0)
    layer = QRNNLayer(3, 4, window=2).eval()
    x = torch.randn(2, 6, 3)
    time_first = QRNNLayer(3, 4, window=2, batch_first=False).eval()
    time_first.load_state_dict(layer.state_dict())
    out_tf, last_tf = time_first(x.transpose(0, 1))
    out, last = layer(x)
    torch.testing.assert_close(out_tf.transpose(0, 1), out)
    torch.testing.assert_close(last_tf, last)
    # A backward layer is the forward layer on the reversed sequence (window 2 sees x_{t+1}).
    reverse = QRNNLayer(3, 4, window=2, backward=True).eval()
    reverse.load_state_dict(layer.state_dict())
    out_rev, first = reverse(x)
    torch.testing.assert_close(out_rev, out_forward_on(layer, x.flip(1)).flip(1))
    torch.testing.assert_close(first, out_forward_on(layer, x.flip(1), last=True))


def out_forward_on(layer: QRNNLayer, x: torch.Tensor, last: bool = False) -> torch.Tensor:
    out, h = layer(x)
    return h if last else out


def test_qrnn_stack_and_hidden_passing():
    torch.manual_seed(0)
    rnn = QRNN(5, 4, n_layers=3).eval()
    assert [layer.window for layer in rnn.layers] == [2, 1, 1]
    x, hid = torch.randn(2, 7, 5), torch.randn(3, 2, 4)
    out, new_hid = rnn(x, hid)
    assert out.shape == (2, 7, 4) and new_hid.shape == (3, 2, 4)
    expected = x
    for i, layer in enumerate(rnn.layers):
        expected, h = loop_formula(layer, expected, hid[i])
        torch.testing.assert_close(new_hid[i], h, atol=1e-6, rtol=0)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    bidir = QRNN(5, 4, n_layers=2, bidirectional=True).eval()
    out, new_hid = bidir(x)
    assert out.shape == (2, 7, 8) and new_hid.shape == (4, 2, 4)
    with pytest.raises(ValueError, match="bidirectional"):
        QRNN(5, 4, save_prev_x=True, bidirectional=True)


def test_zoneout_only_in_training():
    torch.manual_seed(0)
    layer = QRNNLayer(3, 4, zoneout=0.5)
    x = torch.randn(2, 6, 3)
    eval_out, _ = layer.eval()(x)
    torch.testing.assert_close(eval_out, loop_formula(layer, x)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(layer(x)[0], eval_out, atol=0, rtol=0)
    layer.train()
    torch.manual_seed(1)
    train_out, _ = layer(x)
    # Same mask as fastai's dropout_mask(f, f.size(), p): bernoulli(1-p) / (1-p), drawn first.
    torch.manual_seed(1)
    mask = torch.empty(2, 6, 4).bernoulli_(0.5).div_(0.5)
    y = layer.linear(x)
    z, f, o = y.chunk(3, dim=2)
    expected = torch.sigmoid(o) * forget_mult_reference(z.tanh(), f.sigmoid() * mask)
    torch.testing.assert_close(train_out, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(train_out, eval_out)


# --- AWD-QRNN state dict and weight dropout --------------------------------------------------


class _EmbeddingDropoutStub(nn.Module):
    def __init__(self, emb: nn.Embedding) -> None:
        super().__init__()
        self.emb = emb


def tiny_awd_qrnn_lm(vocab_sz=10, emb_sz=6, n_hid=8, n_layers=3, weight_p=0.5) -> nn.Sequential:
    """The module tree of fastai 2.2.7's AWD-QRNN LM, built from torch modules and our helper."""
    encoder = nn.Module()
    encoder.encoder = nn.Embedding(vocab_sz, emb_sz, padding_idx=1)
    encoder.encoder_dp = _EmbeddingDropoutStub(encoder.encoder)
    sizes = [emb_sz] + [n_hid] * (n_layers - 1) + [emb_sz]
    encoder.rnns = nn.ModuleList(
        awd_qrnn_layer(sizes[i], sizes[i + 1], i, weight_p) for i in range(n_layers)
    )
    decoder = nn.Module()
    decoder.decoder = nn.Linear(emb_sz, vocab_sz)
    decoder.decoder.weight = encoder.encoder.weight
    return nn.Sequential(encoder, decoder)


def test_state_dict_matches_fastai_227():
    state = tiny_awd_qrnn_lm().state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == FASTAI_227_AWD_QRNN_KEYS
    assert list(awd_qrnn_lm_state_dict_shapes(10, 6, 8, 3).items()) == FASTAI_227_AWD_QRNN_KEYS


def test_expected_shapes_with_bidirectional_layers():
    shapes = awd_qrnn_lm_state_dict_shapes(10, 6, 8, 2, bidir=True, out_bias=False)
    assert shapes["0.rnns.0.layers.0.linear.weight_raw"] == (12, 12)
    assert shapes["0.rnns.0.layers_bwd.0.linear.weight"] == (12, 12)
    assert shapes["0.rnns.1.layers_bwd.0.linear.bias"] == (9,)
    assert "1.decoder.bias" not in shapes
    rnn = awd_qrnn_layer(6, 4, 0, 0.2, bidir=True)
    assert {k: tuple(v.shape) for k, v in rnn.state_dict().items()} == {
        k.removeprefix("0.rnns.0."): v for k, v in shapes.items() if k.startswith("0.rnns.0.")
    }


def test_state_dict_with_dropped_module_weight_loads():
    model = tiny_awd_qrnn_lm()
    state = {k: torch.randn(shape) for k, shape in FASTAI_227_AWD_QRNN_KEYS}
    state["1.decoder.weight"] = state["0.encoder.weight"] = state["0.encoder_dp.emb.weight"]
    for layer in range(3):
        raw = state[f"0.rnns.{layer}.layers.0.linear.weight_raw"]
        state[f"0.rnns.{layer}.layers.0.linear.module.weight"] = torch.zeros_like(raw)
    model.load_state_dict(state)  # strict
    loaded = model[0].rnns[1].layers[0].linear
    torch.testing.assert_close(loaded.weight_raw, state["0.rnns.1.layers.0.linear.weight_raw"])
    assert [k for k, _ in FASTAI_227_AWD_QRNN_KEYS] == list(model.state_dict())


def test_weight_dropout_never_touches_the_trained_weight():
    torch.manual_seed(0)
    wrapped = WeightDropout(nn.Linear(20, 30), weight_p=0.5)
    raw = wrapped.weight_raw
    before = raw.detach().clone()
    x = torch.randn(8, 20)
    wrapped.train()
    out = wrapped(x)
    out.sum().backward()
    torch.testing.assert_close(raw.detach(), before, atol=0, rtol=0)
    assert raw.grad is not None and (raw.grad == 0).any()  # dropped weights get no gradient
    # Training: a dropped (and rescaled) copy is used, a new one each call.
    dense = x @ raw.detach().T + wrapped.module.bias.detach()
    assert not torch.allclose(out, dense)
    assert not torch.allclose(wrapped(x), out)
    # Eval: the raw weight itself, deterministic, gradients still flow to it.
    wrapped.eval()
    raw.grad = None
    eval_out = wrapped(x)
    torch.testing.assert_close(eval_out, dense)
    torch.testing.assert_close(wrapped(x), eval_out, atol=0, rtol=0)
    eval_out.sum().backward()
    assert raw.grad is not None
    # Only an optimizer step changes it; the wrapped module sees the new value next call.
    torch.optim.SGD(wrapped.parameters(), lr=1.0).step()
    assert not torch.equal(raw.detach(), before)
    torch.testing.assert_close(wrapped(x), x @ raw.detach().T + wrapped.module.bias.detach())
    assert list(wrapped.state_dict()) == ["weight_raw", "module.bias"]
    assert [name for name, _ in wrapped.named_parameters()] == ["weight_raw", "module.bias"]


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: nn.Linear(4, 6), "weight"),
        (lambda: nn.LSTM(4, 6, batch_first=True), "weight_hh_l0"),
    ],
    ids=["linear", "lstm"],
)
def test_weight_dropout_matches_fastai_weight_dropout(make, name):
    """fastai 2.8's WeightDropout is 2.2.7's, line for line: same keys, same masks per seed."""
    from fastai.text.models.awdlstm import WeightDropout as FastaiWeightDropout

    ours = WeightDropout(make(), 0.3, layer_names=name)
    theirs = FastaiWeightDropout(make(), 0.3, layer_names=name)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 4)
    for training in (True, False):
        ours.train(training), theirs.train(training)
        torch.manual_seed(3)
        out = ours(x)
        torch.manual_seed(3)
        expected = theirs(x)
        if isinstance(out, tuple):
            out, expected = out[0], expected[0]
        torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_weight_dropout_with_zero_probability_registers_nothing():
    wrapped = WeightDropout(nn.Linear(3, 2), weight_p=0.0).train()
    wrapped(torch.randn(4, 3))
    assert list(wrapped.state_dict()) == ["weight_raw", "module.bias"]


def test_awd_qrnn_layer_trains():
    torch.manual_seed(0)
    rnn = awd_qrnn_layer(6, 8, 0, weight_p=0.3)
    optimizer = torch.optim.SGD(rnn.parameters(), lr=0.1)
    x = torch.randn(4, 5, 6)
    for _ in range(2):
        out, hid = rnn(x)
        out.pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert hid.shape == (1, 4, 8)
    rnn.reset()
    assert rnn.layers[0].prev_x is None


def test_helper_plugs_into_fastai_28_awd_lstm():
    """fastai 2.8's AWD_LSTM subclassed with this helper, as 2.2.7's AWD_QRNN did, has its keys."""
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import LinearDecoder, SequentialRNN

    class AwdQrnn(AWD_LSTM):
        def _one_rnn(self, n_in, n_out, bidir, weight_p, l):  # noqa: E741 (fastai's signature)
            return awd_qrnn_layer(n_in, n_out, l, weight_p, bidir=bidir)

        def _one_hidden(self, l):  # noqa: E741
            nh = (self.n_hid if l != self.n_layers - 1 else self.emb_sz) // self.n_dir
            return next(self.parameters()).new_zeros(self.n_dir, self.bs, nh)

        def _change_one_hidden(self, l, bs):  # noqa: E741
            hidden = self.hidden[l]
            if self.bs < bs:
                return torch.cat(
                    [hidden, hidden.new_zeros(self.n_dir, bs - self.bs, hidden.shape[2])], 1
                )
            return hidden[:, :bs]

    encoder = AwdQrnn(10, 6, 8, 3)
    model = SequentialRNN(encoder, LinearDecoder(10, 6, tie_encoder=encoder.encoder))
    state = model.state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == FASTAI_227_AWD_QRNN_KEYS
    tokens = torch.randint(0, 10, (3, 7))
    model.eval()
    model.reset()
    logits = model(tokens)[0]
    assert logits.shape == (3, 7, 10) and torch.isfinite(logits).all()


def test_module_never_imports_fastai():
    code = (
        "import sys, ulmfit_torch.qrnn, ulmfit_torch.checkpoint_io\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "assert not roots & {'fastai', 'fastcore', 'triton', 'tensorflow', 'keras'}, roots"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
