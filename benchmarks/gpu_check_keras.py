"""GPU check, TensorFlow part: a converted Keras AWD-LSTM encoder on cuDNN vs Keras' time loop.

Runs in the TensorFlow environment (``benchmarks/gpu_check.py`` starts it with ``--tf-python``
and merges its rows into its table; alone it prints its own):

    .venv-tf/bin/python -m benchmarks.gpu_check_keras [--quick] [--json-out rows.json]

The encoder is converted as the tests convert one: a random fastai-layout AWD-LSTM state dict
(``convert.testing``; torch's default initialisation), read by the converter's state-dict reader
(``ulmfit_torch.state_dict``), ``ulmfit_keras.build_encoder`` and ``convert.mapping.port_weights``.
One right-padded batch (the mask path cuDNN supports) runs forward and backward twice:

* on ``/GPU:0`` with every ``WeightDropLSTM`` at ``use_cudnn=True``, so that the layer raises
  instead of silently falling back when cuDNN cannot run it;
* on ``/CPU:0`` with ``use_cudnn=False``: Keras' masked time loop. (``tf.device("/CPU:0")``
  alone is not enough: Keras picks cuDNN whenever a GPU is visible, and soft device placement
  would then run the cuDNN op on the GPU anyway.)

TF32 is turned off for the comparison: with it, GPU matmuls round to 10-bit mantissas and the
difference would measure TF32, not the cuDNN weight layout or masking. Gradients (every
trainable weight) are compared after dividing each by its largest absolute value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from ulmfit_core.quiet_tf import quiet_tensorflow

# TensorFlow prints its C++ start-up log while it is first imported: quieted (not with -v).
with quiet_tensorflow(sys.argv[1:]):
    import tensorflow as tf

# After TensorFlow's quieted import: these import it too.
import keras

import ulmfit_keras as uk
from benchmarks.gpu_check_report import (
    FAIL,
    Row,
    Tolerance,
    error_figure,
    exit_code,
    format_table,
    parity_row,
    rows_to_json,
    skip_row,
    summary_line,
)
from convert.mapping import port_weights
from convert.testing import fastai_lm_state_dict
from ulmfit_core.artifacts import write_json
from ulmfit_core.cli import setup_logging, verbose_option
from ulmfit_core.lm_config import LMConfig
from ulmfit_torch.state_dict import read_lm_state

logger = logging.getLogger("gpu_check_keras")

CHECK = "keras cuDNN LSTM"
PAD_ID = 1
# Same float32 math in another order: ulps for the outputs (bounded by 1), more for gradients
# summed over batch and time. A transposed gate block or a mask bug is off by O(0.1).
FORWARD_TOL = Tolerance(atol=1e-5, rtol=1e-4)
GRADIENT_TOL = Tolerance(atol=1e-4)  # on gradients divided by their max abs value

# (device, use_cudnn) of the two runs compared.
CUDNN_PATH = ("/GPU:0", True)
LOOP_PATH = ("/CPU:0", False)


@dataclass(frozen=True)
class Sizes:
    """The encoder and batch of the check."""

    vocab_size: int = 2_000
    emb_size: int = 400
    hidden_size: int = 1152
    n_layers: int = 3
    batch_size: int = 8
    seq_len: int = 70

    def describe(self) -> str:
        return (
            f"{self.n_layers}x{self.hidden_size}, emb {self.emb_size}, "
            f"{self.batch_size}x{self.seq_len} right-padded"
        )


FULL = Sizes()
QUICK = Sizes(vocab_size=300, emb_size=64, hidden_size=128, n_layers=2, batch_size=4, seq_len=20)


@dataclass(frozen=True)
class Comparison:
    """``max |got - want|`` and the worst excess ``max(|got - want| - rtol*|want|)``."""

    max_diff: float
    excess: float


def compare(got: np.ndarray, want: np.ndarray, tol: Tolerance) -> Comparison:
    """Compare in float64; a shape mismatch or a NaN gives NaN (never a PASS)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return Comparison(math.nan, math.nan)
    if got.size == 0:
        return Comparison(0.0, 0.0)
    diff = np.abs(got - want)
    if not np.isfinite(diff).all():
        return Comparison(math.nan, math.nan)
    return Comparison(float(diff.max()), float((diff - tol.rtol * np.abs(want)).max()))


