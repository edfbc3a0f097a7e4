"""Time the QRNN forget-mult and layer against fastai 2.2.7's loop and torch's LSTM.

Prints one table per section with forward+backward tokens/s and the ratios. On CPU the target
is ours / fastai 2.2.7 loop >= 3x for the forget-mult. On CUDA, when available, the same runs
on the GPU.

    python -m benchmarks.bench_qrnn              # about 30 s on 2 cores
    python -m benchmarks.bench_qrnn --reps 20 --threads 4

Timings are the minimum over interleaved repetitions (implementations take turns), because on
a shared machine the minimum is the least disturbed measurement. The layer section uses batch 16
on CPU (64 on CUDA) so the LSTM runs stay short; ``--layer-batch`` changes it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.timing import best_times
from ulmfit_torch import qrnn
from ulmfit_torch.forget_mult import forget_mult_scan, select_forget_mult
from ulmfit_torch.forget_mult.sequential import _time_major_empty

TARGET = 3.0
FORGET_MULT_SHAPES = [(64, 70, 1552), (32, 200, 400)]  # (batch, time, hidden)


def fastai_227_forget_mult(x, f, first_h=None):
    """fastai 2.2.7's ``forget_mult_CPU`` (batch first, forward), as its source has it.

    ``split(1)`` views, four autograd ops per step into a Python list, one ``cat`` at the end.
    """
    result = []
    forgets = f.split(1, dim=1)
    inputs = x.split(1, dim=1)
    prev_h = None if first_h is None else first_h.unsqueeze(1)
    for i in range(len(inputs)):
        if prev_h is None:
            prev_h = inputs[i] * forgets[i]
        else:
            prev_h = inputs[i] * forgets[i] + (1 - forgets[i]) * prev_h
        result.append(prev_h)
    return torch.cat(result, dim=1)


class TightLoop(torch.autograd.Function):
    """Alternative: no chunks, a tight per-step loop into preallocated tensors.

    Forward is ``d = z_t - h``, ``h_t = h + f_t*d`` (two in-place ops per step). Backward is
    five ops per step (``dh``, ``dz``, ``z - h_{t-1}``, ``df``, carry).
    """

    @staticmethod
    def forward(ctx, z, f, h0):
        out = _time_major_empty(z)
        diff = torch.empty_like(out[:, 0])
        h = h0
        for z_t, f_t, out_t in zip(z.unbind(1), f.unbind(1), out.unbind(1), strict=True):
            if h is None:
                torch.mul(f_t, z_t, out=out_t)
            else:
                torch.sub(z_t, h, out=diff)
                torch.addcmul(h, f_t, diff, out=out_t)
            h = out_t
        ctx.save_for_backward(z, f, h0, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        z, f, h0, out = ctx.saved_tensors
        dz, df = _time_major_empty(z), _time_major_empty(f)
        dh, carry, diff = (torch.zeros_like(out[:, 0]) for _ in range(3))
        for t in range(z.shape[1] - 1, -1, -1):
            torch.add(grad[:, t], carry, out=dh)
            torch.mul(dh, f[:, t], out=dz[:, t])
            h_prev = out[:, t - 1] if t > 0 else h0
            if h_prev is None:
                torch.mul(dh, z[:, t], out=df[:, t])
            else:
                torch.sub(z[:, t], h_prev, out=diff)
                torch.mul(dh, diff, out=df[:, t])
            torch.sub(dh, dz[:, t], out=carry)
        return dz, df, (carry if h0 is not None else None)


def tight_loop(z, f, h0=None):
    return TightLoop.apply(z, f, h0)


def forget_mult_step(fn, z, f, grad) -> Callable[[], object]:
    def run():
        out = fn(z, f, None)
        return torch.autograd.grad(out, (z, f), grad)

    return run


def bench_forget_mult(device: torch.device, reps: int, sync) -> list[tuple]:
    """fastai's loop gets gates as its layer made them (batch first); ours as ``QRNNLayer`` makes
    them (time-major storage seen batch first), and batch first as well for comparison."""
    rows = []
    for batch, seq_len, hidden in FORGET_MULT_SHAPES:
        gen = torch.Generator().manual_seed(0)
        shape = (batch, seq_len, hidden)
        tensors = [torch.randn(shape, generator=gen) for _ in range(3)]
        tensors[0], tensors[1] = tensors[0].tanh(), tensors[1].sigmoid()
        z, f, grad = (t.to(device) for t in tensors)
        z_tm, f_tm, grad_tm = (t.transpose(0, 1).contiguous().transpose(0, 1) for t in (z, f, grad))
        z, f, z_tm, f_tm = (t.requires_grad_() for t in (z, f, z_tm, f_tm))
        ours = select_forget_mult(device)
        candidates = {
            "fastai 2.2.7 loop": forget_mult_step(fastai_227_forget_mult, z, f, grad),
            f"ours ({ours.__name__})": forget_mult_step(ours, z_tm, f_tm, grad_tm),
            "ours, batch-first inputs": forget_mult_step(ours, z, f, grad),
        }
        if device.type == "cpu":
            candidates["alt: tight per-step loop"] = forget_mult_step(
                tight_loop, z_tm, f_tm, grad_tm
            )
            candidates["alt: log-depth scan"] = forget_mult_step(
                forget_mult_scan, z_tm, f_tm, grad_tm
            )
        best = best_times(candidates, reps, sync)
        base = best["fastai 2.2.7 loop"]
        for name, seconds in best.items():
            rows.append((str(shape), name, seconds, batch * seq_len / seconds, base / seconds))
    return rows


def layer_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], object]:
    params = [p for p in module.parameters() if p.requires_grad]

    def run():
        out = module(x)[0]
        return torch.autograd.grad(out, [x, *params], grad)

    return run


def bench_layers(device, batch, seq_len, hidden, reps, sync) -> list[tuple]:
    rows = []
    for n_in in (400, hidden):
        torch.manual_seed(0)
        x = torch.randn(batch, seq_len, n_in, device=device, requires_grad=True)
        grad = torch.randn(batch, seq_len, hidden, device=device)
        ours = qrnn.QRNNLayer(n_in, hidden, window=1).to(device)
        lstm = nn.LSTM(n_in, hidden, batch_first=True).to(device)
        candidates = {"nn.LSTM": layer_step(lstm, x, grad), "QRNNLayer": layer_step(ours, x, grad)}
        if device.type == "cpu":
            candidates["QRNNLayer, fastai 2.2.7 loop"] = with_forget_mult(
                fastai_227_forget_mult, layer_step(ours, x, grad)
            )
        best = best_times(candidates, reps, sync)
        base = best["nn.LSTM"]
        label = f"{n_in}->{hidden}, ({batch}, {seq_len})"
        for name, seconds in best.items():
            rows.append((label, name, seconds, batch * seq_len / seconds, base / seconds))
    return rows


def with_forget_mult(fn, run: Callable[[], object]) -> Callable[[], object]:
    def patched():
        saved = qrnn.forget_mult
        qrnn.forget_mult = fn
        try:
            return run()
        finally:
            qrnn.forget_mult = saved

    return patched


def print_table(title: str, rows: list[tuple], ratio_name: str) -> None:
    print(f"\n{title}")
    header = f"{'shape':<26} {'implementation':<30} {'ms':>9} {'tokens/s':>12} {ratio_name:>12}"
    print(header)
    print("-" * len(header))
    for shape, name, seconds, tokens, ratio in rows:
        print(f"{shape:<26} {name:<30} {seconds * 1e3:9.2f} {tokens:12,.0f} {ratio:11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per forget-mult")
    parser.add_argument("--layer-reps", type=int, default=3, help="timed repetitions per layer")
    parser.add_argument("--layer-batch", type=int, default=16)
    parser.add_argument("--layer-seq", type=int, default=70)
    parser.add_argument("--hidden", type=int, default=1552)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    # Touch 1 GiB once: on a fresh VM the first use of each page is far slower than later reuse,
    # which would penalise whichever implementation happens to run first.
    torch.empty(1 << 28).fill_(1.0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32")

    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    summary = []
    for device in devices:
        sync = torch.cuda.synchronize if device.type == "cuda" else _no_sync
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        rows = bench_forget_mult(device, args.reps, sync)
        print_table(f"forget-mult forward+backward on {name}", rows, "vs fastai")
        summary += [(name, shape, ratio) for shape, impl, _, _, ratio in rows if "ours (" in impl]
        batch = args.layer_batch if device.type == "cpu" else 4 * args.layer_batch
        rows = bench_layers(device, batch, args.layer_seq, args.hidden, args.layer_reps, sync)
        print_table(f"one layer forward+backward on {name}", rows, "vs LSTM")

    print()
    for device_name, shape, ratio in summary:
        line = f"forget-mult on {device_name} {shape}: ours / fastai 2.2.7 loop = {ratio:.2f}x"
        if device_name == "CPU":
            line += f" (target >= {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'})"
        print(line)


def _no_sync() -> None:
    pass


if __name__ == "__main__":
    main()
