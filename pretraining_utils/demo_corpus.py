"""The demo corpus: English prose from the docstrings of the installed Python standard library.

It exists on every machine that has Python, so the demo and the tests need no download. Source
files are parsed with ``ast`` (never imported), so extraction runs no standard-library code.
"""

from __future__ import annotations

import ast
import inspect
import logging
import re
import sysconfig
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ulmfit_core.artifacts import atomic_file

logger = logging.getLogger(__name__)

# Tests and vendored code repeat themselves and are mostly not prose.
_SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
_CODE_LINE = re.compile(r"^\s*(>>>|\.\.\.|\$ |[-=~^*+]{4,}\s*$|:\w+:|\.\. )")
_MIN_WORDS = 6


@dataclass(frozen=True)
class DemoCorpusSummary:
    files: int
    paragraphs: int
    bytes_written: int
    seconds: float


def stdlib_dir() -> Path:
    """The directory holding this interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if not _SKIPPED_DIRS.intersection(path.relative_to(root).parts):
            yield path


def _docstrings(source: str) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # old escapes in stdlib sources
        tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield inspect.cleandoc(doc)


def _prose_paragraphs(docstring: str) -> Iterator[str]:
    """Paragraphs of running text: code examples, tables and indented blocks are left out."""
    for block in re.split(r"\n\s*\n", docstring):
        lines = block.splitlines()
        if not lines or any(
            _CODE_LINE.match(line) or line.startswith((" ", "\t")) for line in lines
        ):
            continue
        paragraph = " ".join(line.strip() for line in lines)
        words = paragraph.split()
        letters = sum(ch.isalpha() for ch in paragraph)
        if len(words) >= _MIN_WORDS and letters >= 0.6 * len(paragraph):
            yield paragraph


def write_demo_corpus(
    out_path: str | Path, source_dir: str | Path | None = None, max_bytes: int | None = None
) -> DemoCorpusSummary:
    """Write one paragraph per line of standard-library docstring prose to ``out_path``.

    Args:
        out_path: the raw-text corpus to write (atomically).
        source_dir: where to look for ``*.py`` files; defaults to the interpreter's stdlib.
        max_bytes: stop once this many bytes are written (the first paragraphs, in file order).
    """
    start = time.perf_counter()
    root = Path(source_dir) if source_dir is not None else stdlib_dir()
    seen: set[str] = set()
    files = written = 0
    with atomic_file(out_path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for path in _source_files(root):
            try:
                source = path.read_text(encoding="utf-8")
                docstrings = list(_docstrings(source))
            except (SyntaxError, UnicodeDecodeError, ValueError) as err:
                logger.debug("skipping %s: %s", path, err)
                continue
            files += 1
            for docstring in docstrings:
                for paragraph in _prose_paragraphs(docstring):
                    if paragraph in seen:
                        continue
                    seen.add(paragraph)
                    line = paragraph + "\n"
                    out.write(line)
                    written += len(line.encode("utf-8"))
            if max_bytes is not None and written >= max_bytes:
                break
    return DemoCorpusSummary(files, len(seen), written, time.perf_counter() - start)
