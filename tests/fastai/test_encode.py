"""Stage 03: encoding equals sentencepiece's, line for line, in every format and for any workers."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
from click.testing import CliRunner

from pretraining_utils import encode as encode_module
from pretraining_utils.corpus import BinaryCorpus, BinaryCorpusWriter, token_dtype
from pretraining_utils.demo_corpus import write_demo_corpus
from pretraining_utils.encode import EncodeConfig, ExtraOptions, encode_corpus
from pretraining_utils.spm import SpmConfig, build_spm
from tests.helpers import SHARED_DATA, load_script
from ulmfit_core.artifacts import sha256_file
from ulmfit_core.errors import InputError
from ulmfit_core.ids import SPECIAL_IDS

SENT200 = SHARED_DATA / "sent200.tsv"
ODD_LINES = [
    "",  # empty lines give a line of output too
    "Zürich — naïve café, 1998 «quotes» and 日本語 ☃ ☃☃",  # rare characters: <unk>
    "   leading and trailing spaces   ",
    "tab\tseparated\twords and a carriage return\r",
    "",
]


def sentences() -> list[str]:
    with open(SENT200, encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """~200 KB of docstring prose, the 200 movie-review sentences and some odd lines."""
    directory = tmp_path_factory.mktemp("encode_corpus")
    demo = directory / "demo.txt"
    write_demo_corpus(demo, max_bytes=200_000)
    lines = demo.read_text(encoding="utf-8").split("\n")[:-1]
    text = "\n".join(lines[:500] + ODD_LINES + sentences() + lines[500:] + ODD_LINES) + "\n"
    path = directory / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model(corpus, tmp_path_factory) -> Path:
    return build_spm(SpmConfig(corpus, 400, tmp_path_factory.mktemp("encode_spm") / "m")).model_path


@pytest.fixture(scope="module")
def sp(model) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(model))


def input_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines.pop() == ""
    return lines


def run(corpus: Path, model: Path, save_path: Path, progress=None, **kwargs):
    return encode_corpus(EncodeConfig(corpus, model, save_path, **kwargs), progress=progress)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---- text formats --------------------------------------------------------------------------------


def test_id_format_equals_sentencepiece_for_every_line(corpus, model, sp, tmp_path):
    summary = run(corpus, model, tmp_path / "ids.txt")
    lines = input_lines(corpus)
    expected = sp.encode(lines, add_bos=True, add_eos=True)
    output = (tmp_path / "ids.txt").read_bytes()
    assert output.endswith(b"\n")
    got = [[int(t) for t in line.split(" ")] for line in output.decode("ascii").split("\n")[:-1]]
    assert len(got) == len(lines)
    for i, (line, ids) in enumerate(zip(lines, got, strict=True)):
        assert ids == sp.encode(line, add_bos=True, add_eos=True), f"line {i + 1}: {line!r}"
    assert got == expected
    assert output == "".join(" ".join(map(str, ids)) + "\n" for ids in expected).encode()
    assert summary.lines == len(lines)
    assert summary.tokens == sum(map(len, expected))
    assert summary.unk == sum(ids.count(0) for ids in expected) > 0
    assert summary.save_path == tmp_path / "ids.txt"


def test_piece_format_equals_sentencepiece(corpus, model, sp, tmp_path):
    summary = run(corpus, model, tmp_path / "pieces.txt", output_format="piece")
    lines = input_lines(corpus)
    expected = sp.encode(lines, add_bos=True, add_eos=True, out_type=str)
    got = (tmp_path / "pieces.txt").read_text(encoding="utf-8").split("\n")
    assert got.pop() == ""
    assert got == [" ".join(pieces) for pieces in expected]
    assert got[500] == "<s> </s>"
    # Unknown text keeps its surface form (as in spm_encode), yet is counted as <unk>.
    ids = sp.encode(lines, add_bos=True, add_eos=True)
    assert summary.unk == sum(line.count(0) for line in ids) > 0
    assert summary.tokens == sum(map(len, ids))


@pytest.mark.parametrize(
    ("options", "flags"),
    [
        ("", {}),
        ("bos", {"add_bos": True}),
        ("eos", {"add_eos": True}),
        ("bos:eos", {"add_bos": True, "add_eos": True}),
        ("eos:bos", {"add_bos": True, "add_eos": True}),
        ("reverse", {"reverse": True}),
        ("reverse:bos:eos", {"reverse": True, "add_bos": True, "add_eos": True}),
    ],
)
def test_extra_options(corpus, model, sp, tmp_path, options, flags):
    run(corpus, model, tmp_path / "ids.txt", extra_options=options)
    lines = input_lines(corpus)
    expected = "".join(" ".join(map(str, ids)) + "\n" for ids in sp.encode(lines, **flags))
    assert (tmp_path / "ids.txt").read_text(encoding="ascii") == expected
    run(corpus, model, tmp_path / "bin", extra_options=options, output_format="bin")
    binary = BinaryCorpus.open(tmp_path / "bin")
    assert [binary.line(i).tolist() for i in range(len(binary))] == sp.encode(lines, **flags)
    assert binary.meta["bos"] == ("bos" in options) and binary.meta["eos"] == ("eos" in options)
    assert binary.meta["reverse"] == ("reverse" in options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            "bos:foo",
            "unknown extra option(s) ['foo'] in 'bos:foo': use a colon-separated subset "
            "of bos, eos, reverse",
        ),
        ("unk", "unknown extra option(s) ['unk']"),
        ("bos,eos", "unknown extra option(s) ['bos,eos']"),
        ("bos:eos:bos", "extra option(s) ['bos'] repeated in 'bos:eos:bos'"),
        ("bos:eos:reverse", "put 'reverse' before 'bos'/'eos' (e.g. 'reverse:bos:eos')"),
    ],
)
def test_bad_extra_options(corpus, model, tmp_path, options, message):
    with pytest.raises(InputError) as err:
        run(corpus, model, tmp_path / "ids.txt", extra_options=options)
    assert message in str(err.value)
    assert listing(tmp_path) == []


def test_extra_options_parse_and_str():
    assert ExtraOptions.parse("") == ExtraOptions()
    assert ExtraOptions.parse(" bos : eos ") == ExtraOptions(bos=True, eos=True)
    assert str(ExtraOptions.parse("reverse:eos:bos")) == "reverse:bos:eos"
    assert str(ExtraOptions()) == ""


def test_empty_lines_and_missing_final_newline(model, sp, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"\nhello world\n\n\nlast line without newline")
    run(corpus, model, tmp_path / "ids.txt")
    hello = " ".join(map(str, sp.encode("hello world", add_bos=True, add_eos=True)))
    last = " ".join(map(str, sp.encode("last line without newline", add_bos=True, add_eos=True)))
    assert (tmp_path / "ids.txt").read_text() == f"2 3\n{hello}\n2 3\n2 3\n{last}\n"
    run(corpus, model, tmp_path / "bare.txt", extra_options="")
    assert (tmp_path / "bare.txt").read_text() == f"\n{hello[2:-2]}\n\n\n{last[2:-2]}\n"
    run(corpus, model, tmp_path / "bin", extra_options="", output_format="bin")
    binary = BinaryCorpus.open(tmp_path / "bin")
    assert binary.line_lengths().tolist()[:4] == [0, len(hello.split()) - 2, 0, 0]


def test_only_empty_lines(model, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"\n\n")
    summary = run(corpus, model, tmp_path / "bin", extra_options="", output_format="bin")
    assert (summary.lines, summary.tokens) == (2, 0)
    binary = BinaryCorpus.open(tmp_path / "bin")
    assert len(binary) == 2 and binary.num_tokens == 0 and binary.line(1).tolist() == []


def test_long_lines_across_chunks(model, sp, tmp_path):
    long_line = " ".join(["Return the value of the named attribute of object."] * 40)
    corpus = tmp_path / "c.txt"
    corpus.write_text(f"short\n{long_line}\n{long_line}\nend\n", encoding="utf-8")
    run(corpus, model, tmp_path / "ids.txt", chunk_bytes=64, workers=2)
    expected = sp.encode(["short", long_line, long_line, "end"], add_bos=True, add_eos=True)
    assert (tmp_path / "ids.txt").read_text() == "".join(
        " ".join(map(str, x)) + "\n" for x in expected
    )


# ---- binary corpus -------------------------------------------------------------------------------


def test_bin_roundtrip_through_memmap(corpus, model, tmp_path):
    run(corpus, model, tmp_path / "ids.txt")
    summary = run(corpus, model, tmp_path / "bin", output_format="bin")
    id_lines = [
        [int(t) for t in line.split()]
        for line in (tmp_path / "ids.txt").read_text().split("\n")[:-1]
    ]
    assert listing(tmp_path / "bin") == ["meta.json", "offsets.bin", "tokens.bin"]
    binary = BinaryCorpus.open(tmp_path / "bin")
    assert isinstance(binary.tokens, np.memmap) and isinstance(binary.offsets, np.memmap)
    assert binary.tokens.dtype == np.uint16 and binary.offsets.dtype == np.int64
    assert len(binary) == len(id_lines) == summary.lines
    for i, ids in enumerate(id_lines):
        assert binary.line(i).tolist() == ids
    assert binary.line(-1).tolist() == id_lines[-1]
    assert binary.tokens.tolist() == [t for ids in id_lines for t in ids]
    assert binary.offsets[0] == 0 and binary.offsets[-1] == binary.num_tokens
    meta = binary.meta
    assert meta["format"] == "ulmfit-corpus" and meta["version"] == 1 and meta["dtype"] == "uint16"
    assert meta["num_lines"] == len(id_lines) == summary.lines
    assert meta["num_tokens"] == sum(map(len, id_lines)) == summary.tokens == binary.num_tokens
    assert meta["unk_count"] == summary.unk == sum(ids.count(0) for ids in id_lines)
    assert meta["vocab_size"] == binary.vocab_size == 400
    assert meta["bos"] is True and meta["eos"] is True and meta["extra_options"] == "bos:eos"
    assert meta["special_ids"] == SPECIAL_IDS
    assert meta["source_path"] == str(corpus) and meta["source_sha256"] == sha256_file(corpus)
    assert meta["spm_model_path"] == str(model) and meta["spm_model_sha256"] == sha256_file(model)
    assert set(meta["versions"]) >= {"sentencepiece", "numpy"}
    # The files are plain little-endian arrays: numpy alone reads them.
    raw = np.fromfile(tmp_path / "bin" / "tokens.bin", dtype="<u2")
    assert raw.tolist() == binary.tokens.tolist()
    assert (
        np.fromfile(tmp_path / "bin" / "offsets.bin", dtype="<i8").tolist()
        == binary.offsets.tolist()
    )
    with pytest.raises(IndexError):
        binary.line(len(binary))


def test_bin_replaces_existing_directory(corpus, model, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "stale.txt").write_text("old")
    run(corpus, model, tmp_path / "bin", output_format="bin")
    assert listing(tmp_path / "bin") == ["meta.json", "offsets.bin", "tokens.bin"]
    assert listing(tmp_path) == ["bin"]


@pytest.mark.parametrize(
    ("vocab_size", "dtype"),
    [(1, "uint16"), (65535, "uint16"), (65536, "uint16"), (65537, "int32"), (250_000, "int32")],
)
def test_token_dtype_boundary(vocab_size, dtype):
    assert token_dtype(vocab_size) == np.dtype(dtype)
    assert token_dtype(vocab_size).byteorder in ("<", "=", "|")


@pytest.mark.parametrize("vocab_size", [65536, 65537])
def test_writer_dtypes_roundtrip(tmp_path, vocab_size):
    tokens = np.array([2, 65535, 3, 2, 0, vocab_size - 1, 3], np.int32)
    with BinaryCorpusWriter(tmp_path, vocab_size) as writer:
        writer.append(tokens[:3], np.array([3]))
        writer.append(tokens[3:], np.array([0, 4]))
        meta = writer.finish(source_path="x")
    itemsize = 2 if vocab_size <= 65536 else 4
    assert (tmp_path / "tokens.bin").stat().st_size == len(tokens) * itemsize
    assert (
        meta["dtype"] == ("uint16" if vocab_size <= 65536 else "int32")
        and meta["source_path"] == "x"
    )
    binary = BinaryCorpus.open(tmp_path)
    assert [binary.line(i).tolist() for i in range(3)] == [
        [2, 65535, 3],
        [],
        [2, 0, vocab_size - 1, 3],
    ]


def test_writer_rejects_bad_input(tmp_path):
    with BinaryCorpusWriter(tmp_path, 100) as writer:
        with pytest.raises(ValueError, match="outside"):
            writer.append(np.array([1, 100]), np.array([2]))
        with pytest.raises(ValueError, match="sum to 3"):
            writer.append(np.array([1, 2]), np.array([3]))


def test_reader_validates(corpus, model, tmp_path):
    with pytest.raises(
        InputError,
        match=r"not a binary corpus directory: .* has no meta.json "
        r"\(run 03_encode_spm.py --output-format bin\)",
    ):
        BinaryCorpus.open(tmp_path / "nowhere")
    run(corpus, model, tmp_path / "bin", output_format="bin")
    tokens = tmp_path / "bin" / "tokens.bin"
    complete = tokens.read_bytes()
    tokens.write_bytes(complete[:-2])
    with pytest.raises(
        InputError, match=r"tokens.bin has \d+ bytes, but meta.json says \d+ x uint16"
    ):
        BinaryCorpus.open(tmp_path / "bin")
    tokens.write_bytes(complete)
    BinaryCorpus.open(tmp_path / "bin")
    (tmp_path / "bin" / "offsets.bin").unlink()
    with pytest.raises(InputError, match=r"offsets.bin is missing"):
        BinaryCorpus.open(tmp_path / "bin")
    (tmp_path / "bin" / "meta.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="is not an 'ulmfit-corpus' meta file"):
        BinaryCorpus.open(tmp_path / "bin")


# ---- parallelism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["id", "piece", "bin"])
def test_workers_give_identical_bytes(corpus, model, tmp_path, output_format):
    outputs = []
    for workers, chunk_bytes in [(1, 4096), (2, 4096), (3, 1000), (2, 1 << 20)]:
        save_path = tmp_path / f"out-{workers}-{chunk_bytes}"
        run(
            corpus,
            model,
            save_path,
            output_format=output_format,
            workers=workers,
            chunk_bytes=chunk_bytes,
        )
        if output_format == "bin":
            outputs.append(
                [(save_path / name).read_bytes() for name in ("tokens.bin", "offsets.bin")]
            )
        else:
            outputs.append(save_path.read_bytes())
    assert corpus.stat().st_size > 20 * 4096  # many chunks
    assert all(output == outputs[0] for output in outputs[1:])


@pytest.mark.parametrize("options", ["bos:eos", "reverse:eos", ""])
def test_public_api_fallback_gives_same_output(corpus, model, tmp_path, monkeypatch, options):
    """Without sentencepiece's internal batch call, encode(..., out_type="numpy") gives the same."""
    assert encode_module._has_fast_batch(
        sentencepiece.SentencePieceProcessor(model_file=str(model))
    )
    run(corpus, model, tmp_path / "fast.txt", chunk_bytes=8192, extra_options=options)
    monkeypatch.setattr(encode_module, "_has_fast_batch", lambda _processor: False)
    run(corpus, model, tmp_path / "public.txt", chunk_bytes=8192, extra_options=options, workers=2)
    assert (tmp_path / "fast.txt").read_bytes() == (tmp_path / "public.txt").read_bytes()


