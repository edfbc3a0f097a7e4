"""GPU check: the CUDA paths nobody has run yet, in one command, in a few minutes.

    make gpu-check                                        # both environments, one table
    .venv-fastai/bin/python -m benchmarks.gpu_check --quick --json-out gpu-check.json

What runs (fastai environment, on ``--device``, default ``cuda``):

1. forget-mult parity: ``forget_mult_triton`` (forward and the backward's dz, df, dh0) against
   ``forget_mult_reference`` computed in float64 from the same (rounded) inputs, in float32 and
   bfloat16, at a QRNN layer's shape (batch 64, bptt 70, 1552 units; inputs laid out time-major
   as ``QRNNLayer`` passes them, with an initial hidden state); the scan fallback in float32; and
   which implementation ``select_forget_mult`` picks (Triton, unless its self-check failed).
2. LM training: ``--steps`` optimizer steps of a QRNN (4x1552) and an AWD-LSTM (3x1152) LM,
   emb 400, vocab 30k, batch 64, bptt 70, on one fixed batch of random ids, in fp32, fp16 and
   bf16. The Learner is stage 04's (``lm_training.learner``): same loss, ``Adam(wd=0.1,
   eps=1e-7)``, ``GradientClip(0.1)``, AR/TAR, the NaN guard, ``fit_one_cycle`` with its
   momentums and ``div=10``, and fastai's ``MixedPrecision(amp_mode=...)`` callback for
   ``--fp16``/``--bf16``. Every loss must be finite and the loss must fall (the batch repeats,
   so a working step memorises it).
3. speed: training tokens/s of QRNN vs AWD-LSTM from the same runs (median step after 3 warm-up
   steps); MultiFiT reports 2-3x for the QRNN on a V100. Reported, not counted in the exit status.
4. NCCL: with 2 or more GPUs, a 2-process ``all_reduce`` with the nccl backend.
5. Keras: ``benchmarks/gpu_check_keras.py`` in the TensorFlow environment (``--tf-python``): a
   converted AWD-LSTM encoder through cuDNN on the GPU vs Keras' time loop on the CPU.

Ends with one table (check | setting | figure | tolerance/target | result) on stdout; the exit
status is 1 when a parity or training row failed. Without CUDA it says so in one line, prints
the table of SKIP rows and exits 0. ``--quick`` uses small models. Every part is bounded (steps,
subprocess timeouts) so that the whole check stays under 5 minutes on one GPU.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as torch_mp

from benchmarks.gpu_check_report import (
    FAIL,
    PASS,
    Row,
    Tolerance,
    error_figure,
    exit_code,
    format_diff,
    format_table,
    parity_row,
    rows_from_json,
    rows_to_json,
    skip_row,
    summary_line,
)
from ulmfit_core.artifacts import write_json
from ulmfit_core.cli import setup_logging, verbose_option
from ulmfit_torch.forget_mult import (
    ForgetMult,
    forget_mult_reference,
    forget_mult_scan,
    forget_mult_triton,
    select_forget_mult,
)

if TYPE_CHECKING:
    from benchmarks.gpu_check_train import TrainRun

logger = logging.getLogger("gpu_check")

REPO_ROOT = Path(__file__).resolve().parent.parent
KERAS_SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check_keras.py"
DEFAULT_TF_PYTHON = REPO_ROOT / ".venv-tf" / "bin" / "python"

PARTS = ("forget-mult", "train", "nccl", "keras")
PRECISIONS = ("fp32", "fp16", "bf16")
ARCHS = ("qrnn", "awd-lstm")
ARCH_LABELS = {"qrnn": "QRNN", "awd-lstm": "AWD-LSTM"}

# Math in float32 against a float64 reference: a few ulps of float32, more for the backward's
# sums over time. bfloat16 results are rounded once on the way out (relative error <= 2**-9);
# 1.6e-2 is torch.testing's bfloat16 rtol. A wrong step or a misread stride is off by O(0.1).
FORGET_MULT_TOLERANCES = {
    torch.float32: Tolerance(atol=1e-5, rtol=1e-4),
    torch.bfloat16: Tolerance(atol=1e-5, rtol=1.6e-2),
}
DTYPE_LABELS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# What the LM's logits are inside the forward of each precision (autocast's output dtype).
LOGITS_DTYPES = {"fp32": "torch.float32", "fp16": "torch.float16", "bf16": "torch.bfloat16"}
# The loss on the repeated batch must end at least this much below the first step's.
MIN_LOSS_DROP = 0.02
# MultiFiT (Eisenschlos et al. 2019): the QRNN trains 2-3x faster than the AWD-LSTM on a V100.
SPEED_TARGET = 2.0
WARMUP_STEPS = 3
NCCL_TIMEOUT_S = 120
KERAS_TIMEOUT_S = 240


@dataclass(frozen=True)
class Sizes:
    """Model and batch sizes of one check run."""

    vocab_size: int = 30_000
    emb_size: int = 400
    qrnn_hidden: int = 1552
    qrnn_layers: int = 4
    lstm_hidden: int = 1152
    lstm_layers: int = 3
    batch_size: int = 64
    bptt: int = 70

    @property
    def forget_mult_shape(self) -> tuple[int, int, int]:
        """``(batch, time, hidden)`` of a QRNN layer's forget-mult at these sizes."""
        return (self.batch_size, self.bptt, self.qrnn_hidden)

    def layers(self, arch: str) -> tuple[int, int]:
        """``(hidden_size, n_layers)`` of ``arch``."""
        if arch == "qrnn":
            return self.qrnn_hidden, self.qrnn_layers
        return self.lstm_hidden, self.lstm_layers

    def describe(self, arch: str) -> str:
        hidden, n_layers = self.layers(arch)
        return (
            f"{n_layers}x{hidden}, emb {self.emb_size}, vocab {_count(self.vocab_size)}, "
            f"{self.batch_size}x{self.bptt}"
        )


