"""Stage 01's punctuation spacing: one sentence -> words and marks separated by single spaces."""

from __future__ import annotations

import regex

__all__ = ["space_punctuation"]

# A "word character" is anything that is neither whitespace nor punctuation (P*) nor a symbol
# (S*): letters, digits, combining marks, plus "_" so identifiers (sys.version_info, __init__)
# stay whole. Punctuation joins two word characters only in the cases below; everywhere else
# each punctuation mark or symbol becomes a token of its own.
_W = r"(?:[^\s\p{P}\p{S}]|_)"
_PUNCT_TOKENS = regex.compile(
    rf"""
      \.{{2,}}                        # an ellipsis stays one token ("..." after NFKC of "…")
    | {_W}+
      (?:
        (?: (?<=\d)[.,:](?=\d)        # 3.14  1,000  12:30  12.03.2020
          | \.(?={_W})                # inner periods: e.g  m.in  U.S  example.com
          | [-\u2010](?={_W})         # hyphens: well-known  COVID-19
          | (?<=\p{{L}})['\u2019](?=\p{{L}})  # apostrophes: don't  it's  O'Neil  don’t
        )
        {_W}+
      )*
      (?:\.(?=\s))?                   # a period inside the sentence: Punkt saw an abbreviation
    | \S                              # any other punctuation mark or symbol, alone
    """,
    regex.VERBOSE,
)


def space_punctuation(sentence: str) -> str:
    """Separate punctuation and symbols from words by single spaces.

    ``sentence`` is one sentence as Punkt returned it, so a period followed by more text is
    one Punkt took for an abbreviation, an initial or an ordinal ("Dr. Smith", "np. to",
    "J. R. R. Tolkien", "5. miejsce"): it stays on its word. The sentence-final period, like
    every other mark, becomes its own token ("end." -> "end ."). Numbers, hyphenated words and
    apostrophes inside words stay whole; a run of periods stays one token ("wait ... what").
    """
    return " ".join(_PUNCT_TOKENS.findall(sentence))
