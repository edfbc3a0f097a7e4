"""The shared machinery every stage relies on: atomic outputs and the ordered parallel map."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from pretraining_utils.parallel import ordered_map
from ulmfit_core.artifacts import atomic_dir, atomic_file, sha256_file, write_json


def test_atomic_file_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.txt.tmp-")
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert os.listdir(target.parent) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_file_leaves_nothing_on_failure(tmp_path, error):
    target = tmp_path / "out.txt"
    with pytest.raises(type(error)), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise error
    assert os.listdir(tmp_path) == []


def test_atomic_file_keeps_previous_target_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError
    assert target.read_text() == "old"


def test_atomic_dir_replaces_existing_only_when_complete(tmp_path):
    target = tmp_path / "corpus"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "new.bin").write_text("half")
        raise RuntimeError
    assert sorted(os.listdir(target)) == ["old.bin"]
    with atomic_dir(target) as tmp:
        (tmp / "new.bin").write_text("new")
    assert sorted(os.listdir(target)) == ["new.bin"]
    assert sorted(os.listdir(tmp_path)) == ["corpus"]


def test_write_json_and_sha256(tmp_path):
    path = tmp_path / "meta.json"
    write_json(path, {"vocab_size": 5000, "name": "żółw"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"vocab_size": 5000, "name": "żółw"}
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def _square(x: int) -> int:
    return x * x


_OFFSET = 0


def _set_offset(offset: int) -> None:
    global _OFFSET
    _OFFSET = offset


def _add_offset(x: int) -> int:
    return x + _OFFSET


@pytest.mark.parametrize("workers", [1, 2])
def test_ordered_map_keeps_order(workers):
    assert list(ordered_map(_square, range(50), workers)) == [x * x for x in range(50)]


def test_ordered_map_runs_initializer_in_workers():
    assert list(ordered_map(_add_offset, range(5), 2, _set_offset, (100,))) == [
        100,
        101,
        102,
        103,
        104,
    ]


def test_ordered_map_reads_input_lazily():
    consumed = []

    def items():
        for i in range(1000):
            consumed.append(i)
            yield i

    results = ordered_map(_square, items(), workers=2, in_flight_per_worker=2)
    assert next(results) == 0
    # Only a bounded window is read ahead, unlike Pool.imap which drains the whole input.
    assert len(consumed) <= 2 * 2 + 1
    assert sum(results) == sum(x * x for x in range(1000))


@pytest.mark.parametrize("threads", [False, True])
def test_ordered_map_threads_or_processes_give_the_same(threads):
    assert list(ordered_map(_square, range(20), 2, threads=threads)) == [x * x for x in range(20)]
