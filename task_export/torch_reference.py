"""The PyTorch reference of a fine-tuned Keras task model: what a fastai user would deploy.

:meth:`TorchTaskModel.from_keras` rebuilds a trained ``ulmfit_keras`` task model (the
classifier with the concat-pool head, the Branching Attention classifier, the regressor) out of
plain torch modules and copies its weights into them:

* the encoder: ``nn.Embedding``, then ``nn.LSTM`` (AWD-LSTM) or
  :class:`ulmfit_torch.qrnn.QRNNLayer` (QRNN) per recurrent layer;
* the concat-pool head: ``[last valid, max, mean]`` over the valid positions (fastai's
  ``masked_concat_pool``, :class:`~ulmfit_keras.MaskedConcatPool`) -> ``BatchNorm1d`` (eval,
  Keras' moving statistics) -> ``Linear`` + ReLU -> ``BatchNorm1d`` -> ``Linear`` (+ softmax);
* the attention head: pointwise ``Linear`` branches, a softmax over the valid positions, their
  weighted sum -> ``Linear`` + softmax (:class:`~ulmfit_keras.BranchingAttentionClassifier`).

The table :data:`RULES` (Keras variable -> torch key -> transform) ports the weights one named
tensor at a time, strictly: a shape mismatch raises, every Keras variable is read once, every
torch tensor written once (``num_batches_tracked`` is ignored). The Keras LSTM's gates
``i, f, c, o`` are PyTorch's ``i, f, g, o``; its one bias (``b_ih + b_hh``) goes into ``bias_ih``.

:meth:`TorchTaskModel.forward` takes post-padded ids (``pad_id``, 1, after the tokens) and runs
in eval mode under ``torch.inference_mode``. Padding never changes a result: the LSTMs run on a
packed sequence (each row at its own length), the QRNN is causal, and every layer's output is
zeroed at padding as in Keras. Outputs are named as the stage-13 export's
(:mod:`task_export.layout`): ``probabilities`` (``logits`` for a head without softmax) and, for
the attention head, ``token_weights``; the regressor's ``score`` is in label units (the
normalizer of ``task.json`` undone). :func:`check_parity` compares it with the Keras model.
"""

# The table below is column-aligned on purpose (one row per mapping, read across).
# ruff: noqa: E501

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ulmfit_core.ids import PAD_ID
from ulmfit_torch.qrnn import QRNNLayer

logger = logging.getLogger(__name__)

__all__ = ["RULES", "TorchTaskModel", "check_parity", "masked_concat_pool", "port_keras_weights"]

# ---------------------------------------------------------------------------------------------
# The table: Keras variable -> torch key -> transform, repeated `count` times ({i} = 0..count-1)
# ---------------------------------------------------------------------------------------------
# count: "once"; "layers" (recurrent layers); "batch_norms" (2, or 0 without BatchNorm);
# "attention" / "aggregation" (the Dense layers of each attention-head branch).
# A Keras variable of None: the torch tensor is set to zeros (the LSTM's second bias).

