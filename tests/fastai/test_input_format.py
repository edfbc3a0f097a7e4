"""Stage 01's input formats: lines, hard-wrapped paragraphs, and auto's choice between them.

The texts are written for these tests: hard-wrapped the way books and e-mail are, with
abbreviations at the wraps, a quoted sentence across a wrap and a list with blank lines
between its items; and one paragraph per line the way Wikipedia dumps are.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from pretraining_utils.cleanup import CleanupConfig, cleanup_corpus
from pretraining_utils.punkt import train_punkt
from pretraining_utils.text_units import (
    MAX_PARAGRAPH_BYTES,
    Chunk,
    chunk_units,
    decide_input_format,
    ends_sentence,
    join_paragraphs,
    normalize_text,
    paragraph_chunks,
    read_chunks,
)
from tests.helpers import load_script
from ulmfit_core.errors import InputError

POLISH_WRAPPED = """\
W zeszłym roku nasza biblioteka kupiła ok.
300 nowych książek, m.in. powieści, reportaże i poradniki dla
rodziców. Najwięcej czytelników przyciągnęły tzw.
kryminały skandynawskie, które wypożyczano np.
na dwa tygodnie, a potem jeszcze przedłużano. „Czy macie coś
nowego?” zapytał mnie wczoraj sąsiad. Odpowiedziałam, że w
piątek przyjdzie kolejna dostawa.

Do najczęściej wypożyczanych działów należą m.in.
literatura faktu, książki podróżnicze oraz komiksy dla dzieci i
młodzieży. Czytelnicy chwalą też nowe godziny otwarcia, tj. od
dziewiątej rano do siódmej wieczorem.

W planach na przyszły rok są:

- remont czytelni na pierwszym piętrze, który potrwa ok.
  trzech miesięcy;

- zakup czytników e-booków, np. dla osób słabowidzących.
"""
POLISH_PARAGRAPHS = [
    "W zeszłym roku nasza biblioteka kupiła ok. 300 nowych książek , m.in. powieści , "
    "reportaże i poradniki dla rodziców .",
    "Najwięcej czytelników przyciągnęły tzw. kryminały skandynawskie , które wypożyczano "
    "np. na dwa tygodnie , a potem jeszcze przedłużano .",
    "„ Czy macie coś nowego ? ” zapytał mnie wczoraj sąsiad .",
    "Odpowiedziałam , że w piątek przyjdzie kolejna dostawa .",
    "Do najczęściej wypożyczanych działów należą m.in. literatura faktu , książki "
    "podróżnicze oraz komiksy dla dzieci i młodzieży .",
    "Czytelnicy chwalą też nowe godziny otwarcia , tj. od dziewiątej rano do siódmej "
    "wieczorem .",
    "W planach na przyszły rok są :",
    "- remont czytelni na pierwszym piętrze , który potrwa ok. trzech miesięcy ;",
    "- zakup czytników e-booków , np. dla osób słabowidzących .",
]

ENGLISH_WRAPPED = """\
The village bakery opens at six, and by seven the queue usually
reaches the corner. Most people buy the usual things, e.g.
bread, rolls and the famous cinnamon buns, but on Fridays there is
also a cheese pie that sells out within an hour. Last winter the
owner fell ill and was treated by Dr.
Morgan, who told him to rest for a month. "Who will bake the
bread while I am away?" he asked. His daughter took over, and
nobody noticed the difference.

On Saturdays the bakery closes at noon. The owner says that the
early closing is the only way to keep the ovens, which are older
than he is, in working order, and that his customers have long
since got used to it.

The shop sells three kinds of bread:

* a dark rye loaf, baked only on
  Mondays and Thursdays;

* a white sandwich loaf;

* a small sourdough loaf with seeds.

