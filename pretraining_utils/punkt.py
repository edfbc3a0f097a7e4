"""Punkt for stage 01: training on the input's head, the ``.punkt.json`` file, the splitter.

Punkt is trained on the head of the input itself, because nltk's pretrained models are a
download we cannot rely on; a built-in abbreviation list per language
(:mod:`pretraining_utils.punkt_seeds`) fills in what a small sample cannot teach it. The
parameters are a plain, JSON-ready dict (:func:`params_to_dict`), saved beside the output as
``<out>.punkt.json`` and read back with :func:`load_punkt_params`, so that several corpora can be
split the same way. :func:`build_sentence_splitter` turns them into a
:class:`SeededPunktTokenizer`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nltk.tokenize.punkt import (
    REASON_KNOWN_COLLOCATION,
    PunktParameters,
    PunktSentenceTokenizer,
    PunktToken,
    PunktTrainer,
)

from pretraining_utils.punkt_seeds import (
    PUNKT_LANGUAGES,
    seed_abbreviations,
    sentence_final_abbreviations,
)
from ulmfit_core.artifacts import library_versions
from ulmfit_core.errors import InputError

__all__ = [
    "PARAMS_FORMAT",
    "PARAMS_FORMAT_VERSION",
    "PARAMS_SUFFIX",
    "SeededPunktTokenizer",
    "build_sentence_splitter",
    "load_punkt_params",
    "params_to_dict",
    "train_punkt",
]

logger = logging.getLogger(__name__)

PARAMS_FORMAT = "punkt-params"
PARAMS_FORMAT_VERSION = 1
PARAMS_SUFFIX = ".punkt.json"

_BATCH_CHARS = 1 << 20  # 1 MiB of text per training batch

# Quotes and brackets that may close a sentence after its "?" or "!" (German closes with “).
_CLOSERS = "\"')]}\u00bb\u203a\u2019\u201d\u201c\u2018"


class SeededPunktTokenizer(PunktSentenceTokenizer):
    """Punkt with three extra rules, for seeded abbreviations and for "?"/"!" inside quotes.

    - An abbreviation in ``final_abbrevs`` ("etc.", "itd.") followed by a capitalised word ends
      the sentence: such abbreviations close lists, and without a large sample Punkt has no
      orthographic evidence to split after them.
    - A single-letter abbreviation in the abbreviation list ("r." = rok, "w." = wiek) is judged
      like longer abbreviations (orthographic and sentence-starter evidence may end the
      sentence), where plain Punkt treats every single letter as a name initial and never
      splits after one it knows as an abbreviation.
    - A "sentence" that starts with a lower-case letter right after one ending in "?" or "!"
      (and closing quotes or brackets) continues it: ``"Why?" she asked.`` is one sentence.
      Punkt always breaks after "?" and "!".

    The first two hook into ``_second_pass_annotation``, a private method of nltk 3.10's Punkt;
    the tests in ``tests/fastai/test_cleanup.py`` pin the behaviour.
    """

    def __init__(self, params: PunktParameters, final_abbrevs: Iterable[str] = ()) -> None:
        super().__init__()
        self._params = params
        self._final_abbrevs = frozenset(final_abbrevs)

    def span_tokenize(
        self, text: str, realign_boundaries: bool = True
    ) -> Iterator[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for start, end in super().span_tokenize(text, realign_boundaries):
            if (
                spans
                and text[start].islower()
                and text[spans[-1][0] : spans[-1][1]].rstrip(_CLOSERS).endswith(("?", "!"))
            ):
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        return iter(spans)

    def _second_pass_annotation(
        self, aug_tok1: PunktToken, aug_tok2: PunktToken | None
    ) -> str | None:
        reason = super()._second_pass_annotation(aug_tok1, aug_tok2)
        if (
            aug_tok2 is None
            or not aug_tok1.abbr
            or aug_tok1.sentbreak
            or reason == REASON_KNOWN_COLLOCATION
        ):
            return reason
        typ = aug_tok1.type_no_period
        if typ not in self._params.abbrev_types:
            return reason  # an initial or ordinal Punkt itself judged; leave it alone
        if typ in self._final_abbrevs and aug_tok2.first_upper:
            aug_tok1.sentbreak = True
            return "sentence-final abbreviation + capitalised word"
        if aug_tok1.is_initial and (
            self._ortho_heuristic(aug_tok2) is True
            or (aug_tok2.first_upper and aug_tok2.type_no_sentperiod in self._params.sent_starters)
        ):
            aug_tok1.sentbreak = True
            return "one-letter abbreviation + orthographic or sentence-starter evidence"
        return reason


def train_punkt(
    paragraphs: Iterable[str], lang: str, batch_chars: int = _BATCH_CHARS
) -> dict[str, Any]:
    """Train Punkt on ``paragraphs`` (normalised units, as they will be split) and add
    ``lang``'s seed abbreviations.

    Returns the parameters as a plain, JSON-ready dict (see :func:`build_sentence_splitter`).
    Training runs in batches of about ``batch_chars`` characters so memory stays bounded.
    """
    if lang not in PUNKT_LANGUAGES:
        raise InputError(f"unknown language {lang!r}; Punkt supports: {', '.join(PUNKT_LANGUAGES)}")
    trainer = PunktTrainer()
    batch: list[str] = []
    size = trained = 0
    for paragraph in paragraphs:
        if not paragraph:
            continue
        batch.append(paragraph)
        size += len(paragraph) + 2
        if size >= batch_chars:
            # Blank lines between paragraphs tell Punkt each unit starts a sentence.
            trainer.train("\n\n".join(batch), finalize=False)
            trained += size
            batch, size = [], 0
    if batch:
        trainer.train("\n\n".join(batch), finalize=False)
        trained += size
    params = trainer.get_params()
    learned = len(params.abbrev_types)
    seeds = seed_abbreviations(lang)
    logger.debug(
        "Punkt learned %d abbreviations from %d characters; adding %d built-in ones for %s",
        learned,
        trained,
        len(seeds - params.abbrev_types),
        lang,
    )
    params.abbrev_types |= seeds
    return params_to_dict(params, lang, sentence_final_abbreviations(lang), trained_chars=trained)


def params_to_dict(
    params: PunktParameters,
    lang: str,
    final_abbrevs: Iterable[str] = (),
    trained_chars: int = 0,
) -> dict[str, Any]:
    """Punkt parameters as a plain dict with sorted lists: JSON-ready and deterministic."""
    return {
        "format": PARAMS_FORMAT,
        "format_version": PARAMS_FORMAT_VERSION,
        "lang": lang,
        "versions": library_versions("nltk"),
        "trained_chars": trained_chars,
        "abbrev_types": sorted(params.abbrev_types),
        "sentence_final_abbrev_types": sorted(final_abbrevs),
        "collocations": sorted([a, b] for a, b in params.collocations),
        "sent_starters": sorted(params.sent_starters),
        "ortho_context": {typ: params.ortho_context[typ] for typ in sorted(params.ortho_context)},
    }


def _str_list(data: Mapping[str, Any], key: str) -> list[str]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key!r} must be a list of strings")
    return value


def _check_params(data: Any) -> None:
    """Raise ValueError unless ``data`` is a params dict of the current format."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("format") != PARAMS_FORMAT or data.get("format_version") != PARAMS_FORMAT_VERSION:
        raise ValueError(
            f"format is {data.get('format')!r} version {data.get('format_version')!r}, "
            f"expected {PARAMS_FORMAT!r} version {PARAMS_FORMAT_VERSION}"
        )
    if data.get("lang") not in PUNKT_LANGUAGES:
        raise ValueError(f"unknown lang {data.get('lang')!r}")
    for key in ("abbrev_types", "sentence_final_abbrev_types", "sent_starters"):
        _str_list(data, key)
    collocations = data["collocations"]
    if not isinstance(collocations, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(w, str) for w in pair)
        for pair in collocations
    ):
        raise ValueError("'collocations' must be a list of [word, word] pairs")
    ortho = data["ortho_context"]
    if not isinstance(ortho, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in ortho.values()
    ):
        raise ValueError("'ortho_context' must map words to integers")


