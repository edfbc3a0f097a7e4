"""Stage 02's models work in TensorFlow Text's in-graph tokenizer, id for id.

The conversion stage exports a SavedModel that tokenizes with
``tensorflow_text.SentencepieceTokenizer``; this checks that it reads our ``.model`` files and
gives exactly the ids stage 03 wrote with sentencepiece (``<s>`` … ``</s>``, ``<pad>`` = 1).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import sentencepiece

from pretraining_utils.demo_corpus import write_demo_corpus
from pretraining_utils.spm import SpmConfig, build_spm
from tests.helpers import SHARED_DATA
from ulmfit_core.ids import SPECIAL_IDS

tf = pytest.importorskip("tensorflow")
tf_text = pytest.importorskip("tensorflow_text")

SENT200 = SHARED_DATA / "sent200.tsv"
EXTRA = ["", "Zürich — naïve café, 1998 and 日本語 ☃", "  spaced   out  "]


def sentences() -> list[str]:
    with open(SENT200, encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tf_spm") / "demo.txt"
    write_demo_corpus(path, max_bytes=200_000)
    return path


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def model_path(request, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"tf_spm_{request.param}") / "m"
    return build_spm(SpmConfig(corpus, 500, out, model_type=request.param)).model_path


def batch(corpus: Path) -> list[str]:
    return sentences() + corpus.read_text(encoding="utf-8").split("\n")[:100] + EXTRA


def test_tf_text_ids_equal_sentencepiece(model_path, corpus):
    texts = batch(corpus)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    expected = sp.encode(texts, add_bos=True, add_eos=True)
    assert any(0 in ids for ids in expected)  # unknown characters are covered too

    tokenizer = tf_text.SentencepieceTokenizer(
        model=model_path.read_bytes(), add_bos=True, add_eos=True
    )
    got = tokenizer.tokenize(tf.constant(texts)).to_list()
    assert got == expected
    assert int(tokenizer.vocab_size()) == sp.get_piece_size() == 500


def test_tf_text_special_ids(model_path):
    tokenizer = tf_text.SentencepieceTokenizer(model=model_path.read_bytes())
    pieces = list(SPECIAL_IDS)
    assert tokenizer.string_to_id(tf.constant(pieces)).numpy().tolist() == [0, 1, 2, 3]
    assert int(tokenizer.string_to_id("<pad>")) == 1
    assert [p.decode() for p in tokenizer.id_to_string(tf.constant([0, 1, 2, 3])).numpy()] == pieces


def test_tf_text_in_a_graph(model_path):
    """Inside tf.function, as in the exported SavedModel, with padding to a dense batch."""
    texts = sentences()[:16]
    tokenizer = tf_text.SentencepieceTokenizer(
        model=model_path.read_bytes(), add_bos=True, add_eos=True
    )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(strings):
        return tokenizer.tokenize(strings).to_tensor(default_value=SPECIAL_IDS["<pad>"])

    dense = tokenize(tf.constant(texts)).numpy()
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    for row, ids in zip(dense, sp.encode(texts, add_bos=True, add_eos=True), strict=True):
        assert row[: len(ids)].tolist() == ids
        assert (row[len(ids) :] == 1).all()
