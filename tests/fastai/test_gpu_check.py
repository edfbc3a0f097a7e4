"""The GPU check (benchmarks/gpu_check.py) on the CPU: its CLI, table, verdict logic, the no-CUDA
path, and its check functions on tiny sizes through their device parameter, so that the first
run on a GPU does not stop at a typo."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from benchmarks import gpu_check
from benchmarks.gpu_check import (
    Comparison,
    Sizes,
    compare,
    dispatch_row,
    forget_mult_rows,
    keras_rows,
    loss_falls,
    nccl_row,
    run_training,
    speed_rows,
    tokens_per_second,
    training_rows,
)
from benchmarks.gpu_check_report import (
    FAIL,
    PASS,
    SKIP,
    Row,
    Tolerance,
    error_figure,
    exit_code,
    format_table,
    parity_row,
    rows_from_json,
    rows_to_json,
    summary_line,
)
from benchmarks.gpu_check_train import TrainRun, train_steps
from ulmfit_torch.forget_mult import forget_mult_cpu, forget_mult_reference

TINY = Sizes(
    vocab_size=50,
    emb_size=8,
    qrnn_hidden=12,
    qrnn_layers=2,
    lstm_hidden=12,
    lstm_layers=2,
    batch_size=4,
    bptt=6,
)
TINY_SHAPE = (2, 5, 3)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: thread handoffs cost more than they give on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_help_explains_the_options():
    result = CliRunner().invoke(gpu_check.main, ["--help"])
    assert result.exit_code == 0, result.output
    for option in ("--steps", "--quick", "--json-out", "--skip", "--device", "--tf-python"):
        assert option in result.output
    assert "one table" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--steps", "0"],
        ["--steps", "1000"],
        ["--device", "cpu"],
        ["--device", "not-a-device"],
        ["--skip", "everything"],
    ],
)
def test_bad_options_are_usage_errors(args):
    result = CliRunner().invoke(gpu_check.main, args)
    assert result.exit_code == 2, result.output


def test_without_cuda_it_says_so_and_exits_0(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "check.json"
    result = CliRunner().invoke(gpu_check.main, ["--quick", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("CUDA not available: torch ")
    table = [line for line in lines if line.startswith("| ")][1:]  # without the header
    assert table and all(line.rstrip().endswith("| SKIP   |") for line in table)
    assert lines[-1].startswith(f"0 PASS, 0 FAIL, {len(table)} SKIP")
    saved = json.loads(out.read_text(encoding="utf-8"))
    rows = rows_from_json(saved["rows"])
    assert len(rows) == len(table) and {row.verdict for row in rows} == {SKIP}
    assert {row.check for row in rows} >= {
        "forget-mult triton",
        "LM training",
        "speed",
        "NCCL all_reduce",
        "keras cuDNN LSTM",
    }
    assert saved["sizes"]["vocab_size"] == gpu_check.QUICK.vocab_size
    assert saved["environment"]["cuda_available"] is False


def test_full_sizes_are_multifit_and_ulmfit():
    full = gpu_check.FULL
    assert (full.qrnn_layers, full.qrnn_hidden, full.lstm_layers, full.lstm_hidden) == (
        4,
        1552,
        3,
        1152,
    )
    assert (full.emb_size, full.batch_size, full.bptt, full.vocab_size) == (400, 64, 70, 30_000)
    assert full.forget_mult_shape == (64, 70, 1552)
    assert full.describe("qrnn") == "4x1552, emb 400, vocab 30k, 64x70"


# ---------------------------------------------------------------------------------------------
# Rows, verdicts, the table
# ---------------------------------------------------------------------------------------------


def test_tolerance_is_atol_plus_rtol_and_nan_never_holds():
    tol = Tolerance(atol=1e-5, rtol=1e-2)
    got, want = torch.tensor([1.005, 0.0]), torch.tensor([1.0, 0.0])
    within = compare(got, want, tol)
    assert within.max_diff == pytest.approx(5e-3, rel=1e-3)
    assert tol.holds(within.excess)
    beyond = compare(torch.tensor([1.02, 0.0]), want, tol)
    assert not tol.holds(beyond.excess)
    assert not tol.holds(compare(torch.tensor([math.nan, 0.0]), want, tol).excess)
    assert math.isnan(compare(torch.zeros(3), torch.zeros(2), tol).max_diff)
    assert compare(torch.zeros(0), torch.zeros(0), tol) == Comparison(0.0, 0.0)
    assert "|" not in tol.describe()  # the table is a Markdown pipe table


def test_parity_row_verdicts():
    tol = Tolerance(1e-5)
    assert parity_row("c", "s", 1e-6, 1e-6, tol).verdict == PASS
    assert parity_row("c", "s", 1e-3, 1e-3, tol).verdict == FAIL
    nan_row = parity_row("c", "s", math.nan, math.nan, tol)
    assert nan_row.verdict == FAIL and "nan" in nan_row.figure and nan_row.value is None


def test_exit_code_counts_gating_failures_only():
    passed = Row("a", "s", "f", "t", PASS)
    skipped = Row("b", "s", "f", "t", SKIP)
    slow = Row("speed", "s", "1.2x", ">= 2x", FAIL, gating=False)
    broken = Row("c", "s", "f", "t", FAIL)
    assert exit_code([passed, skipped, slow]) == 0
    assert exit_code([passed, broken]) == 1
    assert exit_code([]) == 0
    assert summary_line([passed, skipped, slow]).startswith("1 PASS, 1 FAIL, 1 SKIP (1 speed")


def test_table_is_aligned_with_one_column_each():
    rows = [
        Row(
            "forget-mult triton", "fp32 forward", "max abs diff 1.0e-07", "abs diff <= 1e-05", PASS
        ),
        Row("speed", "tokens/s", "1.50x", ">= 2x", FAIL, gating=False),
        Row("NCCL", "2 processes", "skipped: 1 GPU", "", SKIP),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split("|")[1].strip() == "check"
    assert set(lines[1]) <= {"|", "-"}
    assert len({len(line) for line in lines}) == 1
    assert all(line.count("|") == 6 for line in lines)
    assert "FAIL (info)" in lines[3] and lines[2].rstrip().endswith("PASS        |")


def test_rows_round_trip_through_json():
    rows = [Row("a", "s", "f", "t", PASS, value=1.5), Row("b", "s", "f", "t", SKIP, False)]
    assert rows_from_json(json.loads(json.dumps(rows_to_json(rows)))) == rows
    with pytest.raises(ValueError, match="verdict"):
        Row("a", "s", "f", "t", "OK")


def test_error_figure_finds_the_cause_in_a_keras_message():
    err = ValueError(
        "Exception encountered when calling WeightDropLSTM.call().\n\n"
        "\x1b[1muse_cudnn=True, but cuDNN cannot run this layer here\x1b[0m\n\nArguments..."
    )
    assert error_figure(err) == (
        "error: ValueError: use_cudnn=True, but cuDNN cannot run this layer here"
    )
    assert len(error_figure(RuntimeError("x" * 500))) == 100


def test_loss_falls():
    assert loss_falls([10.0, 9.5, 9.0, 8.0]) == (True, "")
    ok, why = loss_falls([10.0, 10.0, 9.99, 9.99])
    assert not ok and why.startswith("did not fall")
    ok, why = loss_falls([10.0, math.nan, 8.0, 7.0])
    assert not ok and why == "loss nan at step 2"
    assert loss_falls([10.0, 9.0, 8.0, math.inf])[0] is False
    assert loss_falls([10.0])[0] is False
    assert loss_falls([])[0] is False


def test_tokens_per_second_is_the_median_step_after_warmup():
    # Warm-up steps (compilation) are slow; one stray slow step later does not move the median.
    seconds = [5.0, 1.0, 1.0, 0.5, 0.5, 0.5, 3.0]
    assert tokens_per_second(100, seconds, warmup=3) == pytest.approx(200.0)
    assert tokens_per_second(100, [5.0, 0.25], warmup=3) == pytest.approx(400.0)
    assert tokens_per_second(100, [2.0], warmup=3) == pytest.approx(50.0)
    assert math.isnan(tokens_per_second(100, []))


def _run(arch: str, losses: list[float], seconds: float = 0.1, **kwargs) -> TrainRun:
    return TrainRun(arch, "fp32", losses, [seconds] * len(losses), 4480, **kwargs)


def test_training_rows_verdicts():
    runs = [
        _run("qrnn", [10.0, 9.0, 8.0, 7.0]),
        _run("awd-lstm", [10.0, 10.0, 10.0, 10.0]),
        _run("qrnn", [10.0, math.nan]),
        _run("awd-lstm", [10.0], diverged="loss inf at step 2"),
        Row("LM training", "QRNN fp16", "error: RuntimeError: CUDA", "t", FAIL),
        TrainRun("qrnn", "fp16", [10.0, 8.0], [0.1, 0.1], 1, logits_dtype="torch.float32"),
        TrainRun("qrnn", "bf16", [10.0, 8.0], [0.1, 0.1], 1, logits_dtype="torch.bfloat16"),
    ]
    rows = training_rows(runs, TINY, 4)
    assert [row.verdict for row in rows] == [PASS, FAIL, FAIL, FAIL, FAIL, FAIL, PASS]
    assert rows[5].figure == "logits in torch.float32, not torch.float16"
    assert rows[0].figure == "loss 10.000 -> 7.000"
    assert rows[0].setting == "QRNN fp32, 2x12, emb 8, vocab 50, 4x6, 4 steps"
    assert rows[2].figure == "loss nan at step 2"
    assert rows[3].figure == "loss inf at step 2"
    assert rows[4] is runs[4]


def test_speed_rows_ratio_and_not_gating():
    runs = [_run("qrnn", [1.0] * 6, seconds=0.1), _run("awd-lstm", [1.0] * 6, seconds=0.25)]
    (row,) = speed_rows(runs)
    assert row.value == pytest.approx(2.5) and row.verdict == PASS and not row.gating
    assert row.figure == "44.8k / 17.9k tok/s = 2.50x"
    (slow,) = speed_rows([_run("qrnn", [1.0] * 6, 0.2), _run("awd-lstm", [1.0] * 6, 0.25)])
    assert slow.verdict == FAIL and exit_code([slow]) == 0
    assert speed_rows([runs[0]]) == []  # no AWD-LSTM run to compare with


# ---------------------------------------------------------------------------------------------
# The check functions, on the CPU with tiny sizes
# ---------------------------------------------------------------------------------------------


def test_forget_mult_rows_pass_for_the_cpu_implementation():
    rows = forget_mult_rows("cpu", TINY_SHAPE, impl=forget_mult_cpu)
    assert [(row.check, row.verdict) for row in rows] == [
        ("forget-mult cpu", PASS),
        ("forget-mult cpu", PASS),
        ("forget-mult cpu", PASS),
        ("forget-mult cpu", PASS),
        ("forget-mult scan", PASS),
    ]
    assert [row.setting for row in rows[:2]] == [
        "fp32 forward (2, 5, 3), with h0",
        "fp32 backward (dz, df, dh0)",
    ]
    assert all(row.value is not None and row.value < 1e-2 for row in rows)


def _ignores_h0(z, f, h0=None):
    del h0
    return forget_mult_reference(z, f, None)


def _returns_float32(z, f, h0=None):
    return forget_mult_cpu(z.float(), f.float(), None if h0 is None else h0.float())


def _crashes(z, f, h0=None):  # noqa: ARG001 - a forget-mult's signature
    raise RuntimeError("triton: out of resources")


def test_forget_mult_rows_catch_wrong_implementations():
    wrong = forget_mult_rows("cpu", TINY_SHAPE, impl=_ignores_h0, fallback=None)
    assert {row.verdict for row in wrong} == {FAIL}
    dtype_rows = forget_mult_rows("cpu", TINY_SHAPE, impl=_returns_float32, fallback=None)
    bf16_forward = dtype_rows[2]
    assert bf16_forward.verdict == FAIL and "returned torch.float32" in bf16_forward.figure
    crashed = forget_mult_rows("cpu", TINY_SHAPE, impl=_crashes, fallback=None)
    assert len(crashed) == 4 and all("out of resources" in row.figure for row in crashed)


def test_dispatch_row_names_the_implementation():
    row = dispatch_row("cpu")
    assert (row.figure, row.verdict) == ("forget_mult_cpu", FAIL)  # only CUDA gets Triton


@pytest.fixture(scope="module")
def tiny_runs() -> list:
    return run_training(TINY, 6, "cpu", precisions=("fp32",))


def test_training_steps_run_on_cpu(tiny_runs):
    assert [(r.arch, r.precision) for r in tiny_runs] == [("qrnn", "fp32"), ("awd-lstm", "fp32")]
    for run in tiny_runs:
        assert isinstance(run, TrainRun) and run.diverged is None
        assert len(run.losses) == len(run.step_seconds) == 6
        assert all(math.isfinite(loss) for loss in run.losses)
        # A fresh model on ids from 46 classes starts near ln(vocab).
        assert run.losses[0] == pytest.approx(math.log(TINY.vocab_size), abs=0.3)
        assert run.tokens_per_step == TINY.batch_size * TINY.bptt
        assert run.logits_dtype == "torch.float32"
    rows = training_rows(tiny_runs, TINY, 6) + speed_rows(tiny_runs)
    assert [row.check for row in rows] == ["LM training", "LM training", "speed"]


@pytest.mark.parametrize("arch", ["qrnn", "awd-lstm"])
def test_training_loss_falls_on_the_repeated_batch(arch):
    run = train_steps(
        arch,
        "fp32",
        vocab_size=50,
        emb_size=8,
        hidden_size=12,
        n_layers=2,
        batch_size=4,
        bptt=6,
        steps=8,
        device="cpu",
        lr=3e-2,  # a tiny model needs a larger step than stage 04's 5e-3 to move in 8 steps
    )
    assert loss_falls(run.losses) == (True, "")


def test_mixed_precision_needs_cuda():
    with pytest.raises(ValueError, match="needs CUDA"):
        train_steps(
            "qrnn", "bf16", vocab_size=50, emb_size=8, hidden_size=12, n_layers=2,
            batch_size=4, bptt=6, steps=4, device="cpu",
        )  # fmt: skip


def test_nccl_is_skipped_with_one_gpu():
    row = nccl_row(1)
    assert (row.verdict, row.figure) == (SKIP, "skipped: 1 GPU")


@pytest.mark.slow
def test_allreduce_runs_in_two_processes_with_gloo():
    assert gpu_check.allreduce_check("gloo", "cpu", timeout_s=60) == 0.0


# ---------------------------------------------------------------------------------------------
# The Keras part's hand-over (a stand-in script: TensorFlow is not in this environment)
# ---------------------------------------------------------------------------------------------


def _stand_in(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "stand_in.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    return script


def test_keras_rows_are_read_back_from_the_tf_part(tmp_path):
    script = _stand_in(
        tmp_path,
        """
        import json, sys
        args = sys.argv[1:]
        assert "--no-table" in args and "--quick" in args, args
        out = args[args.index("--json-out") + 1]
        row = {"check": "keras cuDNN LSTM", "setting": "s", "figure": "max abs diff 1e-7",
               "target": "t", "verdict": "PASS", "gating": True, "value": 1e-7}
        json.dump({"rows": [row]}, open(out, "w"))
        print("a table would go here")  # stdout: must not reach the merged table's stdout
        """,
    )
    rows = keras_rows(Path(sys.executable), quick=True, script=script)
    assert rows == [Row("keras cuDNN LSTM", "s", "max abs diff 1e-7", "t", PASS, True, 1e-7)]


def test_keras_part_crash_or_absence_is_reported(tmp_path):
    crash = _stand_in(tmp_path, "import sys; sys.exit(3)")
    (row,) = keras_rows(Path(sys.executable), quick=False, script=crash)
    assert row.verdict == FAIL and "exited with 3" in row.figure
    (missing,) = keras_rows(tmp_path / "no-python", quick=False)
    assert missing.verdict == SKIP and "no TF python" in missing.figure
    hang = _stand_in(tmp_path, "import time; time.sleep(30)")
    (slow,) = keras_rows(Path(sys.executable), quick=False, script=hang, timeout_s=1)
    assert slow.verdict == FAIL and "timed out" in slow.figure


# ---------------------------------------------------------------------------------------------
# The whole flow, as far as a CPU lets it run
# ---------------------------------------------------------------------------------------------


def test_run_checks_turns_every_part_into_rows_on_cpu():
    """Every part runs; what needs CUDA becomes FAIL/SKIP rows instead of an exception."""
    rows = gpu_check.run_checks(torch.device("cpu"), TINY, 6, (), tf_python=None, quick=True)
    by_check: dict[str, list[Row]] = {}
    for row in rows:
        by_check.setdefault(row.check, []).append(row)
    if "forget-mult triton" in by_check:  # no triton in the CPU environment: SKIP rows
        assert {row.verdict for row in by_check["forget-mult triton"]} == {SKIP}
    assert [row.verdict for row in by_check["forget-mult scan"]] == [PASS]
    assert by_check["forget-mult dispatch"][0].figure == "forget_mult_cpu"
    training = by_check["LM training"]
    assert len(training) == 6
    assert all(row.figure.startswith("loss ") for row in training[:2])  # fp32 ran: finite
    assert all("needs CUDA" in row.figure for row in training[2:])  # fp16, bf16 on a CPU
    assert len(by_check["speed"]) == 1  # fp32 only
    assert by_check["NCCL all_reduce"][0].verdict == SKIP
    assert by_check["keras cuDNN LSTM"][0].verdict == SKIP
    assert exit_code(rows) == 1


def test_main_on_a_cuda_machine_prints_one_table(monkeypatch, tmp_path):
    """The CUDA branch of the CLI, with the checks stubbed: one table, exit 1 on a FAIL."""
    calls = {}

    def fake_run_checks(device, sizes, steps, skip, tf_python, quick, verbose):
        calls.update(device=device, sizes=sizes, steps=steps, skip=skip, quick=quick)
        calls.update(tf_python=tf_python, verbose=verbose)
        return [Row("a", "s", "f", "t", PASS), Row("b", "s", "f", "t", FAIL)]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda _: None)
    monkeypatch.setattr(gpu_check, "environment", lambda: {"cuda_available": True})
    monkeypatch.setattr(gpu_check, "run_checks", fake_run_checks)
    out = tmp_path / "t.json"
    args = ["--steps", "5", "--skip", "nccl", "--quick", "--json-out", str(out)]
    result = CliRunner().invoke(gpu_check.main, args)
    assert result.exit_code == 1, result.output
    assert "CUDA not available" not in result.output
    assert result.output.count("| check ") == 1 and "1 PASS, 1 FAIL, 0 SKIP" in result.output
    assert calls["device"] == torch.device("cuda", 0) and calls["steps"] == 5
    assert calls["skip"] == ("nccl",) and calls["sizes"] == gpu_check.QUICK
    assert calls["tf_python"] == gpu_check.DEFAULT_TF_PYTHON and calls["verbose"] is False
    assert len(json.loads(out.read_text(encoding="utf-8"))["rows"]) == 2
    missing = CliRunner().invoke(gpu_check.main, ["--device", "cuda:3"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