@pytest.mark.parametrize("vocab_size", [5, 10, 11, 400, 8000, 65536, 1_000_000, 1_000_001])
def test_vectorised_id_text_equals_python_join(vocab_size):
    table = encode_module._IdTextTable(vocab_size)
    assert table.vectorised == (vocab_size <= 1_000_000)
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 6, size=50)
    lengths[[0, -1]] = 0  # empty first and last lines
    tokens = rng.integers(0, vocab_size, size=int(lengths.sum())).astype(np.int32)
    tokens[:3] = [0, vocab_size - 1, 9 if vocab_size > 9 else 1]
    ends = np.cumsum(lengths).tolist()
    lines = [tokens[a:b].tolist() for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    expected = "".join(" ".join(map(str, ids)) + "\n" for ids in lines).encode()
    assert table.format(tokens, lengths) == expected


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 8, 13, 100])
@pytest.mark.parametrize("data", [b"a\nbb\n\nccc dd\n", b"a\nbb\n\nccc dd", b"\n", b"x"])
def test_read_chunks_keeps_whole_lines(tmp_path, chunk_bytes, data):
    digest = hashlib.sha256()
    (tmp_path / "c.txt").write_bytes(data)
    with open(tmp_path / "c.txt", "rb") as f:
        chunks = list(encode_module._read_chunks(f, chunk_bytes, digest))
    joined = b"".join(chunk.data for chunk in chunks)
    assert joined == (data if data.endswith(b"\n") else data + b"\n")
    assert all(chunk.data.endswith(b"\n") for chunk in chunks)
    starts = [1 + b"".join(c.data for c in chunks[:i]).count(b"\n") for i in range(len(chunks))]
    assert [chunk.first_line for chunk in chunks] == starts
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_progress_reports_every_byte(corpus, model, tmp_path):
    reported: list[int] = []
    run(corpus, model, tmp_path / "ids.txt", chunk_bytes=8192, workers=2, progress=reported.append)
    assert sum(reported) == corpus.stat().st_size and len(reported) > 10


