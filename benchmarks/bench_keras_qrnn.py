"""Time the parallel Keras QRNN layer against a per-timestep ``keras.layers.RNN`` QRNN cell.

The cell is the predecessor's (tf2qrnn's) design: one ``RNN`` step per token doing the gate
matmul for that token, with the previous input kept in the state for window 2. The layer is
``ulmfit_keras.QRNNLayer``: one matmul over the whole sequence, then a scan of the element-wise
forget-mult. Both compute the same function (checked before timing). Both run inside
``tf.function`` (graph mode, as in ``fit``/``predict``); timings are the minimum over
interleaved repetitions. Prints tokens/s and the ratio; target: parallel / cell >= 5x.

Also printed: the time of the bare gate matmul over the whole sequence (the FLOPs both designs
must do). On a CPU the cell's per-step matmuls run about as fast as that one big matmul once the
batch is large enough to fill the cores, so the ratio there is bounded by
``cell / matmul``; the parallel layer wins big where the per-step loop is latency-bound (small
batches, backward passes, accelerators).

    .venv-tf/bin/python -m benchmarks.bench_keras_qrnn            # about a minute on 2 cores
    .venv-tf/bin/python -m benchmarks.bench_keras_qrnn --reps 10 --batch 64 --small-batch 4
"""

from __future__ import annotations

import argparse
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from benchmarks.timing import best_times
from ulmfit_keras import QRNNLayer

TARGET = 5.0


class QRNNCell(keras.layers.Layer):
    """One QRNN step per call (what a per-timestep RNN cell must do): state ``[h, x_prev]``."""

    def __init__(self, units: int, input_size: int, window: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units, self.input_size, self.window = units, input_size, window
        self.state_size = [units, input_size]
        self.output_size = units

    def build(self, input_shape) -> None:
        del input_shape  # sizes come from the constructor
        self.kernel = self.add_weight(
            name="kernel", shape=(self.window * self.input_size, 3 * self.units)
        )
        self.bias = self.add_weight(name="bias", shape=(3 * self.units,), initializer="zeros")

    def call(self, inputs, states):
        h_prev, x_prev = states
        source = ops.concatenate([inputs, x_prev], axis=-1) if self.window == 2 else inputs
        z, f, o = ops.split(ops.matmul(source, self.kernel) + self.bias, 3, axis=-1)
        z, f = ops.tanh(z), ops.sigmoid(f)
        h = f * z + (1.0 - f) * h_prev
        return ops.sigmoid(o) * h, [h, inputs]


def bench(batch: int, seq: int, n_in: int, units: int, window: int, reps: int) -> dict[str, float]:
    parallel = QRNNLayer(units, window=window, name="qrnn_parallel")
    cell = QRNNCell(units, n_in, window, name="qrnn_cell")
    rnn = keras.layers.RNN(cell, return_sequences=True, name="qrnn_rnn")
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, seq, n_in)).astype("float32"))
    parallel(x)
    rnn(x)
    cell.kernel.assign(parallel.kernel)
    cell.bias.assign(parallel.bias)

    def forward(layer):
        return tf.function(lambda inputs: layer(inputs))

    gate_matmul = tf.function(lambda inputs: ops.matmul(inputs, cell.kernel))

    def forward_backward(layer):
        @tf.function
        def step(inputs):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(inputs) ** 2)
            return tape.gradient(loss, layer.trainable_weights)

        return step

    diff = np.abs(forward(parallel)(x).numpy() - forward(rnn)(x).numpy()).max()
    source = tf.concat([x, tf.pad(x, [[0, 0], [1, 0], [0, 0]])[:, :-1]], -1) if window == 2 else x
    compiled = {
        "gate matmul only": (gate_matmul, source),
        "parallel fwd": (forward(parallel), x),
        "cell fwd": (forward(rnn), x),
        "parallel fwd+bwd": (forward_backward(parallel), x),
        "cell fwd+bwd": (forward_backward(rnn), x),
    }
    fns = {name: functools.partial(fn, arg) for name, (fn, arg) in compiled.items()}
    times = best_times(fns, reps)
    tokens = batch * seq
    print(
        f"\nbatch {batch}, seq {seq}, {n_in}->{units}, window {window}"
        f"  (max |parallel - cell| = {diff:.1e})"
    )
    print(f"  {'':18s} {'ms':>9s} {'tokens/s':>12s}")
    for name, seconds in times.items():
        print(f"  {name:18s} {seconds * 1e3:9.1f} {tokens / seconds:12,.0f}")
    for kind in ("fwd", "fwd+bwd"):
        ratio = times[f"cell {kind}"] / times[f"parallel {kind}"]
        verdict = "ok" if ratio >= TARGET else f"below the {TARGET:.0f}x target"
        print(f"  parallel / cell, {kind:8s}: {ratio:5.1f}x  ({verdict})")
    bound = times["cell fwd"] / times["gate matmul only"]
    print(f"  upper bound of the fwd ratio here (cell fwd / gate matmul only): {bound:.1f}x")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=70)
    parser.add_argument("--small-batch", type=int, default=1, help="the latency-bound case")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPUs, GPU: {bool(tf.config.list_physical_devices('GPU'))}"
    )
    # MultiFiT's first layer (window 2) and a middle layer (window 1), at a training batch and
    # at a small (inference) batch.
    for batch in (args.batch, args.small_batch):
        bench(batch, args.seq, 400, 1552, 2, args.reps)
        bench(batch, args.seq, 1552, 1552, 1, args.reps)


if __name__ == "__main__":
    main()
