"""The serving benchmark's options, table and target lines (no timing is run or asserted)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import bench_serve as bs


def test_defaults_put_the_export_beside_the_task_dir():
    args = bs.parse_args(["--task-dir", "runs/x/classifier"])
    assert args.export_dir == Path("runs/x/classifier_export")
    assert args.threads == 1 and args.batch_size == 64
    assert bs.parse_args(["--export-dir", "e"]).export_dir == Path("e")


def rows(torch_ms: float, tflite_ms: float, int8_bytes: int) -> dict[str, bs.Row]:
    table = {
        "pytorch": bs.Row("pytorch", 4_000_000, [torch_ms / 1e3] * 3, 800.0, 1e-7, 1.0),
        "keras": bs.Row("keras", 4_500_000, [9e-3] * 3, 500.0, 0.0, 1.0),
        "tflite": bs.Row("tflite", 4_000_000, [tflite_ms / 1e3] * 3, 1600.0, 2e-7, 1.0),
        "tflite_int8": bs.Row("tflite_int8", int8_bytes, [1.5e-3] * 3, 2000.0, 1e-2, 0.98),
        "onnx": bs.Row("onnx"),  # not measured: dashes
    }
    return table


def test_table_has_ratios_against_pytorch():
    text = bs.format_table(rows(torch_ms=8.0, tflite_ms=2.0, int8_bytes=1_200_000), 64)
    lines = text.splitlines()
    assert "torch/x p50" in lines[0] and "b64 sent/s" in lines[0]
    tflite = next(line for line in lines if line.startswith("tflite "))
    assert "4.00x" in tflite and "2.00x" in tflite  # 8 / 2 ms; 1600 / 800 sent/s
    onnx = next(line for line in lines if line.startswith("onnx"))
    assert onnx.split()[-1] == "-"


def test_targets_pass_and_miss():
    report = {"artifacts": {"tflite_int8": {"parity": {"texts": 20, "label_agreement": 0.95}}}}
    lines = bs.check_targets(rows(torch_ms=8.0, tflite_ms=2.0, int8_bytes=1_200_000), report)
    assert lines[0].startswith("PASS") and "tflite_int8" in lines[0]  # 1.5 ms beats 8 ms by 5.3x
    assert lines[1].startswith("PASS") and "30.0%" in lines[1]
    assert "label agreement with Keras 95.0%" in lines[2]
    lines = bs.check_targets(rows(torch_ms=2.5, tflite_ms=2.0, int8_bytes=2_000_000), {})
    assert lines[0].startswith("MISS") and lines[1].startswith("MISS") and len(lines) == 2