def _count(n: float) -> str:
    """30000 -> ``30k``, 1234567 -> ``1.23M``, 950 -> ``950`` (for the table)."""
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}k"
    return f"{n:.3g}"


FULL = Sizes()
QUICK = Sizes(
    vocab_size=8_000,
    emb_size=128,
    qrnn_hidden=256,
    qrnn_layers=2,
    lstm_hidden=256,
    lstm_layers=2,
    batch_size=16,
    bptt=35,
)


# ---------------------------------------------------------------------------------------------
# Comparisons and small pure helpers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """``max |got - want|`` and the worst excess ``max(|got - want| - rtol*|want|)``."""

    max_diff: float
    excess: float

    @classmethod
    def worst(cls, comparisons: Sequence[Comparison]) -> Comparison:
        """The largest diff and excess of several comparisons (NaN wins)."""
        return cls(
            _nan_max(c.max_diff for c in comparisons), _nan_max(c.excess for c in comparisons)
        )


def _nan_max(values) -> float:
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def compare(got: torch.Tensor, want: torch.Tensor, tol: Tolerance) -> Comparison:
    """Compare in float64; a shape mismatch or a NaN anywhere gives NaN (never a PASS)."""
    if got.shape != want.shape:
        return Comparison(math.nan, math.nan)
    diff = (got.detach().double() - want.detach().double()).abs()
    if diff.numel() == 0:
        return Comparison(0.0, 0.0)
    if not bool(torch.isfinite(diff).all()):
        return Comparison(math.nan, math.nan)
    excess = diff - tol.rtol * want.detach().double().abs()
    return Comparison(float(diff.max()), float(excess.max()))