def compare_scaled(
    got: Sequence[np.ndarray], want: Sequence[np.ndarray], tol: Tolerance
) -> Comparison:
    """The worst comparison of several arrays, each pair divided by ``max |want|`` first."""
    if len(got) != len(want):
        return Comparison(math.nan, math.nan)
    worst = Comparison(0.0, 0.0)
    for g, w in zip(got, want, strict=True):
        scale = float(np.max(np.abs(w))) if np.size(w) else 0.0
        scale = scale if scale > 0 else 1.0
        c = compare(np.asarray(g) / scale, np.asarray(w) / scale, tol)
        if math.isnan(c.max_diff):
            return c
        worst = Comparison(max(worst.max_diff, c.max_diff), max(worst.excess, c.excess))
    return worst


def converted_encoder(sizes: Sizes, seed: int = 0) -> uk.ULMFiTEncoder:
    """A random fastai AWD-LSTM state dict converted into a Keras encoder (nothing written)."""
    source = "random fastai AWD-LSTM"
    state = fastai_lm_state_dict(
        "awd-lstm",
        sizes.vocab_size,
        sizes.emb_size,
        sizes.hidden_size,
        sizes.n_layers,
        init_range=None,  # torch's initialisation: realistic, unsaturated gates
        seed=seed,
    )
    sidecar = LMConfig.create(
        "awd-lstm",
        sizes.vocab_size,
        emb_size=sizes.emb_size,
        hidden_size=sizes.hidden_size,
        n_layers=sizes.n_layers,
    )
    read = read_lm_state(state, source, sidecar)
    keras.utils.set_random_seed(seed)
    encoder, lm = uk.build_encoder(read.config.to_dict(), seed=seed)
    port_weights(read, lm)
    return encoder


def padded_batch(sizes: Sizes, seed: int = 0) -> np.ndarray:
    """Random ids (never the pad id), each row cut to a length from full down to 2 and
    right-padded with ``PAD_ID``."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, sizes.vocab_size, (sizes.batch_size, sizes.seq_len), dtype=np.int32)
    lengths = np.linspace(sizes.seq_len, 2, sizes.batch_size).round().astype(int)
    for row, length in enumerate(lengths):
        ids[row, length:] = PAD_ID
    return ids


@contextlib.contextmanager
def lstm_paths(encoder: uk.ULMFiTEncoder, use_cudnn: bool | str) -> Iterator[None]:
    """Set ``use_cudnn`` on every recurrent layer for a block (read at call time), then restore."""
    layers = encoder.recurrent_layers
    saved = [layer.use_cudnn for layer in layers]
    for layer in layers:
        layer.use_cudnn = use_cudnn
    try:
        yield
    finally:
        for layer, value in zip(layers, saved, strict=True):
            layer.use_cudnn = value


def forward_backward(
    encoder: uk.ULMFiTEncoder,
    ids: np.ndarray,
    cotangent: np.ndarray,
    device: str,
    use_cudnn: bool | str,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The encoder's output and the gradients of ``sum(output * cotangent)`` on ``device``."""
    with lstm_paths(encoder, use_cudnn), tf.device(device):
        ids_t, cot = tf.constant(ids), tf.constant(cotangent)
        with tf.GradientTape() as tape:
            out = encoder(ids_t, training=False)
            loss = tf.reduce_sum(out * cot)
        grads = tape.gradient(loss, encoder.trainable_variables)
    # The embedding's gradient comes as IndexedSlices: make it dense to compare.
    return out.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


def cudnn_parity(
    encoder: uk.ULMFiTEncoder,
    ids: np.ndarray,
    fast: tuple[str, bool | str] = CUDNN_PATH,
    slow: tuple[str, bool | str] = LOOP_PATH,
    seed: int = 0,
) -> tuple[Comparison, Comparison]:
    """Forward and gradient comparisons of the ``fast`` run against the ``slow`` one.

    Each is ``(device, use_cudnn)``; the tests pass CPU devices for both.
    """
    rng = np.random.default_rng(seed)
    cotangent = rng.normal(size=(*ids.shape, encoder.emb_size)).astype(np.float32)
    got_out, got_grads = forward_backward(encoder, ids, cotangent, *fast)
    want_out, want_grads = forward_backward(encoder, ids, cotangent, *slow)
    forward = compare(got_out, want_out, FORWARD_TOL)
    return forward, compare_scaled(got_grads, want_grads, GRADIENT_TOL)