RULES: dict[str, tuple[tuple[str | None, str, str, str], ...]] = {
    "awd-lstm": (
        # Keras variable                         torch key                          transform    count
        ("encoder_embedding/embeddings",         "encoder.embedding.weight",        "identity",  "once"),
        ("lstm_{i}/lstm_cell/kernel",            "encoder.rnns.{i}.weight_ih_l0",   "transpose", "layers"),
        ("lstm_{i}/lstm_cell/recurrent_kernel",  "encoder.rnns.{i}.weight_hh_l0",   "transpose", "layers"),
        ("lstm_{i}/lstm_cell/bias",              "encoder.rnns.{i}.bias_ih_l0",     "identity",  "layers"),
        (None,                                   "encoder.rnns.{i}.bias_hh_l0",     "zeros",     "layers"),
    ),
    "qrnn": (
        ("encoder_embedding/embeddings",         "encoder.embedding.weight",        "identity",  "once"),
        ("qrnn_{i}/kernel",                      "encoder.rnns.{i}.linear.weight",  "transpose", "layers"),
        ("qrnn_{i}/bias",                        "encoder.rnns.{i}.linear.bias",    "identity",  "layers"),
    ),
    "pooled": (
        ("head_batch_norm_{i}/gamma",            "head.batch_norms.{i}.weight",       "identity",  "batch_norms"),
        ("head_batch_norm_{i}/beta",             "head.batch_norms.{i}.bias",         "identity",  "batch_norms"),
        ("head_batch_norm_{i}/moving_mean",      "head.batch_norms.{i}.running_mean", "identity",  "batch_norms"),
        ("head_batch_norm_{i}/moving_variance",  "head.batch_norms.{i}.running_var",  "identity",  "batch_norms"),
        ("head_dense/kernel",                    "head.dense.weight",                 "transpose", "once"),
        ("head_dense/bias",                      "head.dense.bias",                   "identity",  "once"),
        ("predictions/kernel",                   "head.predictions.weight",           "transpose", "once"),
        ("predictions/bias",                     "head.predictions.bias",             "identity",  "once"),
    ),
    "attention": (
        ("attention_dense_{i}/kernel",           "head.attention.{i}.weight",         "transpose", "attention"),
        ("attention_dense_{i}/bias",             "head.attention.{i}.bias",           "identity",  "attention"),
        ("aggregation_dense_{i}/kernel",         "head.aggregation.{i}.weight",       "transpose", "aggregation"),
        ("aggregation_dense_{i}/bias",           "head.aggregation.{i}.bias",         "identity",  "aggregation"),
        ("predictions/kernel",                   "head.predictions.weight",           "transpose", "once"),
        ("predictions/bias",                     "head.predictions.bias",             "identity",  "once"),
    ),
}  # fmt: skip

IGNORED_SUFFIXES = ("num_batches_tracked",)  # BatchNorm's step counter, unused in eval

TRANSFORMS: dict[str, Callable[[np.ndarray | None, tuple[int, ...]], np.ndarray]] = {
    "identity": lambda value, _shape: value,
    # Keras kernels are (in, out); torch weights (out, in).
    "transpose": lambda value, _shape: np.ascontiguousarray(value.T),
    "zeros": lambda _value, shape: np.zeros(shape, dtype=np.float32),
}

_HEAD_LISTS = ("batch_norms", "attention", "aggregation")  # the heads' nn.ModuleLists
# The attention head's hidden activations (Keras names).
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu}


# ---------------------------------------------------------------------------------------------
# The modules
# ---------------------------------------------------------------------------------------------


