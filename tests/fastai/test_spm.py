"""Stage 02: SentencePiece models with fastai's special ids, named, described and atomic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sentencepiece
from click.testing import CliRunner

from pretraining_utils.demo_corpus import write_demo_corpus
from pretraining_utils.spm import SpmConfig, build_spm, spm_model_name, trainer_arguments
from tests.helpers import load_script
from ulmfit_core.artifacts import sha256_file
from ulmfit_core.errors import InputError
from ulmfit_core.ids import SPECIAL_IDS

CLI_FLAGS = (
    "--corpus-path",
    "--vocab-size",
    "--model-prefix",
    "--model-type",
    "--character-coverage",
    "--input-sentence-size",
    "--num-threads",
    "--verbose",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spm_corpus") / "demo.txt"
    write_demo_corpus(path, max_bytes=300_000)
    return path


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("spm_model")
    return build_spm(SpmConfig(corpus, 500, out / "sub" / "demo", num_threads=2))


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_special_ids_are_fastais(built):
    sp = sentencepiece.SentencePieceProcessor(model_file=str(built.model_path))
    assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<pad>", "<s>", "</s>"]
    assert {piece: sp.piece_to_id(piece) for piece in SPECIAL_IDS} == SPECIAL_IDS
    assert (sp.unk_id(), sp.pad_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert sp.get_piece_size() == 500
    ids = sp.encode("Return the number of items.", add_bos=True, add_eos=True)
    assert ids[0] == 2 and ids[-1] == 3 and 0 not in ids


@pytest.mark.parametrize(
    ("vocab_size", "name"),
    [
        (5000, "runs/x/spm-sp5k"),
        (35000, "runs/x/spm-sp35k"),
        (5500, "runs/x/spm-sp5500"),
        (1000, "runs/x/spm-sp1k"),
        (500, "runs/x/spm-sp500"),
        (12345, "runs/x/spm-sp12345"),
    ],
)
def test_model_name(vocab_size, name):
    assert spm_model_name("runs/x/spm", vocab_size) == name
    assert spm_model_name(Path("runs/x/spm"), vocab_size) == name


def test_files_and_sidecar(built, corpus):
    out_dir = built.model_path.parent
    assert built.model_path == out_dir / "demo-sp500.model"  # the prefix's directory was made
    assert listing(out_dir) == ["demo-sp500.json", "demo-sp500.model", "demo-sp500.vocab"]
    assert len(built.vocab_path.read_text(encoding="utf-8").splitlines()) == 500
    sidecar = json.loads(built.json_path.read_text(encoding="utf-8"))
    assert sidecar["corpus_sha256"] == sha256_file(corpus) == built.corpus_sha256
    assert sidecar["corpus_path"] == str(corpus)
    assert sidecar["corpus_lines"] == len(corpus.read_text(encoding="utf-8").splitlines())
    assert sidecar["model_sha256"] == sha256_file(built.model_path)
    assert sidecar["special_ids"] == SPECIAL_IDS
    assert sidecar["vocab_size"] == 500
    assert sidecar["config"]["model_type"] == "unigram"
    assert sidecar["trainer_arguments"]["num_threads"] == 2
    assert "character_coverage" not in sidecar["trainer_arguments"]  # sentencepiece's default
    assert "input_sentence_size" not in sidecar["trainer_arguments"]
    assert sidecar["versions"]["sentencepiece"] == sentencepiece.__version__
    assert sidecar["seconds"] >= 0


def test_same_corpus_gives_same_bytes_and_spm_train_vocab(built, corpus, tmp_path):
    """No temporary path ends up in the model; the .vocab is what spm_train writes."""
    again = build_spm(SpmConfig(corpus, 500, tmp_path / "elsewhere" / "demo", num_threads=2))
    assert again.model_path.read_bytes() == built.model_path.read_bytes()
    assert again.model_sha256 == built.model_sha256
    assert str(tmp_path).encode() not in again.model_path.read_bytes()
    direct = tmp_path / "direct"
    args = trainer_arguments(SpmConfig(corpus, 500, direct, num_threads=2))
    sentencepiece.SentencePieceTrainer.train(**args, model_prefix=str(direct))
    assert built.vocab_path.read_bytes() == direct.with_suffix(".vocab").read_bytes()


def test_vocab_too_large_for_corpus(corpus, tmp_path):
    with pytest.raises(InputError) as err:
        build_spm(SpmConfig(corpus, 20000, tmp_path / "new" / "dirs" / "m"))
    message = str(err.value)
    assert message.startswith(
        f"vocab size 20000 is too large for the corpus {corpus}: it supports at most "
    )
    maximum = int(re.search(r"at most (\d+) pieces", message).group(1))
    assert 500 < maximum < 20000
    assert f"Lower --vocab-size (to <= {maximum}) or give more text." in message
    assert listing(tmp_path) == []  # nothing left behind, not even the temporary directory


def test_maximum_from_error_is_buildable(corpus, tmp_path):
    """The size the error suggests is one sentencepiece accepts."""
    with pytest.raises(InputError) as err:
        build_spm(SpmConfig(corpus, 20000, tmp_path / "m", model_type="bpe"))
    maximum = int(re.search(r"at most (\d+) pieces", str(err.value)).group(1))
    summary = build_spm(SpmConfig(corpus, maximum, tmp_path / "m", model_type="bpe"))
    assert (
        sentencepiece.SentencePieceProcessor(model_file=str(summary.model_path)).get_piece_size()
        == maximum
    )


@pytest.mark.parametrize("vocab_size", [0, 4])
def test_vocab_below_specials(corpus, tmp_path, vocab_size):
    with pytest.raises(
        InputError, match=rf"vocab size {vocab_size} is too small: .*--vocab-size >= 5"
    ):
        build_spm(SpmConfig(corpus, vocab_size, tmp_path / "m"))
    assert listing(tmp_path) == []


def test_vocab_below_required_characters(corpus, tmp_path):
    with pytest.raises(InputError) as err:
        build_spm(SpmConfig(corpus, 20, tmp_path / "m"))
    assert "vocab size 20 is too small for the corpus" in str(err.value)
    assert "Raise --vocab-size" in str(err.value) and "--character-coverage" in str(err.value)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_corpus(tmp_path, content):
    empty = tmp_path / "empty.txt"
    empty.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match="is empty: there is no text to train on"):
        build_spm(SpmConfig(empty, 100, tmp_path / "out" / "m"))
    assert listing(tmp_path) == ["empty.txt"]


def test_bpe(corpus, tmp_path):
    summary = build_spm(SpmConfig(corpus, 400, tmp_path / "bpe", model_type="bpe"))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(summary.model_path))
    assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<pad>", "<s>", "</s>"]
    text = "Return a new list containing all items from the iterable."
    assert sp.decode(sp.encode(text)) == text
    # BPE scores are the merge ranks: 0, -1, -2, ... after the special pieces.
    scores = [
        line.split("\t")[1] for line in summary.vocab_path.read_text(encoding="utf-8").splitlines()
    ]
    assert scores[4:8] == ["-0", "-1", "-2", "-3"]
    assert json.loads(summary.json_path.read_text())["trainer_arguments"]["model_type"] == "bpe"


def test_input_sentence_size_samples(corpus, tmp_path):
    """A 150-line sample cannot support a vocab the whole corpus can."""
    full = build_spm(SpmConfig(corpus, 1500, tmp_path / "full"))
    assert full.model_path.exists()
    with pytest.raises(InputError, match="too large"):
        build_spm(SpmConfig(corpus, 1500, tmp_path / "sampled", input_sentence_size=150))
    sampled = build_spm(SpmConfig(corpus, 200, tmp_path / "sampled", input_sentence_size=150))
    args = json.loads(sampled.json_path.read_text())["trainer_arguments"]
    assert args["input_sentence_size"] == 150 and args["shuffle_input_sentence"] is True


@pytest.mark.parametrize("size", [-1, 1, 100])
def test_input_sentence_size_too_small(corpus, tmp_path, size):
    with pytest.raises(InputError, match=rf"must be 0 \(all lines\) or more than 100 .*got {size}"):
        build_spm(SpmConfig(corpus, 300, tmp_path / "m", input_sentence_size=size))


def test_character_coverage_is_passed(corpus, tmp_path):
    summary = build_spm(SpmConfig(corpus, 300, tmp_path / "cov", character_coverage=1.0))
    assert (
        json.loads(summary.json_path.read_text())["trainer_arguments"]["character_coverage"] == 1.0
    )


def test_rebuild_replaces_files(corpus, tmp_path):
    first = build_spm(SpmConfig(corpus, 300, tmp_path / "m"))
    second = build_spm(SpmConfig(corpus, 300, tmp_path / "m", model_type="bpe"))
    assert first.model_path == second.model_path
    assert listing(tmp_path) == ["m-sp300.json", "m-sp300.model", "m-sp300.vocab"]
    assert json.loads(second.json_path.read_text())["config"]["model_type"] == "bpe"


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_help_lists_every_flag():
    result = CliRunner().invoke(load_script("02_build_spm").main, ["--help"])
    assert result.exit_code == 0
    for flag in CLI_FLAGS:
        assert flag in result.output


def test_cli_builds_model(corpus, tmp_path):
    args = [
        "--corpus-path",
        str(corpus),
        "--vocab-size",
        "1000",
        "--model-prefix",
        str(tmp_path / "cli" / "spm"),
        "--model-type",
        "bpe",
        "--num-threads",
        "1",
    ]
    result = CliRunner().invoke(load_script("02_build_spm").main, args)
    assert result.exit_code == 0, result.output
    assert listing(tmp_path / "cli") == ["spm-sp1k.json", "spm-sp1k.model", "spm-sp1k.vocab"]
    sidecar = json.loads((tmp_path / "cli" / "spm-sp1k.json").read_text())
    assert sidecar["trainer_arguments"]["num_threads"] == 1
    assert sidecar["trainer_arguments"]["model_type"] == "bpe"


def test_cli_error_is_one_line(corpus, tmp_path):
    args = [
        "--corpus-path",
        str(corpus),
        "--vocab-size",
        "50000",
        "--model-prefix",
        str(tmp_path / "m"),
    ]
    result = CliRunner().invoke(load_script("02_build_spm").main, args)
    assert result.exit_code == 1
    assert "Error: vocab size 50000 is too large for the corpus" in result.output
    assert "Traceback" not in result.output
    assert listing(tmp_path) == []