def settings(sizes: Sizes) -> tuple[str, str]:
    """The setting column of the forward and the gradient row."""
    return (
        f"GPU vs CPU forward, {sizes.describe()}, TF32 off",
        "GPU vs CPU gradients (all weights, / max abs)",
    )


def gpu_rows(
    sizes: Sizes,
    fast: tuple[str, bool | str] = CUDNN_PATH,
    slow: tuple[str, bool | str] = LOOP_PATH,
) -> list[Row]:
    """The two parity rows; an error (e.g. cuDNN refusing the layer) is a FAIL row for both."""
    forward_setting, gradient_setting = settings(sizes)
    try:
        encoder = converted_encoder(sizes)
        logger.info("%s: %s on %s vs %s", CHECK, sizes.describe(), fast, slow)
        forward, gradients = cudnn_parity(encoder, padded_batch(sizes), fast, slow)
    except Exception as err:  # the failure is the finding: report it in the table
        logger.exception("%s failed", CHECK)
        message = error_figure(err)
        return [
            Row(CHECK, forward_setting, message, FORWARD_TOL.describe(), FAIL),
            Row(CHECK, gradient_setting, message, GRADIENT_TOL.describe(), FAIL),
        ]
    return [
        parity_row(CHECK, forward_setting, forward.max_diff, forward.excess, FORWARD_TOL),
        parity_row(CHECK, gradient_setting, gradients.max_diff, gradients.excess, GRADIENT_TOL),
    ]


def skip_rows(sizes: Sizes, reason: str) -> list[Row]:
    forward_setting, gradient_setting = settings(sizes)
    return [
        skip_row(CHECK, forward_setting, reason, FORWARD_TOL.describe()),
        skip_row(CHECK, gradient_setting, reason, GRADIENT_TOL.describe()),
    ]


def run_check(sizes: Sizes) -> list[Row]:
    """The rows on this machine: parity rows with a GPU, SKIP rows (and why) without."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        built = "built with CUDA" if tf.test.is_built_with_cuda() else "built without CUDA"
        reason = f"TensorFlow {tf.__version__} ({built}) sees no GPU"
        logger.warning("%s: %s", CHECK, reason)
        return skip_rows(sizes, reason)
    for gpu in gpus:
        # Grow on demand: the fastai-side check may still hold GPU memory in its process.
        # (RuntimeError: the GPU was initialised already, e.g. by an earlier call.)
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.experimental.enable_tensor_float_32_execution(False)
    logger.info("TensorFlow %s on %s", tf.__version__, [g.name for g in gpus])
    return gpu_rows(sizes)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--quick",
    is_flag=True,
    help="A small encoder (2x128, emb 64, batch 4x20) instead of 3x1152, emb 400, batch 8x70.",
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the rows to this JSON file (gpu_check.py merges them into its table).",
)
@click.option("--no-table", is_flag=True, help="Do not print the table (with --json-out).")
@verbose_option
def main(quick: bool, json_out: Path | None, no_table: bool, verbose: bool) -> None:
    """Compare a converted Keras AWD-LSTM encoder on cuDNN (GPU) with Keras' time loop (CPU),
    forward and gradients. Exits 1 on a parity failure, 0 otherwise (also without a GPU)."""
    setup_logging(verbose)
    started = time.perf_counter()
    sizes = QUICK if quick else FULL
    rows = run_check(sizes)
    if json_out is not None:
        write_json(
            json_out,
            {
                "rows": rows_to_json(rows),
                "sizes": dataclasses.asdict(sizes),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
            },
        )
    if not no_table:
        click.echo(format_table(rows))
        click.echo(f"{summary_line(rows)}; {time.perf_counter() - started:.0f} s")
    sys.exit(exit_code(rows))


if __name__ == "__main__":
    main()