# ---- errors: clear messages, nothing left behind ------------------------------------------------


@pytest.mark.parametrize("output_format", ["id", "bin"])
def test_missing_model(corpus, tmp_path, output_format):
    with pytest.raises(
        InputError,
        match=r"SentencePiece model not found: .*nope.model \(build it with 02_build_spm.py\)",
    ):
        run(corpus, tmp_path / "nope.model", tmp_path / "out", output_format=output_format)
    assert listing(tmp_path) == []


def test_model_sentencepiece_cannot_load(corpus, tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(
        InputError, match=r"cannot load the SentencePiece model .*bad.model: .*is it a .model file"
    ):
        run(corpus, bad, tmp_path / "ids.txt")
    assert listing(tmp_path) == ["bad.model"]


def test_model_without_fastai_special_ids(corpus, tmp_path):
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "plain"),
        vocab_size=200,
        minloglevel=2,
    )  # sentencepiece's own defaults: <unk>=0, <s>=1, </s>=2, no <pad>
    with pytest.raises(
        InputError,
        match=r"has special ids .* but the pipeline needs .*build the model with 02_build_spm.py",
    ):
        run(corpus, tmp_path / "plain.model", tmp_path / "ids.txt")
    assert not (tmp_path / "ids.txt").exists()


@pytest.mark.parametrize("output_format", ["id", "bin"])
def test_empty_corpus(model, tmp_path, output_format):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"the corpus .*empty.txt is empty: nothing to encode"):
        run(empty, model, tmp_path / "out", output_format=output_format)
    assert listing(tmp_path) == ["empty.txt"]


