"""Weight dropout (drop-connect) with fastai 2.2.7's state-dict layout.

Used by the QRNN's linear (:func:`ulmfit_torch.qrnn.awd_qrnn_layer`) and by the AWD-LSTM's
hidden-to-hidden weights (``lm_training.models.SafeAWD_LSTM`` and the converter's reference).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WeightDropout"]

logger = logging.getLogger(__name__)


class WeightDropout(nn.Module):
    """Drop-connect on named weights of a wrapped module, with fastai 2.2.7's state-dict layout.

    The trained weight is the parameter ``{name}_raw`` of this wrapper; it is never modified here.
    On each forward the wrapped module gets, as a plain tensor attribute, a dropped copy
    (``F.dropout(raw, weight_p)``) in training mode or an alias of the raw weight in eval mode,
    and the attribute is reset to a detached alias afterwards so no graph is kept on the module.

    State dict: ``{name}_raw`` plus the wrapped module's other entries (``module.bias``), exactly
    what fastai 2.2.7 saved. Its ``WeightDropout.__init__`` did ``delattr(module, name)`` and then
    ``setattr(module, name, w.clone())``, and ``_setweights`` set ``F.dropout(raw_w)`` or
    ``raw_w.clone()``. All of these are plain tensors, not ``Parameter``s (since torch 1.7, ops on a
    Parameter return plain tensors), so ``module.{name}`` was an ordinary attribute and not in the
    state dict. fastai v1 instead wrote the dropped copy into ``module._parameters``, so its files
    also hold ``module.{name}``. Loading accepts that key and drops it: it holds the last
    *dropped* copy, never the trained weight.

    Args:
        module: the module to wrap, e.g. the ``nn.Linear`` of a QRNN layer.
        weight_p: probability of zeroing each weight during training.
        layer_names: names of the weights to drop (fastai's default was ``"weight_hh_l0"`` for
            LSTMs; a QRNN's linear uses ``"weight"``).
    """

    def __init__(
        self, module: nn.Module, weight_p: float, layer_names: str | Sequence[str] = "weight"
    ) -> None:
        super().__init__()
        self.module = module
        self.weight_p = weight_p
        self.layer_names = (layer_names,) if isinstance(layer_names, str) else tuple(layer_names)
        for name in self.layer_names:
            weight = getattr(module, name)
            delattr(module, name)
            self.register_parameter(
                f"{name}_raw", nn.Parameter(weight.detach(), requires_grad=weight.requires_grad)
            )
            setattr(module, name, weight.detach())
        if isinstance(module, nn.RNNBase):
            # As fastai did: cuDNN flattening would re-pack the substituted non-parameter weights.
            module.flatten_parameters = _do_nothing

    def _dropped(self, name: str) -> Tensor:
        raw = getattr(self, f"{name}_raw")
        if self.training and self.weight_p > 0:
            return F.dropout(raw, p=self.weight_p, training=True)
        # A view, not the Parameter itself: setattr would register a Parameter on the wrapped module
        # (and F.dropout returns its input unchanged when it does nothing).
        return raw.view_as(raw)

    def forward(self, *args, **kwargs):
        for name in self.layer_names:
            setattr(self.module, name, self._dropped(name))
        try:
            if not isinstance(self.module, nn.RNNBase):
                return self.module(*args, **kwargs)
            with warnings.catch_warnings():  # "weights are not part of single contiguous chunk"
                warnings.simplefilter("ignore", UserWarning)
                return self.module(*args, **kwargs)
        finally:
            for name in self.layer_names:
                setattr(self.module, name, getattr(self, f"{name}_raw").detach())

    def reset(self) -> None:
        """Reset the wrapped module if it has state (fastai's interface)."""
        if hasattr(self.module, "reset"):
            self.module.reset()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in self.layer_names:
            key = f"{prefix}module.{name}"
            if state_dict.pop(key, None) is not None:
                logger.debug("ignoring %s: a dropped copy of %s%s_raw", key, prefix, name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"weight_p={self.weight_p}, layer_names={list(self.layer_names)}"


def _do_nothing() -> None:
    pass