def masked_concat_pool(x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
    """``(batch, seq, d)`` -> ``(batch, 3d)``: ``[last valid, max, mean]`` over valid positions
    (post-padded rows; a row without a valid position pools to zeros), as Keras computes it."""
    has_any = (lengths > 0).to(x.dtype)[:, None]
    rows = torch.arange(x.shape[0], device=x.device)
    last = x[rows, (lengths - 1).clamp(min=0)] * has_any
    lowest = torch.finfo(x.dtype).min
    max_pool = x.masked_fill(~mask[..., None], lowest).amax(dim=1) * has_any
    mean_pool = (x * mask[..., None]).sum(dim=1) / lengths.clamp(min=1).to(x.dtype)[:, None]
    return torch.cat([last, max_pool, mean_pool], dim=-1)


class TorchEncoder(nn.Module):
    """Embedding -> recurrent layers (``nn.LSTM`` or :class:`QRNNLayer`), zero at padding."""

    def __init__(
        self,
        arch: str,
        vocab_size: int,
        emb_size: int,
        layer_sizes: list[int],
        windows: list[int] | None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.embedding = nn.Embedding(vocab_size, emb_size)
        rnns: list[nn.Module] = []
        for i, n_out in enumerate(layer_sizes):
            n_in = emb_size if i == 0 else layer_sizes[i - 1]
            if arch == "awd-lstm":
                rnns.append(nn.LSTM(n_in, n_out, 1, batch_first=True))
            else:
                rnns.append(QRNNLayer(n_in, n_out, window=windows[i], batch_first=True))
        self.rnns = nn.ModuleList(rnns)

    def forward(self, ids: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        valid = mask[..., None].to(torch.float32)
        packed = bool((lengths < ids.shape[1]).any())  # no padding: nothing to pack
        x = self.embedding(ids)
        for rnn in self.rnns:
            if self.arch == "awd-lstm" and packed:
                # Each row runs at its own length; a row without tokens runs one (zeroed) step.
                sequence = pack_padded_sequence(
                    x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
                )
                x, _ = pad_packed_sequence(
                    rnn(sequence)[0], batch_first=True, total_length=ids.shape[1]
                )
            else:
                x, _ = rnn(x)  # causal QRNN (or no padding): padding never reaches a valid step
            x = x * valid
        return x


class PooledHead(nn.Module):
    """fastai's classifier head in eval: concat pool -> [BN] -> Linear+ReLU -> [BN] -> Linear."""

    def __init__(
        self, features: int, hidden_dim: int, n_out: int, batch_norm_eps: float | None
    ) -> None:
        super().__init__()
        widths = (3 * features, hidden_dim) if batch_norm_eps is not None else ()
        self.batch_norms = nn.ModuleList(nn.BatchNorm1d(w, eps=batch_norm_eps) for w in widths)
        self.dense = nn.Linear(3 * features, hidden_dim)
        self.predictions = nn.Linear(hidden_dim, n_out)

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> dict[str, Tensor]:
        h = masked_concat_pool(x, lengths, mask)
        if self.batch_norms:
            h = self.batch_norms[0](h)
        h = F.relu(self.dense(h))
        if self.batch_norms:
            h = self.batch_norms[1](h)
        return {"predictions": self.predictions(h)}


class AttentionHead(nn.Module):
    """The Branching Attention head: scores and features per position, softmax over the valid
    positions, the weighted sum of the features -> Linear."""

    def __init__(
        self,
        features: int,
        attention_units: list[int],
        aggregation_units: list[int],
        n_out: int,
        hidden_activation: str,
    ) -> None:
        super().__init__()
        if hidden_activation not in ACTIVATIONS:
            raise ValueError(f"activation {hidden_activation!r}: one of {sorted(ACTIVATIONS)}")
        self.hidden_activation = ACTIVATIONS[hidden_activation]
        self.attention = self._mlp(features, [*attention_units, 1])
        self.aggregation = self._mlp(features, aggregation_units)
        self.predictions = nn.Linear(aggregation_units[-1], n_out)

    @staticmethod
    def _mlp(features: int, widths: list[int]) -> nn.ModuleList:
        inputs = [features, *widths[:-1]]
        return nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip(inputs, widths, strict=True)
        )

    def _pointwise(self, layers: nn.ModuleList, x: Tensor) -> Tensor:
        for i, layer in enumerate(layers):
            x = layer(x)
            if i < len(layers) - 1:
                x = self.hidden_activation(x)
        return x

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> dict[str, Tensor]:
        del lengths  # the mask says it all
        scores = self._pointwise(self.attention, x)[..., 0]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * mask.to(scores.dtype)
        features = self._pointwise(self.aggregation, x)
        pooled = (weights[..., None] * features).sum(dim=1)
        return {"predictions": self.predictions(pooled), "token_weights": weights}


class TorchTaskModel(nn.Module):
    """A fine-tuned task model in torch (see the module docstring); build it with
    :meth:`from_keras`.

    Args:
        encoder: the :class:`TorchEncoder`.
        head: a :class:`PooledHead` or :class:`AttentionHead`.
        kind: ``"classifier"`` or ``"regressor"``.
        output_activation: of the classifier's output (``"softmax"`` or ``None``).
        normalizer: ``(mean, std)`` the regressor's score is scaled back with.
        pad_id: the padding id (post-padding).
    """

    def __init__(
        self,
        encoder: TorchEncoder,
        head: nn.Module,
        kind: str,
        output_activation: str | None = "softmax",
        normalizer: tuple[float, float] = (0.0, 1.0),
        pad_id: int = PAD_ID,
    ) -> None:
        super().__init__()
        if output_activation not in ("softmax", None, "linear"):
            raise ValueError(f"output activation {output_activation!r}: softmax or none")
        self.encoder, self.head, self.kind = encoder, head, kind
        self.softmax = output_activation == "softmax"
        self.normalizer, self.pad_id = normalizer, pad_id
        self.eval()

    @classmethod
    def from_keras(cls, model: Any, task: Mapping[str, Any] | None = None) -> TorchTaskModel:
        """The torch model of a Keras ``ULMFiTClassifier``, ``BranchingAttentionClassifier`` or
        ``ULMFiTRegressor`` over a ``ULMFiTEncoder``, with its weights.

        Args:
            model: the Keras task model (``load_task_model(dir, task)``).
            task: its ``task.json`` (the regressor's ``normalizer``; the kind is checked).

        Raises:
            ValueError: a model this module does not rebuild (a ``from_hub`` backbone, another
                head, an activation without counterpart), or a task that disagrees.
            RuntimeError: the table and the models disagree (a shape, a leftover variable).
        """
        import ulmfit_keras as uk  # TensorFlow only where a Keras model is read

        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, uk.ULMFiTEncoder):
            raise ValueError(
                f"{type(backbone).__name__} backbone: only a ULMFiTEncoder (--model-type "
                "from_cp) is rebuilt in torch"
            )
        encoder = _encoder_of(backbone)
        normalizer = (0.0, 1.0)
        if isinstance(model, uk.BranchingAttentionClassifier):
            kind, rules, activation = "classifier", "attention", model.activation
            head: nn.Module = AttentionHead(
                backbone.emb_size,
                list(model.attention_units),
                list(model.aggregation_units),
                model.num_classes,
                model.hidden_activation,
            )
        elif isinstance(model, uk.ULMFiTClassifier | uk.ULMFiTRegressor):
            regressor = isinstance(model, uk.ULMFiTRegressor)
            kind, rules = ("regressor" if regressor else "classifier"), "pooled"
            activation = None if regressor else model.activation
            head = PooledHead(
                backbone.emb_size,
                model.hidden_dim,
                1 if regressor else model.num_classes,
                _batch_norm_eps(model) if model.use_batch_norm else None,
            )
            if regressor and task and task.get("normalizer"):
                normalizer = (float(task["normalizer"]["mean"]), float(task["normalizer"]["std"]))
        else:
            raise ValueError(f"{type(model).__name__}: no torch reference for this task model")
        if task is not None and task.get("task", kind) != kind:
            raise ValueError(f"task.json describes a {task.get('task')}, the model is a {kind}")
        reference = cls(encoder, head, kind, activation, normalizer, backbone.pad_id)
        counts = {"once": 1, "layers": backbone.n_layers}
        counts |= {name: len(getattr(head, name, ())) for name in _HEAD_LISTS}
        port_keras_weights(model, reference, (*RULES[backbone.arch], *RULES[rules]), counts)
        return reference.eval()

    @torch.inference_mode()
    def forward(self, ids: Tensor) -> dict[str, Tensor]:
        """Post-padded ids ``(batch, seq)`` -> the outputs (module docstring)."""
        ids = ids.long()
        mask = ids != self.pad_id
        lengths = mask.sum(dim=1)
        outputs = self.head(self.encoder(ids, lengths, mask), lengths, mask)
        predictions = outputs.pop("predictions")
        if self.kind == "regressor":
            mean, std = self.normalizer
            return {"score": predictions[:, 0] * std + mean}
        if self.softmax:
            return {"probabilities": torch.softmax(predictions, dim=-1), **outputs}
        return {"logits": predictions, **outputs}

    def predict(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`forward` on numpy ids, numpy outputs."""
        result = self(torch.from_numpy(np.asarray(ids, dtype=np.int64)))
        return {name: value.numpy() for name, value in result.items()}


def _encoder_of(backbone: Any) -> TorchEncoder:
    layers = backbone.recurrent_layers
    if backbone.arch == "awd-lstm":
        for layer in layers:
            config = layer.get_config()
            if (config["activation"], config["recurrent_activation"]) != ("tanh", "sigmoid"):
                raise ValueError(f"{layer.name}: nn.LSTM needs tanh/sigmoid activations")
    elif not all(layer.output_gate for layer in layers):
        raise ValueError("QRNN layers without output gate are not rebuilt in torch")
    windows = None if backbone.arch == "awd-lstm" else [layer.window for layer in layers]
    return TorchEncoder(
        backbone.arch,
        backbone.vocab_size,
        backbone.emb_size,
        [layer.units for layer in layers],
        windows,
    )


def _batch_norm_eps(model: Any) -> float:
    eps = {model.get_layer(f"head_batch_norm_{i}").epsilon for i in (0, 1)}
    if len(eps) != 1:
        raise ValueError(f"the head's BatchNorm layers have different epsilons: {sorted(eps)}")
    return float(eps.pop())


def port_keras_weights(
    model: Any,
    reference: nn.Module,
    rules: tuple[tuple[str | None, str, str, str], ...],
    counts: Mapping[str, int],
) -> None:
    """Copy every Keras variable into its torch tensor through ``rules`` (expanded by
    ``counts``), strictly: see the module docstring."""
    variables = {variable.path: variable for variable in model.weights}
    if len(variables) != len(model.weights):
        raise RuntimeError("two Keras variables share a path")
    state = reference.state_dict()
    read, written = set(), set()
    for source, target, transform, count in rules:
        for i in range(counts[count]):
            path = None if source is None else source.format(i=i)
            key = target.format(i=i)
            if (path is not None and path not in variables) or key not in state or key in written:
                raise RuntimeError(
                    f"{path} -> {key}: a Keras variable or torch key is absent, or "
                    "the key is written twice"
                )
            value = None if path is None else np.asarray(variables[path].numpy(), dtype=np.float32)
            array = TRANSFORMS[transform](value, tuple(state[key].shape))
            if tuple(array.shape) != tuple(state[key].shape):
                raise RuntimeError(
                    f"{path} -> {transform} gives {tuple(array.shape)}, but torch {key} is "
                    f"{tuple(state[key].shape)}"
                )
            with torch.no_grad():
                state[key].copy_(torch.from_numpy(array))
            read.add(path)
            written.add(key)
    unread = sorted(set(variables) - read)
    ignored = {key for key in state if key.rsplit(".", 1)[-1] in IGNORED_SUFFIXES}
    unwritten = sorted(set(state) - written - ignored)
    if unread or unwritten:
        raise RuntimeError(
            f"the table does not cover the models: Keras variables not read {unread}, "
            f"torch tensors not written {unwritten}"
        )
    logger.debug(
        "ported %d Keras variables into %d torch tensors", len(read - {None}), len(written)
    )


# ---------------------------------------------------------------------------------------------
# Parity with the Keras model
# ---------------------------------------------------------------------------------------------


def keras_outputs(model: Any, reference: TorchTaskModel, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The Keras model's outputs on ``ids`` under the reference's output names and units."""
    outputs = model.predict_on_batch(np.asarray(ids, dtype=np.int32))
    if isinstance(outputs, Mapping):
        result = {"probabilities": outputs["predictions"]}
        if "attention_weights" in outputs:
            result["token_weights"] = outputs["attention_weights"]
    elif reference.kind == "regressor":
        mean, std = reference.normalizer
        result = {"score": np.asarray(outputs)[:, 0] * std + mean}
    else:
        result = {"probabilities": outputs}
    if not reference.softmax and reference.kind == "classifier":
        result["logits"] = result.pop("probabilities")
    return {name: np.asarray(value) for name, value in result.items()}


def check_parity(
    model: Any, reference: TorchTaskModel, ids: np.ndarray, atol: float | None = 1e-5
) -> dict[str, float]:
    """Max ``|torch - Keras|`` per output on the same post-padded ``ids``; raises
    ``AssertionError`` when one is over ``atol`` (``None``: only report)."""
    want = keras_outputs(model, reference, ids)
    got = reference.predict(ids)
    if sorted(want) != sorted(got):
        raise AssertionError(f"outputs differ: Keras {sorted(want)}, torch {sorted(got)}")
    report = {name: float(np.abs(got[name] - want[name]).max()) for name in want}
    if atol is None:
        return report
    bad = {name: diff for name, diff in report.items() if not diff <= atol}
    if bad:
        raise AssertionError(f"torch and Keras differ by more than {atol}: {bad}")
    return report