@pytest.mark.parametrize("output_format", ["id", "piece", "bin"])
def test_not_utf8_names_the_line(model, tmp_path, output_format):
    good = "A perfectly fine sentence about café culture.\n"
    data = (good * 300).encode() + b"fine start, then \xff bad\n" + good.encode() * 10
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes(data)
    with pytest.raises(
        InputError,
        match=r"latin1.txt: line 301 is not valid UTF-8 "
        r"\(invalid start byte at byte 17 of the line\)",
    ):
        run(
            corpus,
            model,
            tmp_path / "out",
            output_format=output_format,
            chunk_bytes=1000,
            workers=2,
        )
    assert listing(tmp_path) == ["latin1.txt"]


@pytest.mark.parametrize("text", ["hello world\n\nlast line\n", ""])
def test_corpus_from_a_pipe(model, sp, tmp_path, text):
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "w", encoding="utf-8") as f:
            f.write(text)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        if not text:
            with pytest.raises(InputError, match=r"corpus\.fifo is empty: nothing to encode"):
                run(fifo, model, tmp_path / "bin", output_format="bin")
            assert listing(tmp_path) == ["corpus.fifo"]
        else:
            summary = run(fifo, model, tmp_path / "bin", output_format="bin")
            binary = BinaryCorpus.open(tmp_path / "bin")
            lines = text.split("\n")[:-1]
            expected = sp.encode(lines, add_bos=True, add_eos=True)
            assert [binary.line(i).tolist() for i in range(len(binary))] == expected
            assert summary.lines == 3
            assert binary.meta["source_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    finally:
        writer.join()


def test_save_path_kind_mismatch(corpus, model, tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match="is a directory; the id format writes a file"):
        run(corpus, model, tmp_path / "dir")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file; the bin format writes a directory"):
        run(corpus, model, tmp_path / "file", output_format="bin")


def test_interrupted_run_leaves_nothing(corpus, model, tmp_path):
    def stop(_n):
        raise KeyboardInterrupt

    for output_format in ("id", "bin"):
        with pytest.raises(KeyboardInterrupt):
            run(
                corpus,
                model,
                tmp_path / "out",
                output_format=output_format,
                chunk_bytes=4096,
                workers=2,
                progress=stop,
            )
    assert listing(tmp_path) == []


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_help_lists_every_flag():
    result = CliRunner().invoke(load_script("03_encode_spm").main, ["--help"])
    assert result.exit_code == 0
    for flag in (
        "--corpus-path",
        "--model-path",
        "--spm-extra-options",
        "--output-format",
        "--save-path",
        "--workers",
        "--verbose",
    ):
        assert flag in result.output
    assert "bos:eos" in result.output


def test_cli_writes_what_the_library_writes(corpus, model, tmp_path):
    run(corpus, model, tmp_path / "lib.txt", workers=1)
    args = [
        "--corpus-path",
        str(corpus),
        "--model-path",
        str(model),
        "--save-path",
        str(tmp_path / "cli.txt"),
        "--workers",
        "2",
    ]
    result = CliRunner().invoke(load_script("03_encode_spm").main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.txt").read_bytes() == (tmp_path / "lib.txt").read_bytes()
    args = [
        "--corpus-path",
        str(corpus),
        "--model-path",
        str(model),
        "--save-path",
        str(tmp_path / "corpus"),
        "--output-format",
        "bin",
        "--spm-extra-options",
        "",
    ]
    result = CliRunner().invoke(load_script("03_encode_spm").main, args)
    assert result.exit_code == 0, result.output
    assert BinaryCorpus.open(tmp_path / "corpus").meta["bos"] is False


def test_cli_errors_are_one_line(corpus, model, tmp_path):
    args = [
        "--corpus-path",
        str(corpus),
        "--model-path",
        str(model),
        "--save-path",
        str(tmp_path / "ids.txt"),
        "--spm-extra-options",
        "bos:eos:unk",
    ]
    result = CliRunner().invoke(load_script("03_encode_spm").main, args)
    assert result.exit_code == 1
    assert "Error: unknown extra option(s) ['unk']" in result.output
    assert "Traceback" not in result.output
    assert listing(tmp_path) == []


def test_source_sha256_is_of_the_whole_file(corpus, model, tmp_path):
    run(corpus, model, tmp_path / "bin", output_format="bin", chunk_bytes=3000)
    meta = json.loads((tmp_path / "bin" / "meta.json").read_text())
    assert meta["source_sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