Prices went up in March, but only a little.
"""
ENGLISH_PARAGRAPHS = [
    "The village bakery opens at six , and by seven the queue usually reaches the corner .",
    "Most people buy the usual things , e.g. bread , rolls and the famous cinnamon buns , "
    "but on Fridays there is also a cheese pie that sells out within an hour .",
    "Last winter the owner fell ill and was treated by Dr. Morgan , who told him to rest "
    "for a month .",
    '" Who will bake the bread while I am away ? " he asked .',
    "His daughter took over , and nobody noticed the difference .",
    "On Saturdays the bakery closes at noon .",
    "The owner says that the early closing is the only way to keep the ovens , which are "
    "older than he is , in working order , and that his customers have long since got used "
    "to it .",
    "The shop sells three kinds of bread :",
    "* a dark rye loaf , baked only on Mondays and Thursdays ;",
    "* a white sandwich loaf ;",
    "* a small sourdough loaf with seeds .",
    "Prices went up in March , but only a little .",
]

# One paragraph per line, a blank line between them and headings above some: a Wikipedia dump.
POLISH_ONE_PER_LINE_PARAGRAPHS = [
    "Zielona Wola to niewielka wieś położona nad rzeką Bystrą, w połowie drogi między dwoma "
    "miastami powiatowymi. Według spisu z ostatnich lat mieszka w niej ok. 450 osób, z czego "
    "większość pracuje w pobliskich zakładach przetwórstwa owoców.",
    "Pierwsze wzmianki o osadzie pochodzą z XV w., kiedy należała do klasztoru w sąsiednim "
    "mieście. W XVIII w. wieś przeszła w ręce prywatne, a jej kolejni właściciele zbudowali "
    "dwór, młyn wodny i gorzelnię, z których do dziś zachował się tylko młyn.",
    "Po wojnie we dworze urządzono szkołę, a w budynkach gospodarczych spółdzielnię "
    "produkcyjną. Szkołę zamknięto pod koniec XX w., gdy liczba uczniów spadła poniżej "
    "dwudziestu, a dzieci zaczęto dowozić do gminnej szkoły podstawowej.",
    "Najcenniejszym zabytkiem wsi jest drewniany kościół z początku XIX w., wpisany do "
    "rejestru zabytków wraz z otaczającym go cmentarzem. W jego wnętrzu zachował się barokowy "
    "ołtarz przeniesiony z nieistniejącej już kaplicy dworskiej.",
    "Przez wieś prowadzi oznakowany szlak rowerowy wzdłuż doliny Bystrej. Latem działa tu "
    "niewielka przystań kajakowa, a w dawnym młynie mieści się izba regionalna, w której "
    "można obejrzeć m.in. stare narzędzia rolnicze i stroje ludowe.",
    "Co roku w sierpniu odbywa się tu festyn połączony z jarmarkiem rękodzieła. Przyjeżdżają "
    "na niego goście z całego powiatu, a dochód z loterii przeznacza się na remont dachu "
    "kościoła i na potrzeby miejscowej ochotniczej straży pożarnej.",
    "W ostatnich latach we wsi wybudowano kanalizację i nową świetlicę. Mieszkańcy starają "
    "się też o remont mostu na Bystrej, który od kilku lat jest zamknięty dla ciężarówek i "
    "autobusów, co bardzo utrudnia dojazd do pracy.",
    "Okolice wsi są popularne wśród wędkarzy i grzybiarzy. W lasach na północ od Zielonej "
    "Woli rosną głównie sosny i brzozy, a w dolinie rzeki zachowały się fragmenty łęgów "
    "olszowych, chronione jako użytek ekologiczny.",
]
POLISH_ONE_PER_LINE = "Zielona Wola\n\n" + "\n\n".join(
    [
        *POLISH_ONE_PER_LINE_PARAGRAPHS[:3],
        "Zabytki\n" + POLISH_ONE_PER_LINE_PARAGRAPHS[3],
        *POLISH_ONE_PER_LINE_PARAGRAPHS[4:6],
        "Współczesność\n" + POLISH_ONE_PER_LINE_PARAGRAPHS[6],
        POLISH_ONE_PER_LINE_PARAGRAPHS[7],
    ]
)


pytestmark = pytest.mark.usefixtures("restore_process_state")


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _run(tmp_path: Path, text: str | bytes, name: str = "out", **options):
    source = _write(tmp_path / "in.txt", text)
    out = tmp_path / name / "sentences.txt"
    summary = cleanup_corpus(CleanupConfig(input_text=source, out_path=out, **options))
    return out.read_text(encoding="utf-8").splitlines(), summary


def _decide(text: str):
    return decide_input_format(normalize_text(line) for line in text.split("\n"))


def _format_line(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("input format")]
    assert len(lines) == 1, lines
    return lines[0]


# --- lines vs paragraphs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang", "expected", "cut_in_lines"),
    [
        (
            POLISH_WRAPPED,
            "polish",
            POLISH_PARAGRAPHS,
            [
                "W zeszłym roku nasza biblioteka kupiła ok .",
                "kryminały skandynawskie , które wypożyczano np .",
                "„ Czy macie coś",
                "trzech miesięcy ;",
            ],
        ),
        (
            ENGLISH_WRAPPED,
            "english",
            ENGLISH_PARAGRAPHS,
            [
                "Most people buy the usual things , e.g .",
                "owner fell ill and was treated by Dr .",
                '" Who will bake the',
                "Mondays and Thursdays ;",
            ],
        ),
    ],
    ids=["polish", "english"],
)
def test_lines_cut_sentences_at_the_wrap_and_paragraphs_do_not(
    tmp_path, text, lang, expected, cut_in_lines
):
    by_line, lines_summary = _run(tmp_path, text, "lines", lang=lang, input_format="lines")
    joined, summary = _run(tmp_path, text, "paragraphs", lang=lang, input_format="paragraphs")
    # The old behaviour: an abbreviation at the wrap ends a "sentence" ("ok .", "e.g .") and
    # the rest of the clause starts the next one.
    for piece in cut_in_lines:
        assert piece in by_line
    assert joined == expected
    assert len(by_line) > len(joined)
    assert summary.input_format == "paragraphs" and lines_summary.input_format == "lines"
    assert summary.lines_in == lines_summary.lines_in == text.count("\n")
    assert summary.paragraphs == text.strip().count("\n\n") + 1
    assert f"read as paragraphs ({summary.paragraphs} paragraphs, 0 cut at 1 MiB)" in (
        summary.describe()
    )


def test_join_paragraphs_at_blank_lines():
    lines = ["", "a list:", "", "- one", "  wrapped", "", "", "- two", ""]
    assert list(join_paragraphs(normalize_text(line) for line in lines)) == [
        "a list:",
        "- one wrapped",
        "- two",
    ]


def test_invisible_lines_are_blank_and_line_numbers_stay_exact(tmp_path):
    text = "First para-\ngraph goes on\n\u00a0\u200b\nSecond \xff one.\n".encode()
    data = text.replace("\xff".encode(), b"\xff")
    lines, summary = _run(tmp_path, data, input_format="paragraphs", chunk_bytes=8)
    # A hyphen at the wrap is kept: undoing it would need a dictionary.
    assert lines == ["First para - graph goes on", "Second \ufffd one ."]
    assert (summary.paragraphs, summary.first_invalid_line, summary.invalid_bytes) == (2, 4, 1)


def test_paragraphs_output_does_not_depend_on_workers_or_chunk_size(tmp_path):
    text = "\n".join([ENGLISH_WRAPPED] * 30)
    source = _write(tmp_path / "in.txt", text)
    punkt = tmp_path / "punkt.json"
    punkt.write_text(json.dumps(train_punkt(["Dr. Who."], "english")), encoding="utf-8")
    outputs = set()
    for workers, chunk_bytes in [(1, 1 << 20), (1, 100), (2, 700)]:
        out = tmp_path / f"out-{workers}-{chunk_bytes}.txt"
        config = CleanupConfig(
            input_text=source,
            out_path=out,
            workers=workers,
            chunk_bytes=chunk_bytes,
            input_format="paragraphs",
            punkt_params=punkt,
        )
        cleanup_corpus(config)
        outputs.add(out.read_bytes())
    assert len(outputs) == 1
    assert outputs.pop().decode("utf-8").splitlines()[:12] == ENGLISH_PARAGRAPHS


def test_punkt_trains_on_the_joined_paragraphs(tmp_path):
    _, summary = _run(tmp_path, POLISH_WRAPPED, lang="polish", input_format="paragraphs")
    saved = json.loads(summary.params_path.read_text(encoding="utf-8"))
    paragraphs = list(join_paragraphs(normalize_text(line) for line in POLISH_WRAPPED.split("\n")))
    assert len(paragraphs) == 5
    assert saved == json.loads(json.dumps(train_punkt(paragraphs, "polish")))


def test_unknown_input_format_is_rejected(tmp_path):
    with pytest.raises(InputError, match=r"unknown input format 'pages'.*lines, paragraphs, auto"):
        CleanupConfig(input_text=tmp_path, out_path=tmp_path / "o.txt", input_format="pages")


# --- the size limit on a paragraph --------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [64 << 10, 1 << 20])
def test_a_3_mib_paragraph_is_cut_into_pieces_of_the_limit(tmp_path, chunk_bytes):
    line = b"x" * 63 + b"\n"  # 64 bytes: 16,384 lines make 1 MiB
    source = _write(tmp_path / "big.txt", line * (3 * MAX_PARAGRAPH_BYTES // len(line)))
    chunks = list(paragraph_chunks(read_chunks([source], chunk_bytes), chunk_bytes))
    assert [(c.first_line, len(c.data), c.cut) for c in chunks] == [
        (1, MAX_PARAGRAPH_BYTES, True),
        (16_385, MAX_PARAGRAPH_BYTES, True),
        (32_769, MAX_PARAGRAPH_BYTES, False),  # reaches the limit at the end: nothing to cut
    ]


def _regrouped(data: bytes, chunk_bytes: int, limit: int) -> list[tuple[int, bytes, bool]]:
    lines = [Chunk("s", 1, data)]
    return [(c.first_line, c.data, c.cut) for c in paragraph_chunks(lines, chunk_bytes, limit)]


def test_cuts_come_only_where_a_paragraph_goes_on_past_the_limit():
    ten = b"123456789\n"
    # Reaching the limit right before a blank line or the end is no cut.
    assert _regrouped(ten * 2 + b"\n" + ten * 2, 1000, 20) == [
        (1, ten * 2 + b"\n" + ten * 2, False)
    ]
    assert _regrouped(ten * 5, 1000, 20) == [
        (1, ten * 2, True),
        (3, ten * 2, True),
        (5, ten, False),
    ]
    # A chunk otherwise ends after the first blank line once it holds chunk_bytes.
    assert _regrouped(ten + b"\n" + ten + b" \n" + ten, 15, 1000) == [
        (1, ten + b"\n" + ten + b" \n", False),
        (5, ten, False),
    ]


def test_chunk_size_never_moves_a_unit(tmp_path):
    # 37-byte lines: a 40-line paragraph passes 600 bytes twice, at lines 17 and 34.
    text = (ENGLISH_WRAPPED + "\n" + "no blank line here but a long run on\n" * 40 + "\n") * 3
    source = _write(tmp_path / "in.txt", text)
    seen = []
    for chunk_bytes in (1, 50, 333, 1 << 20):
        chunks = list(paragraph_chunks(read_chunks([source], 200), chunk_bytes, 600))
        units = [unit for chunk in chunks for unit in chunk_units(chunk).texts]
        starts = [c.first_line for c in chunks]
        assert starts == [1, *(c.first_line + c.data.count(b"\n") for c in chunks[:-1])]
        seen.append((units, sum(c.cut for c in chunks)))
    assert all(s == seen[0] for s in seen) and seen[0][1] == 3 * 2


def test_an_oversized_paragraph_is_cut_counted_and_warned_about(tmp_path, caplog):
    sentence = "of a letter that never has a blank line and goes"
    lines = [f"line {i:03d} {sentence}".ljust(63) for i in range(50)]
    with caplog.at_level(logging.INFO):
        out, summary = _run(
            tmp_path, "\n".join(lines) + ".\n", input_format="paragraphs", max_paragraph_bytes=1024
        )
    # 64 bytes a line: a piece every 16 lines, and 2 lines left at the end.
    assert (summary.paragraphs, summary.cut_paragraphs, len(out)) == (4, 3, 4)
    assert out[1].startswith("line 016 ") and out[1].endswith(f" line 031 {sentence}")
    assert "4 paragraphs, 3 cut at 1 KiB" in summary.describe()
    assert "no blank line for 1 KiB up to line 16 of" in caplog.text


# --- auto -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang", "expected", "figures"),
    [
        (POLISH_WRAPPED, "polish", POLISH_PARAGRAPHS, "60% of 15 sampled lines"),
        (ENGLISH_WRAPPED, "english", ENGLISH_PARAGRAPHS, "56% of 18 sampled lines"),
    ],
    ids=["polish", "english"],
)
def test_auto_reads_wrapped_text_as_paragraphs(tmp_path, caplog, text, lang, expected, figures):
    with caplog.at_level(logging.INFO):
        out, summary = _run(tmp_path, text, lang=lang)
    assert out == expected and summary.input_format == "paragraphs"
    breaks = text.strip().count("\n\n")
    assert _format_line(caplog) == (
        f"input format: paragraphs ({figures} end mid-sentence, running on into the next line, "
        f"{breaks} blank-line breaks); pass --input-format lines to override"
    )


def test_auto_reads_one_paragraph_per_line_as_lines(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        out, summary = _run(tmp_path, POLISH_ONE_PER_LINE, lang="polish")
    # Read before the second run: a root logger left at INFO would capture its line too.
    assert _format_line(caplog) == (
        "input format: lines (18% of 11 sampled lines end mid-sentence, running on into the "
        "next line, 8 blank-line breaks); pass --input-format paragraphs to override"
    )
    as_lines, _ = _run(tmp_path, POLISH_ONE_PER_LINE, "lines", lang="polish", input_format="lines")
    assert out == as_lines and summary.input_format == "lines"
    # Three titles and eight paragraphs of two sentences each.
    assert summary.paragraphs == 11 and len(out) == 3 + 2 * 8


def test_auto_reads_titles_over_long_paragraphs_as_lines():
    # Every title runs on into its paragraph, but wrapped text has no 200-character lines.
    articles = [f"Artykuł {i}\n{p}" for i, p in enumerate(POLISH_ONE_PER_LINE_PARAGRAPHS)]
    decision = _decide("\n\n".join(articles))
    assert (decision.input_format, decision.run_on_lines, decision.sampled_lines) == (
        "lines",
        8,
        16,
    )
    assert "but 50% of the lines are longer than 200 characters" in decision.describe()


def test_auto_needs_blank_lines_between_paragraphs():
    decision = _decide(ENGLISH_WRAPPED.replace("\n\n", "\n"))
    assert decision.input_format == "lines" and decision.blank_breaks == 0
    assert decision.run_on_lines >= decision.sampled_lines / 2
    assert "no blank line shows where a paragraph ends" in decision.describe()


def test_auto_on_a_small_input_keeps_lines(tmp_path, caplog):
    note = "Dear Anna, the parcel came on Monday, e.g.\nearlier than we thought. Thanks\nagain.\n"
    with caplog.at_level(logging.INFO):
        out, summary = _run(tmp_path, note)
    assert summary.input_format == "lines" and len(out) == 4
    assert _format_line(caplog).startswith(
        "input format: lines (only 3 non-blank lines sampled, too few to tell: 67% of 3"
    )


def test_auto_on_an_ambiguous_input_keeps_lines():
    # Short lines, each mostly a sentence of its own, with a few run-ons: notes, not prose.
    notes = "\n".join(
        [
            "Buy bread and milk.",
            "Call the plumber about the",
            "leaking tap in the kitchen.",
            "Pay the electricity bill.",
            "",
            "Return the library books.",
            "Ask Tom whether he can lend us",
            "his ladder on Saturday.",
            "Water the plants.",
            "Book the dentist.",
            "",
            "Send the parcel to Aunt Mary.",
        ]
    )
    decision = _decide(notes)
    assert (decision.input_format, decision.sampled_lines, decision.run_on_lines) == (
        "lines",
        10,
        2,
    )
    assert "(20% of 10 sampled lines end mid-sentence" in decision.describe()


@pytest.mark.parametrize(
    ("line", "ends"),
    [
        ("The end.", True),
        ('"Why?"', True),
        ("(see above.)", True),
        ("Tak było.”", True),
        ("**Done!**", True),
        ("Wait...", True),
        ("and then the", False),
        ("as follows:", False),
        ("item one;", False),
        ("Chapter 3", False),
    ],
)
def test_ends_sentence(line, ends):
    assert ends_sentence(normalize_text(line)) is ends


def test_a_given_format_is_logged_as_given(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        _run(tmp_path, ENGLISH_WRAPPED, input_format="lines")
    assert _format_line(caplog) == "input format: lines (as given)"


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    return load_script("01_cleanup").main


def test_cli_input_format_flag(cli, tmp_path):
    source = _write(tmp_path / "in.txt", ENGLISH_WRAPPED)
    for input_format in ("lines", "paragraphs"):
        out = tmp_path / f"{input_format}.txt"
        args = ["--input-text", str(source), "--out-path", str(out), "--workers", "1"]
        result = CliRunner().invoke(cli, [*args, "--input-format", input_format])
        assert result.exit_code == 0, result.output
        assert f"input format: {input_format} (as given)" in result.output
        assert f"read as {input_format} (" in result.output
    assert (tmp_path / "paragraphs.txt").read_text(encoding="utf-8").splitlines() == (
        ENGLISH_PARAGRAPHS
    )
    assert (tmp_path / "lines.txt").read_text(encoding="utf-8").count("\n") == 23


def test_cli_auto_on_stdin_logs_its_choice(cli, tmp_path):
    out = tmp_path / "sentences.txt"
    result = CliRunner().invoke(
        cli,
        ["--input-text", "-", "--out-path", str(out), "--lang", "polish", "--workers", "1"],
        input=POLISH_WRAPPED.encode(),
    )
    assert result.exit_code == 0, result.output
    assert "input format: paragraphs (60% of 15 sampled lines" in result.output
    assert "read as paragraphs (5 paragraphs, 0 cut at 1 MiB), 9 sentences out" in result.output
    assert out.read_text(encoding="utf-8").splitlines() == POLISH_PARAGRAPHS


def test_cli_rejects_an_unknown_input_format(cli, tmp_path):
    source = _write(tmp_path / "in.txt", "Text.\n")
    result = CliRunner().invoke(
        cli,
        ["--input-text", str(source), "--out-path", str(tmp_path / "o"), "--input-format", "x"],
    )
    assert result.exit_code == 2
    assert "'x' is not one of 'lines', 'paragraphs', 'auto'" in result.output


def test_cli_help_explains_each_input_format(cli):
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    help_text = " ".join(result.output.split())
    assert "--input-format [lines|paragraphs|auto]" in help_text
    for explanation in [
        "lines: each line is one paragraph or sentence (Wikipedia dumps",
        "paragraphs: hard-wrapped text (books, e-mail, man pages, RST/Markdown)",
        "auto: decide from the head of the input and log why.",
        "[default: auto]",
    ]:
        assert explanation in help_text