def load_punkt_params(path: Path, lang: str) -> dict[str, Any]:
    """Read a ``.punkt.json`` written by an earlier run; InputError if unusable.

    ``lang`` must match the language the parameters were made for: the seeds in them are
    that language's.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read Punkt parameters from {path}: {err}") from None
    try:
        _check_params(data)
    except (KeyError, ValueError) as err:
        raise InputError(
            f"{path} is not a Punkt parameters file written by 01_cleanup ({err}); "
            "run without --punkt-params to train new ones"
        ) from None
    if data["lang"] != lang:
        raise InputError(
            f"{path} holds Punkt parameters for {data['lang']}, but the language is {lang}; "
            f"pass --lang {data['lang']} or train new parameters"
        )
    return data


def build_sentence_splitter(params: Mapping[str, Any]) -> SeededPunktTokenizer:
    """A sentence splitter (``.tokenize(text) -> list[str]``) from a params dict."""
    punkt = PunktParameters()
    punkt.abbrev_types = set(params["abbrev_types"])
    punkt.collocations = {(a, b) for a, b in params["collocations"]}
    punkt.sent_starters = set(params["sent_starters"])
    punkt.ortho_context = defaultdict(int, params["ortho_context"])
    return SeededPunktTokenizer(punkt, params["sentence_final_abbrev_types"])
