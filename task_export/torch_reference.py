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
from torch import Tensor, nn

from task_export.torch_modules import (
    AttentionHead,
    PooledHead,
    TorchEncoder,
    masked_concat_pool,
)
from ulmfit_core.ids import PAD_ID

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
                (model.max_len, model.bptt) if getattr(model, "keep", "first") == "last" else None,
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
