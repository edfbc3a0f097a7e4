"""Stage 01 (cleanup): normalisation, sentence splitting, punctuation spacing, the CLI."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from pretraining_utils.cleanup import CleanupConfig, cleanup_corpus
from pretraining_utils.punctuation import space_punctuation
from pretraining_utils.punkt import build_sentence_splitter, load_punkt_params, train_punkt
from pretraining_utils.punkt_seeds import ABBREVIATIONS, PUNKT_LANGUAGES
from pretraining_utils.text_units import decode_utf8, normalize_text
from tests.helpers import load_script
from ulmfit_core.errors import InputError

ENGLISH = (
    "Dr. Smith arrived at 10 a.m. on Jan. 5, 2021. He brought e.g. apples, pears, etc. "
    "The company earned $3.5 million last year, i.e. more than expected. "
    'See Fig. 2 and No. 5 on p. 14. "Is it true?" she asked. "Yes!" He smiled. '
    "Mr. and Mrs. Jones live on Baker St. in London. The answer was no. Then we left."
)
ENGLISH_SENTENCES = [
    "Dr. Smith arrived at 10 a.m. on Jan. 5, 2021.",
    "He brought e.g. apples, pears, etc.",
    "The company earned $3.5 million last year, i.e. more than expected.",
    "See Fig. 2 and No. 5 on p. 14.",
    '"Is it true?" she asked.',
    '"Yes!"',
    "He smiled.",
    "Mr. and Mrs. Jones live on Baker St. in London.",
    "The answer was no.",
    "Then we left.",
]

POLISH = (
    "W 2020 r. firma zatrudniała ok. 150 osób, m.in. inżynierów i programistów. "
    "Prof. Nowak z ul. Długiej 5 mówi o tzw. „efekcie motyla”. "
    "Spotkanie zaczyna się o godz. 12:30, tj. po przerwie. "
    "Kupiliśmy jabłka, gruszki itd. Potem wróciliśmy do domu. "
    "Szkoła, oddalona od centrum o 2 km, powstała w 1990 r. "
    "Od tego czasu uczy się w niej ponad 3,5 tys. uczniów. "
    "„Czy to prawda?” zapytał dyrektor. Tak, np. dr hab. inż. Jan Kowalski tak twierdzi."
)
POLISH_SENTENCES = [
    "W 2020 r. firma zatrudniała ok. 150 osób, m.in. inżynierów i programistów.",
    "Prof. Nowak z ul. Długiej 5 mówi o tzw. „efekcie motyla”.",
    "Spotkanie zaczyna się o godz. 12:30, tj. po przerwie.",
    "Kupiliśmy jabłka, gruszki itd.",  # a list-closing abbreviation before a capital ends it
    "Potem wróciliśmy do domu.",
    # "r." ends the sentence here: "od" was seen lower-case mid-sentence, so "Od" starts one.
    "Szkoła, oddalona od centrum o 2 km, powstała w 1990 r.",
    "Od tego czasu uczy się w niej ponad 3,5 tys. uczniów.",
    "„Czy to prawda?” zapytał dyrektor.",
    "Tak, np. dr hab. inż. Jan Kowalski tak twierdzi.",
]


pytestmark = pytest.mark.usefixtures("restore_process_state")


@pytest.fixture(scope="module")
def cli():
    return load_script("01_cleanup").main


def _splitter(text: str, lang: str):
    """A splitter trained on ``text`` itself: tiny, so the seed abbreviations do the work."""
    return build_sentence_splitter(train_punkt([text], lang))


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def _run(tmp_path: Path, data: str | bytes, **options) -> tuple[list[str], object]:
    source = _write(tmp_path / "in.txt", data)
    out = tmp_path / "out" / "sentences.txt"
    summary = cleanup_corpus(CleanupConfig(input_text=source, out_path=out, **options))
    return out.read_text(encoding="utf-8").splitlines(), summary


# --- sentence splitting -----------------------------------------------------------------------


def test_english_sentences():
    assert _splitter(ENGLISH, "english").tokenize(ENGLISH) == ENGLISH_SENTENCES


def test_polish_sentences():
    assert _splitter(POLISH, "polish").tokenize(POLISH) == POLISH_SENTENCES


def test_english_end_to_end(tmp_path):
    lines, summary = _run(tmp_path, ENGLISH + "\n", lang="english")
    assert lines == [
        "Dr. Smith arrived at 10 a.m. on Jan. 5 , 2021 .",
        "He brought e.g. apples , pears , etc .",
        "The company earned $ 3.5 million last year , i.e. more than expected .",
        "See Fig. 2 and No. 5 on p. 14 .",
        '" Is it true ? " she asked .',
        '" Yes ! "',
        "He smiled .",
        "Mr. and Mrs. Jones live on Baker St. in London .",
        "The answer was no .",
        "Then we left .",
    ]
    assert (summary.lines_in, summary.paragraphs, summary.sentences_out) == (1, 1, 10)


def test_sentences_never_span_lines(tmp_path):
    lines, _ = _run(
        tmp_path, "A line without an end\nand the next line.\n\nThird one.\n", input_format="lines"
    )
    assert lines == ["A line without an end", "and the next line .", "Third one ."]


def test_punkt_learns_abbreviations_from_a_bigger_sample():
    people = ["Morse", "Lewis", "Frost", "Barnaby", "Lestrade", "Japp"]
    places = ["the station", "the old mill", "the harbour", "the museum", "the library"]
    days = ["Monday", "Tuesday", "Friday", "Sunday"]
    paragraphs = [
        f"Insp. {person} went to {place} on {day}. "
        f"Nobody at {place} had seen {person} before {day}. "
        f"On {day} the inspector left early for {place}."
        for person, place, day in itertools.product(people, places, days)
    ]
    params = train_punkt(paragraphs, "english")
    assert set(params["abbrev_types"]) - ABBREVIATIONS["english"] == {"insp"}
    assert params["ortho_context"] and params["sent_starters"]

    text = "Insp. Morse went to the museum on Monday. Nobody saw him."
    assert build_sentence_splitter(params).tokenize(text) == [
        "Insp. Morse went to the museum on Monday.",
        "Nobody saw him.",
    ]
    # Untrained, "Insp." is not an abbreviation and ends a "sentence".
    assert _splitter(text, "english").tokenize(text)[0] == "Insp."


def test_every_language_is_accepted():
    for lang in PUNKT_LANGUAGES:
        splitter = build_sentence_splitter(train_punkt(["Ein Satz. Zwei."], lang))
        assert splitter.tokenize("One. Two.") == ["One.", "Two."]


def test_unknown_language_is_rejected(tmp_path):
    with pytest.raises(InputError, match=r"unknown language 'klingon'.*english"):
        CleanupConfig(input_text=tmp_path, out_path=tmp_path / "o.txt", lang="klingon")


# --- punctuation spacing and normalisation ----------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("what?", "what ?"),
        ('"quoted"', '" quoted "'),
        ("(a, b)", "( a , b )"),
        ("end.", "end ."),
        ("Wow!!", "Wow ! !"),
        ("It costs 3.14, not 1,000.", "It costs 3.14 , not 1,000 ."),
        ("at 12:30 on 12.03.2020;", "at 12:30 on 12.03.2020 ;"),
        ("I don't know, it's O'Neil's.", "I don't know , it's O'Neil's ."),
        ("don’t", "don’t"),
        ("'90s students' books", "' 90s students ' books"),
        ("a well-known COVID-19 case", "a well-known COVID-19 case"),
        ("see sys.version_info and __init__()", "see sys.version_info and __init__ ( )"),
        ("pre- and post-war", "pre - and post-war"),
        ("1990–2000 — done", "1990 – 2000 — done"),
        ("Wait... what...", "Wait ... what ..."),
        ("«texte» „tekst”", "« texte » „ tekst ”"),
        ("Price: $5 (50%)!", "Price : $ 5 ( 50 % ) !"),
        ("e-mail jan@example.com", "e-mail jan @ example.com"),
        # A period followed by more of the sentence is one Punkt kept: it stays on its word.
        (
            "Dr. Smith, e.g. here, m.in. tu, J. R. R. Tolkien, 5. miejsce.",
            "Dr. Smith , e.g. here , m.in. tu , J. R. R. Tolkien , 5. miejsce .",
        ),
        ("itd.", "itd ."),
        ("C++ & 😀", "C + + & 😀"),
    ],
)
def test_space_punctuation(sentence, expected):
    assert space_punctuation(sentence) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ﬁne ﬂow", "fine flow"),  # ligatures
        ("２０２０年", "2020年"),  # full-width digits
        ("Ｈｅｌｌｏ", "Hello"),  # full-width letters
        ("a\u00a0b\u2009c\u3000d", "a b c d"),  # no-break, thin and ideographic spaces
        ("wait…", "wait..."),
        ("x²", "x2"),
        ("\ufeffstart", "start"),  # BOM
        ("a\x00b\x07c\x1bd", "abcd"),  # control characters
        ("soft\u00adhyphen zero\u200bwidth \u200ertl", "softhyphen zerowidth rtl"),
        ("emoji 👩\u200d💻 keeps its joiner", "emoji 👩\u200d💻 keeps its joiner"),
        ("  tab\there\r\nand\x0bmore\u2028  ", "tab here and more"),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    ("data", "text", "invalid"),
    [
        (b"plain", "plain", 0),
        ("zażółć".encode(), "zażółć", 0),
        (b"a\xffb", "a\ufffdb", 1),
        (b"a\xff\xfeb", "a\ufffd\ufffdb", 2),
        (b"cut \xe2\x82", "cut \ufffd", 2),  # a truncated 3-byte sequence: 2 bad bytes
        (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd", 3),  # an encoded surrogate
    ],
)
def test_decode_utf8_counts_invalid_bytes(data, text, invalid):
    assert decode_utf8(data) == (text, invalid)


# --- the stage --------------------------------------------------------------------------------


def test_invalid_utf8_is_replaced_counted_and_located(tmp_path, caplog):
    data = b"First line is fine.\nSo is the second.\nThe third has a bad \xff byte.\nLast.\n"
    with caplog.at_level(logging.WARNING):
        lines, summary = _run(tmp_path, data)
    assert lines == [
        "First line is fine .",
        "So is the second .",
        "The third has a bad \ufffd byte .",
        "Last .",
    ]
    assert summary.invalid_bytes == 1
    assert summary.first_invalid_line == 3
    assert summary.first_invalid_source == str(tmp_path / "in.txt")
    assert "line 3" in caplog.text
    assert "1 invalid UTF-8 bytes (first on line 3 of" in summary.describe()


def test_line_numbers_and_counts_are_exact_across_chunks(tmp_path):
    lines = [f"Line number {i} is here." for i in range(1, 201)]
    lines[149] = "Line 150 has \xff\xfe two bad bytes."
    data = "\n".join(lines).encode("utf-8").replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe")
    out, summary = _run(tmp_path, data, chunk_bytes=64, sample_bytes=0)  # no final newline
    assert len(out) == 200 and summary.lines_in == 200
    assert (summary.invalid_bytes, summary.first_invalid_line) == (2, 150)


def test_long_lines_are_not_cut_at_chunk_boundaries(tmp_path):
    long_line = " ".join(["word"] * 500) + "."
    out, summary = _run(tmp_path, f"Short one.\n{long_line}\nEnd.\n", chunk_bytes=100)
    assert out == ["Short one .", long_line[:-1] + " .", "End ."]
    assert summary.lines_in == 3


@pytest.mark.parametrize(
    "layout",
    ["empty file", "whitespace file", "empty dir", "dir without txt", "dir of blank txt"],
)
def test_empty_input_is_an_error_and_writes_nothing(tmp_path, layout):
    source = tmp_path / "input"
    if layout == "empty file":
        source = _write(source, b"")
    elif layout == "whitespace file":
        source = _write(source, " \n\t\n\r\n\u00a0\u200b\n")
    else:
        source.mkdir()
        if layout == "dir without txt":
            _write(source / "notes.md", "Some text.\n")
        elif layout == "dir of blank txt":
            _write(source / "a.txt", "\n\n")
            _write(source / "sub" / "b.txt", "   \n")
    out = tmp_path / "out" / "sentences.txt"
    with pytest.raises(InputError, match=r"contains no (text|\.txt files)"):
        cleanup_corpus(CleanupConfig(input_text=source, out_path=out))
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_missing_input_is_an_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        cleanup_corpus(CleanupConfig(input_text=tmp_path / "nope.txt", out_path=tmp_path / "o"))


def test_output_inside_the_input_is_refused(tmp_path):
    _write(tmp_path / "corpus" / "a.txt", "Some text.\n")
    _write(tmp_path / "corpus" / "sentences.txt", "An old output.\n")
    config = CleanupConfig(
        input_text=tmp_path / "corpus", out_path=tmp_path / "corpus/sentences.txt"
    )
    with pytest.raises(InputError, match="also an input"):
        cleanup_corpus(config)


def test_min_and_max_words_drop_and_count(tmp_path):
    text = (
        "Yes. One two three. This one has six words. This sentence has many more words than that.\n"
    )
    lines, summary = _run(tmp_path, text, min_words=3, max_words=7)
    # Counted after spacing, so "One two three ." has 4 words and "Yes ." only 2.
    assert lines == ["One two three .", "This one has six words ."]
    assert (summary.dropped_short, summary.dropped_long, summary.sentences_out) == (1, 1, 2)
    assert "dropped 1 too short and 1 too long" in summary.describe()


def test_everything_filtered_out_is_an_error(tmp_path):
    with pytest.raises(InputError, match="every sentence was filtered out"):
        _run(tmp_path, "Short. Tiny.\n", min_words=5)
    assert not (tmp_path / "out" / "sentences.txt").exists()


def test_lowercase_after_splitting(tmp_path):
    lines, _ = _run(
        tmp_path, "Dr. Nowak mieszka w USA. To już 5 lat!\n", lang="polish", lowercase=True
    )
    assert lines == ["dr. nowak mieszka w usa .", "to już 5 lat !"]


def test_two_workers_give_byte_identical_output(tmp_path):
    paragraphs = [
        f"Paragraph {i}. " + " ".join(ENGLISH_SENTENCES[i % 10 :] + ENGLISH_SENTENCES[: i % 7])
        for i in range(120)
    ]
    source = _write(tmp_path / "in.txt", "\n".join(paragraphs) + "\n")
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}.txt"
        config = CleanupConfig(
            input_text=source, out_path=out, workers=workers, chunk_bytes=2000, sample_bytes=6000
        )
        cleanup_corpus(config)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]

    # Chunked and parallel equals splitting paragraph by paragraph, in order.
    params = json.loads(Path(f"{tmp_path / 'out1.txt'}.punkt.json").read_text(encoding="utf-8"))
    splitter = build_sentence_splitter(params)
    expected = "".join(
        space_punctuation(sentence) + "\n"
        for paragraph in paragraphs
        for sentence in splitter.tokenize(paragraph)
    )
    assert outputs[0].decode("utf-8") == expected
    assert expected.count("\n") > 2 * len(paragraphs)


def test_progress_callback_sees_every_byte(tmp_path):
    data = "One sentence here.\n" * 100
    seen = []
    source = _write(tmp_path / "in.txt", data)
    cleanup_corpus(
        CleanupConfig(input_text=source, out_path=tmp_path / "o.txt", chunk_bytes=300),
        on_bytes=seen.append,
    )
    assert sum(seen) == len(data) and len(seen) > 1


def test_punkt_params_are_saved_and_reused(tmp_path):
    first = tmp_path / "first" / "sentences.txt"
    source = _write(tmp_path / "in.txt", POLISH + "\n")
    cleanup_corpus(CleanupConfig(input_text=source, out_path=first, lang="polish"))
    params_path = tmp_path / "first" / "sentences.txt.punkt.json"
    params = json.loads(params_path.read_text(encoding="utf-8"))
    assert params["format"] == "punkt-params" and params["lang"] == "polish"
    assert {"np", "m.in", "r", "itd"} <= set(params["abbrev_types"])
    assert "itd" in params["sentence_final_abbrev_types"]
    assert params["ortho_context"]["od"] > 0

    second = tmp_path / "second" / "sentences.txt"
    config = CleanupConfig(
        input_text=source, out_path=second, lang="polish", punkt_params=params_path
    )
    cleanup_corpus(config)
    assert second.read_bytes() == first.read_bytes()
    assert config.params_path.read_text(encoding="utf-8") == params_path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read Punkt parameters"),
        ('{"format": "something-else"}', "not a Punkt parameters file"),
        ("[1, 2]", "not a Punkt parameters file"),
    ],
)
def test_bad_punkt_params_are_an_error(tmp_path, content, message):
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(InputError, match=message):
        load_punkt_params(path, "english")


def test_punkt_params_of_another_language_are_an_error(tmp_path):
    path = tmp_path / "pl.json"
    path.write_text(json.dumps(train_punkt(["Zdanie."], "polish")), encoding="utf-8")
    with pytest.raises(InputError, match="for polish, but the language is english"):
        load_punkt_params(path, "english")
    with pytest.raises(InputError, match="not a Punkt parameters file"):
        broken = json.loads(path.read_text(encoding="utf-8"))
        broken["collocations"] = ["a"]
        load_punkt_params(_write(tmp_path / "broken.json", json.dumps(broken)), "polish")


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_help_lists_every_option(cli):
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for option in [
        "--input-text",
        "--out-path",
        "--lang",
        "--workers",
        "--input-format",
        "--lowercase",
        "--min-words",
        "--max-words",
        "--punkt-params",
        "--verbose",
    ]:
        assert option in result.output


def test_cli_directory_input_in_sorted_order(cli, tmp_path):
    corpus = tmp_path / "corpus"
    _write(corpus / "b.txt", "Second file.")  # no final newline: must not join the next file
    _write(corpus / "a.txt", "First file. Dr. Who came.\n")
    _write(corpus / "sub" / "c.txt", "Nested file.\n")
    _write(corpus / "skip.md", "Not text.\n")
    out = tmp_path / "sentences.txt"
    result = CliRunner().invoke(
        cli, ["--input-text", str(corpus), "--out-path", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == (
        "First file .\nDr. Who came .\nSecond file .\nNested file .\n"
    )
    assert Path(f"{out}.punkt.json").exists()
    assert "4 sentences out" in result.output  # the summary line is logged


def test_cli_reads_stdin(cli, tmp_path):
    out = tmp_path / "sentences.txt"
    result = CliRunner().invoke(
        cli,
        ["--input-text", "-", "--out-path", str(out), "--lang", "polish", "--lowercase"],
        input="Ala ma kota, np. Mruczka. Kot ma Alę.\n".encode(),
    )
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == "ala ma kota , np. mruczka .\nkot ma alę .\n"


@pytest.mark.parametrize("stdin", [False, True])
def test_cli_empty_input_fails_cleanly(cli, tmp_path, stdin):
    out = tmp_path / "sentences.txt"
    source = "-" if stdin else str(_write(tmp_path / "empty.txt", ""))
    result = CliRunner().invoke(cli, ["--input-text", source, "--out-path", str(out)], input=b"")
    assert result.exit_code != 0
    assert "contains no text" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.glob("sentences.txt*")) == []


def test_cli_rejects_unknown_language(cli, tmp_path):
    source = _write(tmp_path / "in.txt", "Text.\n")
    result = CliRunner().invoke(
        cli, ["--input-text", str(source), "--out-path", str(tmp_path / "o"), "--lang", "klingon"]
    )
    assert result.exit_code == 2
    assert "'klingon' is not one of" in result.output
