"""Task data readers: TSV columns, label maps, tagger JSONL, validation split, truncation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ulmfit_core.errors import InputError
from ulmfit_tasks.data import (
    TextExamples,
    encode_texts,
    float_targets,
    label_indices,
    read_label_map,
    read_tagger_jsonl,
    read_tagger_label_map,
    read_tsv,
    split_validation,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_reads_the_shared_tsv_and_label_map():
    examples = read_tsv(DATA / "sent200.tsv", "sentence", "sentiment")
    assert len(examples) == 200
    labels = read_label_map(DATA / "document_classification_labels.txt")
    assert labels == ["POSITIVE", "NEGATIVE"]
    y = label_indices(examples, labels, "sent200.tsv")
    assert y.shape == (200,) and set(y.tolist()) == {0, 1}


def test_missing_column_names_the_columns_found(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\nhello\tPOSITIVE\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"missing column.*sentence.*columns found: text, label"):
        read_tsv(path, "sentence", "label")


def test_empty_files_raise(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="the file is empty"):
        read_tsv(empty, "sentence", "sentiment")
    header_only = tmp_path / "header.tsv"
    header_only.write_text("sentence\tsentiment\n", encoding="utf-8")
    with pytest.raises(InputError, match="header but no examples"):
        read_tsv(header_only, "sentence", "sentiment")
    with pytest.raises(InputError, match="label map is empty"):
        read_label_map(empty)
    with pytest.raises(InputError, match="the file is empty"):
        read_tagger_jsonl(empty, 3)


def test_unknown_labels_are_all_named():
    examples = TextExamples(("a", "b", "c"), ("POSITIVE", "MIXED", "NEUTRAL"))
    with pytest.raises(InputError, match="labels not in the label map: MIXED, NEUTRAL"):
        label_indices(examples, ["POSITIVE", "NEGATIVE"], "x.tsv")


def test_regression_targets_must_be_numbers():
    assert float_targets(TextExamples(("a",), ("2.5",)), "r.tsv").tolist() == [2.5]
    with pytest.raises(InputError, match="line 3: gold value 'high' is not a number"):
        float_targets(TextExamples(("a", "b"), ("1", "high")), "r.tsv")


def test_tagger_jsonl_and_label_map():
    names = read_tagger_label_map(DATA / "tagger_labels.json")
    assert names[0] == "O" and len(names) > 2
    sentences = read_tagger_jsonl(DATA / "conll1000.jsonl", len(names))
    assert len(sentences) == 1000
    words, tags = sentences[0]
    assert words[0] == "Following" and len(words) == len(tags)


@pytest.mark.parametrize(
    "line",
    ['{"w": 0}', '[["word", 0], ["no tag"]]', "[]", '[["word", "O"]]', "not json"],
)
def test_a_bad_tagger_line_reports_its_number(tmp_path, line):
    path = tmp_path / "t.jsonl"
    path.write_text(f'[["ok", 0]]\n{line}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"t\.jsonl, line 2: "):
        read_tagger_jsonl(path, 3)


def test_tag_ids_outside_the_label_map_raise(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('[["ok", 0], ["bad", 7]]\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"line 1: tag ids not in the label map \(0..2\): \[7\]"):
        read_tagger_jsonl(path, 3)


def test_validation_split_is_fixed_and_disjoint():
    train, valid = split_validation(50)
    again_train, again_valid = split_validation(50)
    np.testing.assert_array_equal(valid, again_valid)
    np.testing.assert_array_equal(train, again_train)
    assert len(valid) == 5 and not set(train) & set(valid)
    assert sorted([*train, *valid]) == list(range(50))


def test_long_sequences_are_truncated_and_counted(caplog):
    def encode(texts):
        return [list(range(10, 10 + len(t))) for t in texts]

    with caplog.at_level("WARNING"):
        encoded = encode_texts(encode, ["ab", "a" * 1000], max_seq_len=6)
    assert encoded.truncated == 1
    assert encoded.ids.shape == (2, 6)  # bounded by max_seq_len, not by the longest text
    assert encoded.ids[0].tolist() == [2, 10, 11, 3, 1, 1]
    assert encoded.ids[1].tolist() == [2, 10, 11, 12, 13, 14]
    assert "1 of 2 sequences truncated to 6 tokens" in caplog.text
    fixed = encode_texts(encode, ["ab"], max_seq_len=6, fixed_seq_len=8)
    assert fixed.ids.shape == (1, 8)