def loss_falls(losses: Sequence[float], min_drop: float = MIN_LOSS_DROP) -> tuple[bool, str]:
    """Whether every loss is finite and the last quarter's mean is ``min_drop`` below the first.

    Returns:
        ``(ok, why)``: ``why`` names the problem when not ok.
    """
    if len(losses) < 2:
        return False, f"only {len(losses)} step(s) recorded"
    bad = [i for i, loss in enumerate(losses) if not math.isfinite(loss)]
    if bad:
        return False, f"loss {losses[bad[0]]} at step {bad[0] + 1}"
    tail = losses[-max(1, len(losses) // 4) :]
    end = statistics.fmean(tail)
    if not end < losses[0] * (1 - min_drop):
        return False, f"did not fall: {losses[0]:.3f} -> {end:.3f}"
    return True, ""


def tokens_per_second(
    tokens_per_step: int, step_seconds: Sequence[float], warmup: int = WARMUP_STEPS
) -> float:
    """Training throughput from per-step wall times: the median step after ``warmup`` steps.

    The first steps compile kernels (Triton) and pick algorithms (cuDNN); the median of the rest
    resists a stray slow step. With no more than ``warmup`` steps, all but the first are used.
    """
    if not step_seconds:
        return math.nan
    timed = step_seconds[warmup:] if len(step_seconds) > warmup else step_seconds[1:]
    timed = timed or step_seconds
    return tokens_per_step / statistics.median(timed)


def _time_major(t: torch.Tensor) -> torch.Tensor:
    """A ``(batch, time, hidden)`` view of time-major storage, as ``QRNNLayer`` hands gates over."""
    return t.transpose(0, 1).contiguous().transpose(0, 1)


# ---------------------------------------------------------------------------------------------
# 1. Forget-mult parity
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForgetMultParity:
    """Forward and backward (dz, df, dh0 together) of one implementation vs the reference."""

    forward: Comparison
    backward: Comparison
    out_dtype: torch.dtype


def forget_mult_parity(
    impl: ForgetMult,
    shape: tuple[int, int, int],
    dtype: torch.dtype,
    device: torch.device | str,
    seed: int = 0,
) -> ForgetMultParity:
    """Run ``impl`` forward and backward and compare with the float64 reference.

    The inputs are gates as a QRNN makes them (``z = tanh``, ``f = sigmoid`` of normals) plus an
    initial hidden state, in ``dtype`` and laid out time-major. The reference gets the same
    rounded values in float64, so only ``impl``'s own error is measured.
    """
    device = torch.device(device)
    batch, _, hidden = shape
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=gen).tanh()
    f = torch.randn(shape, generator=gen).sigmoid()
    h0 = torch.randn(batch, hidden, generator=gen).tanh()
    grad = torch.randn(shape, generator=gen)
    inputs = [_time_major(z), _time_major(f), h0]
    got_in = [x.to(device, dtype).requires_grad_() for x in inputs]
    grad_in = _time_major(grad).to(device, dtype)
    want_in = [x.detach().double().requires_grad_() for x in got_in]

    out = impl(*got_in)
    out.backward(grad_in)
    want = forget_mult_reference(*want_in)
    want.backward(grad_in.double())

    tol = FORGET_MULT_TOLERANCES.get(dtype, FORGET_MULT_TOLERANCES[torch.float32])
    backward = Comparison.worst(
        [compare(g.grad, w.grad, tol) for g, w in zip(got_in, want_in, strict=True)]
    )
    return ForgetMultParity(compare(out, want, tol), backward, out.dtype)


def forget_mult_setting(dtype: torch.dtype, direction: str, shape: tuple[int, ...]) -> str:
    """The setting column of a forget-mult row (the SKIP rows use it too)."""
    if direction == "forward":
        return f"{DTYPE_LABELS[dtype]} forward {shape}, with h0"
    if direction == "backward":
        return f"{DTYPE_LABELS[dtype]} backward (dz, df, dh0)"
    return f"{DTYPE_LABELS[dtype]} fwd+bwd {shape} (the fallback)"


def forget_mult_rows(
    device: torch.device | str,
    shape: tuple[int, int, int],
    impl: ForgetMult | None = None,
    fallback: ForgetMult | None = forget_mult_scan,
) -> list[Row]:
    """Parity rows of the CUDA forget-mult (``impl``: Triton by default) and of its fallback.

    Args:
        device: where to run (the tests pass ``"cpu"`` with ``impl=forget_mult_cpu``).
        shape: ``(batch, time, hidden)``.
        impl: the implementation to check in float32 and bfloat16, forward and backward;
            ``None``: ``forget_mult_triton``, or SKIP rows when Triton is not importable.
        fallback: checked in float32, forward and backward in one row (``None``: not checked).
    """
    rows = []
    if impl is None and importlib.util.find_spec("triton") is None:
        for dtype, tol in FORGET_MULT_TOLERANCES.items():
            for direction in ("forward", "backward"):
                setting = forget_mult_setting(dtype, direction, shape)
                reason = "triton is not importable"
                rows.append(skip_row("forget-mult triton", setting, reason, tol.describe()))
    else:
        impl = impl or forget_mult_triton
        check = f"forget-mult {impl.__name__.removeprefix('forget_mult_')}"
        for dtype, tol in FORGET_MULT_TOLERANCES.items():
            forward, backward = (
                forget_mult_setting(dtype, d, shape) for d in ("forward", "backward")
            )
            logger.info("%s: %s", check, forward)
            try:
                result = forget_mult_parity(impl, shape, dtype, device)
            except Exception as err:  # a compiler or driver error is this row's finding
                logger.exception("%s %s failed", check, DTYPE_LABELS[dtype])
                target = tol.describe()
                rows += [_error_row(check, s, err, target) for s in (forward, backward)]
                continue
            fwd = result.forward
            row = parity_row(check, forward, fwd.max_diff, fwd.excess, tol)
            if result.out_dtype != dtype:  # half/bfloat16 must come back in their own dtype
                figure = f"{row.figure}; returned {result.out_dtype}"
                row = dataclasses.replace(row, figure=figure, verdict=FAIL)
            rows.append(row)
            bwd = result.backward
            rows.append(parity_row(check, backward, bwd.max_diff, bwd.excess, tol))
    if fallback is not None:
        check = f"forget-mult {fallback.__name__.removeprefix('forget_mult_')}"
        tol = FORGET_MULT_TOLERANCES[torch.float32]
        setting = forget_mult_setting(torch.float32, "both", shape)
        logger.info("%s: %s", check, setting)
        try:
            result = forget_mult_parity(fallback, shape, torch.float32, device)
        except Exception as err:
            logger.exception("%s failed", check)
            rows.append(_error_row(check, setting, err, tol.describe()))
        else:
            both = Comparison.worst([result.forward, result.backward])
            rows.append(parity_row(check, setting, both.max_diff, both.excess, tol))
    return rows


def dispatch_row(device: torch.device | str) -> Row:
    """Which forget-mult ``QRNNLayer`` uses on ``device``: Triton, unless its self-check failed."""
    device = torch.device(device)
    try:
        chosen = select_forget_mult(device).__name__
    except Exception as err:
        return _error_row("forget-mult dispatch", str(device), err, "forget_mult_triton")
    verdict = PASS if chosen == forget_mult_triton.__name__ else FAIL
    # A fall back to the scan is logged by qrnn.py with the reason (import error, self-check).
    return Row("forget-mult dispatch", str(device), chosen, "forget_mult_triton", verdict)


def _error_row(check: str, setting: str, err: BaseException, target: str) -> Row:
    return Row(check, setting, error_figure(err), target, FAIL)


# ---------------------------------------------------------------------------------------------
# 2. LM training steps (stage 04's Learner on a repeated batch)
# ---------------------------------------------------------------------------------------------


def run_training(
    sizes: Sizes, steps: int, device: torch.device | str, precisions: Sequence[str] = PRECISIONS
) -> list[TrainRun | Row]:
    """Train both LMs in each precision; a crash becomes a FAIL row and the others still run."""
    from benchmarks.gpu_check_train import train_steps  # imports fastai (see its docstring)

    results: list[TrainRun | Row] = []
    for precision in precisions:
        for arch in ARCHS:
            hidden, n_layers = sizes.layers(arch)
            try:
                run = train_steps(
                    arch,
                    precision,
                    vocab_size=sizes.vocab_size,
                    emb_size=sizes.emb_size,
                    hidden_size=hidden,
                    n_layers=n_layers,
                    batch_size=sizes.batch_size,
                    bptt=sizes.bptt,
                    steps=steps,
                    device=device,
                )
            except Exception as err:  # e.g. a CUDA error in one precision: report, go on
                logger.exception("training %s %s failed", arch, precision)
                run = _error_row(
                    "LM training", _training_setting(arch, precision, sizes, steps), err,
                    _training_target(),
                )  # fmt: skip
            results.append(run)
    return results


def _training_setting(arch: str, precision: str, sizes: Sizes, steps: int) -> str:
    return f"{ARCH_LABELS[arch]} {precision}, {sizes.describe(arch)}, {steps} steps"


def _training_target() -> str:
    return f"finite, falls >= {MIN_LOSS_DROP:.0%}, autocast dtype"


def training_rows(runs: Sequence[TrainRun | Row], sizes: Sizes, steps: int) -> list[Row]:
    """One gating row per run: every loss finite and the loss falling; error rows pass through."""
    rows = []
    for run in runs:
        if isinstance(run, Row):
            rows.append(run)
            continue
        setting = _training_setting(run.arch, run.precision, sizes, steps)
        if run.diverged:
            rows.append(Row("LM training", setting, run.diverged, _training_target(), FAIL))
            continue
        expected = LOGITS_DTYPES[run.precision]
        if run.logits_dtype is not None and run.logits_dtype != expected:
            # e.g. float32 logits in an fp16 run: the MixedPrecision callback did not take effect
            figure = f"logits in {run.logits_dtype}, not {expected}"
            rows.append(Row("LM training", setting, figure, _training_target(), FAIL))
            continue
        ok, why = loss_falls(run.losses)
        if ok or why.startswith("did not fall"):
            tail = run.losses[-max(1, len(run.losses) // 4) :]
            figure = f"loss {run.losses[0]:.3f} -> {statistics.fmean(tail):.3f}"
        else:
            figure = why
        rows.append(Row("LM training", setting, figure, _training_target(), PASS if ok else FAIL))
    return rows


def speed_rows(runs: Sequence[TrainRun | Row]) -> list[Row]:
    """QRNN / AWD-LSTM training tokens/s per precision where both trained (not gating)."""
    done = {(r.arch, r.precision): r for r in runs if not isinstance(r, Row) and not r.diverged}
    rows = []
    for precision in PRECISIONS:
        qrnn, lstm = done.get(("qrnn", precision)), done.get(("awd-lstm", precision))
        if qrnn is None or lstm is None:
            continue
        q = tokens_per_second(qrnn.tokens_per_step, qrnn.step_seconds)
        a = tokens_per_second(lstm.tokens_per_step, lstm.step_seconds)
        ratio = q / a if a > 0 else math.nan
        figure = f"{_count(q)} / {_count(a)} tok/s = {ratio:.2f}x"
        verdict = PASS if ratio >= SPEED_TARGET else FAIL
        rows.append(
            Row("speed", _speed_setting(precision), figure, _speed_target(), verdict, False, ratio)
        )
    return rows


def _speed_setting(precision: str) -> str:
    return f"training tokens/s QRNN / AWD-LSTM, {precision}"


def _speed_target() -> str:
    return f">= {SPEED_TARGET:.0f}x (MultiFiT: 2-3x, V100)"


# ---------------------------------------------------------------------------------------------
# 4. NCCL all_reduce in 2 processes
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _allreduce_worker(
    rank: int, world_size: int, backend: str, device_type: str, init_method: str, queue: Any
) -> None:
    """One process: all_reduce ``rank + 1`` everywhere and report the largest error."""
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch_dist.init_process_group(
        backend,
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=NCCL_TIMEOUT_S // 2),
    )
    try:
        values = torch.full((1 << 20,), float(rank + 1), device=device)
        torch_dist.all_reduce(values)
        expected = world_size * (world_size + 1) / 2
        queue.put((rank, float((values - expected).abs().max())))
    finally:
        torch_dist.destroy_process_group()


def allreduce_check(
    backend: str = "nccl",
    device_type: str = "cuda",
    world_size: int = 2,
    timeout_s: float = NCCL_TIMEOUT_S,
) -> float:
    """Max error of an ``all_reduce`` (sum) over ``world_size`` spawned processes.

    Raises:
        TimeoutError: the processes did not finish in ``timeout_s`` (e.g. an NCCL hang).
        RuntimeError: a process failed or reported nothing.
    """
    ctx = torch_mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    procs = torch_mp.start_processes(
        _allreduce_worker,
        args=(world_size, backend, device_type, init_method, queue),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not procs.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{backend} all_reduce did not finish in {timeout_s:.0f} s")
    finally:
        for proc in procs.processes:
            if proc.is_alive():
                proc.terminate()
    errors = {}
    while not queue.empty():
        rank, error = queue.get()
        errors[rank] = error
    if len(errors) != world_size:
        raise RuntimeError(f"only ranks {sorted(errors)} of {world_size} reported")
    return max(errors.values())


def nccl_row(gpus: int) -> Row:
    """The NCCL row: an all_reduce over 2 GPUs, or SKIP with one GPU."""
    check, setting, target = "NCCL all_reduce", "2 processes, 1M fp32, sum", "exact (diff 0)"
    if gpus < 2:
        return skip_row(check, setting, f"{gpus} GPU", target)
    logger.info("NCCL all_reduce on 2 of %d GPUs", gpus)
    try:
        error = allreduce_check("nccl", "cuda")
    except Exception as err:
        logger.exception("NCCL all_reduce failed")
        return _error_row(check, setting, err, target)
    return Row(
        check,
        setting,
        f"max abs diff {format_diff(error)}",
        target,
        PASS if error == 0 else FAIL,
        value=error,
    )


# ---------------------------------------------------------------------------------------------
# 5. The Keras part, in the TensorFlow environment
# ---------------------------------------------------------------------------------------------

KERAS_CHECK = "keras cuDNN LSTM"
KERAS_SETTING = "GPU vs CPU forward and gradients"


def keras_rows(
    tf_python: Path | None,
    quick: bool,
    verbose: bool = False,
    script: Path = KERAS_SCRIPT,
    timeout_s: float = KERAS_TIMEOUT_S,
) -> list[Row]:
    """Run ``script`` with the TF environment's python and read back its rows (JSON).

    Its log goes to stderr as it runs (TensorFlow's start-up lines quieted unless ``verbose``);
    a crash, a timeout or no rows is a FAIL row here.
    """
    if tf_python is None or not Path(tf_python).exists():
        return [skip_row(KERAS_CHECK, KERAS_SETTING, f"no TF python at {tf_python}")]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        out = Path(tmp) / "keras_rows.json"
        command = [str(tf_python), str(script), "--json-out", str(out), "--no-table"]
        command += ["--quick"] if quick else []
        command += ["--verbose"] if verbose else []
        logger.info("Keras part: %s", " ".join(command))
        try:
            # Its stdout goes to our stderr (fd 2, whatever sys.stderr is): the only table on
            # stdout is the merged one.
            # The checkout's root on its path: it imports benchmarks.gpu_check_report.
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
                ),
            }
            done = subprocess.run(command, stdout=2, timeout=timeout_s, check=False, env=env)
        except subprocess.TimeoutExpired:
            figure = f"timed out after {timeout_s:.0f} s"
            return [Row(KERAS_CHECK, KERAS_SETTING, figure, "", FAIL)]
        if not out.is_file():
            figure = f"no rows: {script.name} exited with {done.returncode} (see the log above)"
            return [Row(KERAS_CHECK, KERAS_SETTING, figure, "", FAIL)]
        return rows_from_json(json.loads(out.read_text(encoding="utf-8"))["rows"])


# ---------------------------------------------------------------------------------------------
# The whole check
# ---------------------------------------------------------------------------------------------


def no_cuda_rows(sizes: Sizes, steps: int) -> list[Row]:
    """Every row, as SKIP: what a CUDA machine would check."""
    reason = "no CUDA"
    rows = []
    shape = sizes.forget_mult_shape
    for dtype, tol in FORGET_MULT_TOLERANCES.items():
        for direction in ("forward", "backward"):
            setting = forget_mult_setting(dtype, direction, shape)
            rows.append(skip_row("forget-mult triton", setting, reason, tol.describe()))
    fp32 = FORGET_MULT_TOLERANCES[torch.float32]
    setting = forget_mult_setting(torch.float32, "both", shape)
    rows.append(skip_row("forget-mult scan", setting, reason, fp32.describe()))
    rows.append(skip_row("forget-mult dispatch", "cuda", reason, "forget_mult_triton"))
    for precision in PRECISIONS:
        for arch in ARCHS:
            setting = _training_setting(arch, precision, sizes, steps)
            rows.append(skip_row("LM training", setting, reason, _training_target()))
    for precision in PRECISIONS:
        rows.append(skip_row("speed", _speed_setting(precision), reason, _speed_target()))
    rows.append(skip_row("NCCL all_reduce", "2 processes, 1M fp32, sum", reason, "exact (diff 0)"))
    rows.append(skip_row(KERAS_CHECK, KERAS_SETTING, reason))
    return rows


def run_checks(
    device: torch.device,
    sizes: Sizes,
    steps: int,
    skip: Sequence[str],
    tf_python: Path | None,
    quick: bool,
    verbose: bool = False,
) -> list[Row]:
    """Every part not in ``skip``, in order; each part's failures become rows, never a crash."""
    rows: list[Row] = []
    if "forget-mult" not in skip:
        rows += forget_mult_rows(device, sizes.forget_mult_shape)
        rows.append(dispatch_row(device))
    if "train" not in skip:
        runs = run_training(sizes, steps, device)
        rows += training_rows(runs, sizes, steps)
        rows += speed_rows(runs)
    if "nccl" not in skip:
        rows.append(nccl_row(torch.cuda.device_count()))
    if "keras" not in skip:
        torch.cuda.empty_cache()  # TensorFlow takes GPU memory in the next process
        rows += keras_rows(tf_python, quick, verbose)
    return rows


def environment() -> dict[str, Any]:
    """Versions and devices, for the log and ``--json-out``."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
    return info


def _parse_device(ctx: click.Context, param: click.Parameter, value: str) -> torch.device:
    """``--device``: a CUDA device (``cuda`` or ``cuda:N``), checked before anything runs."""
    del ctx, param
    try:
        device = torch.device(value)
    except RuntimeError:
        raise click.BadParameter(f"{value!r} is not a device; use cuda or cuda:N") from None
    if device.type != "cuda":
        raise click.BadParameter(f"the GPU check runs on cuda or cuda:N, not {value!r}")
    return device


def _no_cuda_message() -> str:
    build = (
        "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    )
    return (
        f"CUDA not available: torch {torch.__version__} ({build}) sees no GPU, so nothing was "
        "run and every check below is SKIP."
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--steps",
    type=click.IntRange(min=4, max=200),
    default=30,
    show_default=True,
    help="Optimizer steps per LM training run (6 runs: 2 archs x fp32/fp16/bf16).",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Small sizes (2x256 layers, emb 128, vocab 8k, batch 16x35) instead of "
    "MultiFiT/ULMFiT's (4x1552 QRNN, 3x1152 AWD-LSTM, emb 400, vocab 30k, batch 64x70).",
)
@click.option(
    "--device",
    default="cuda",
    show_default=True,
    callback=_parse_device,
    help="The CUDA device to check (cuda or cuda:N); NCCL uses GPUs 0 and 1.",
)
@click.option(
    "--skip",
    "skip",
    multiple=True,
    type=click.Choice(PARTS),
    help="Leave a part out (repeatable).",
)
@click.option(
    "--tf-python",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_TF_PYTHON,
    show_default=True,
    help="Python of the TensorFlow environment, which runs benchmarks/gpu_check_keras.py.",
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the table (rows, versions, GPUs) to this JSON file.",
)
@verbose_option
def main(
    steps: int,
    quick: bool,
    device: torch.device,
    skip: tuple[str, ...],
    tf_python: Path,
    json_out: Path | None,
    verbose: bool,
) -> None:
    """Check the CUDA paths: Triton forget-mult parity, fp32/fp16/bf16 LM training, QRNN vs
    AWD-LSTM speed, NCCL and Keras' cuDNN LSTM; print one table.

    Exits 1 when a parity or training check fails, 0 otherwise (also without CUDA, after
    saying so). Bounded to stay under 5 minutes on one GPU (not yet timed on one); --quick is
    faster.
    """
    setup_logging(verbose)
    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    info = environment()
    if not torch.cuda.is_available():
        click.echo(_no_cuda_message())
        rows = no_cuda_rows(sizes, steps)
    else:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise click.BadParameter(
                f"{device} does not exist: {torch.cuda.device_count()} GPU(s)",
                param_hint="--device",
            )
        torch.cuda.set_device(device)
        logger.info("checking %s: %s", device, info)
        rows = run_checks(device, sizes, steps, skip, tf_python, quick, verbose)
    seconds = time.perf_counter() - started
    click.echo(format_table(rows))
    click.echo(f"{summary_line(rows)}; {seconds:.0f} s")
    if json_out is not None:
        write_json(
            json_out,
            {
                "rows": rows_to_json(rows),
                "environment": info,
                "sizes": dataclasses.asdict(sizes),
                "steps": steps,
                "seconds": round(seconds, 1),
            },
        )
    sys.exit(exit_code(rows))


if __name__ == "__main__":
    main()
