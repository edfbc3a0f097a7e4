"""Stage 02: train a SentencePiece model with fastai's special ids.

The model is named after its vocabulary size (``PREFIX-sp35k.model``, see :func:`spm_model_name`)
and comes with its ``.vocab`` and a ``.json`` sidecar describing how it was made (arguments,
corpus sha256, special ids, library versions). All three are written atomically; the ``.model``,
which ``make`` targets, is renamed into place last.

This module imports only sentencepiece, the standard library and the shared helpers, so the TF
environment can build models too (its tests check the in-graph tokenizer against them).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sentencepiece

from pretraining_utils.parallel import default_workers
from ulmfit_core.artifacts import library_versions, sha256_file, write_json
from ulmfit_core.errors import InputError
from ulmfit_core.ids import BOS_ID, EOS_ID, PAD_ID, SPECIAL_IDS, UNK_ID

logger = logging.getLogger(__name__)

MODEL_TYPES = ("unigram", "bpe")
MIN_VOCAB_SIZE = len(SPECIAL_IDS) + 1
MIN_SAMPLE = 100  # sentencepiece refuses to sample this many sentences or fewer
SIDECAR_FORMAT = "ulmfit-spm"

_TOO_HIGH = re.compile(
    r"Vocabulary size (?:is )?too high \((\d+)\)\. Please set it to a value <= (\d+)"
)
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


@dataclass(frozen=True)
class SpmConfig:
    """What stage 02 trains.

    Args:
        corpus_path: text, one sentence per line (stage 01's output).
        vocab_size: pieces in the model, the four special ids included.
        model_prefix: output prefix, possibly with directories; files are named by
            :func:`spm_model_name`.
        model_type: ``unigram`` or ``bpe``.
        character_coverage: passed to sentencepiece only when set (its default is 0.9995).
        input_sentence_size: 0 trains on every line; N > 100 samples N lines at random.
        num_threads: trainer threads; ``None`` uses every core this process may run on.
    """

    corpus_path: Path
    vocab_size: int
    model_prefix: Path
    model_type: str = "unigram"
    character_coverage: float | None = None
    input_sentence_size: int = 0
    num_threads: int | None = None


@dataclass(frozen=True)
class SpmSummary:
    model_path: Path
    vocab_path: Path
    json_path: Path
    vocab_size: int
    model_type: str
    corpus_lines: int
    corpus_sha256: str
    model_sha256: str
    seconds: float


def spm_model_name(prefix: str | os.PathLike, vocab_size: int) -> str:
    """``PREFIX-spNk`` for a multiple of 1000 (5000 → ``-sp5k``), else ``PREFIX-spN``.

    A size that is not a multiple of 1000 keeps its exact number: 5500 → ``PREFIX-sp5500``.
    """
    size = f"{vocab_size // 1000}k" if vocab_size % 1000 == 0 else str(vocab_size)
    return f"{os.fspath(prefix)}-sp{size}"


def trainer_arguments(config: SpmConfig, quiet: bool = True) -> dict[str, Any]:
    """The keyword arguments given to ``SentencePieceTrainer.train`` for ``config``.

    There is no ``model_prefix``: the model comes back in memory (``model_writer``), so the
    ``.model`` holds no temporary path and the same corpus and arguments give the same bytes.
    """
    args: dict[str, Any] = {
        "input": os.fspath(config.corpus_path),
        "vocab_size": config.vocab_size,
        "model_type": config.model_type,
        "unk_id": UNK_ID,
        "pad_id": PAD_ID,
        "bos_id": BOS_ID,
        "eos_id": EOS_ID,
        "unk_piece": "<unk>",
        "pad_piece": "<pad>",
        "bos_piece": "<s>",
        "eos_piece": "</s>",
        "num_threads": config.num_threads or default_workers(),
        "minloglevel": 2 if quiet else 0,
    }
    if config.character_coverage is not None:
        args["character_coverage"] = config.character_coverage
    if config.input_sentence_size > 0:
        args["input_sentence_size"] = config.input_sentence_size
        args["shuffle_input_sentence"] = True
    return args


def _check_config(config: SpmConfig) -> None:
    if config.model_type not in MODEL_TYPES:
        raise InputError(f"unknown model type {config.model_type!r}; use one of {MODEL_TYPES}")
    if config.vocab_size < MIN_VOCAB_SIZE:
        raise InputError(
            f"vocab size {config.vocab_size} is too small: the model needs the "
            f"{len(SPECIAL_IDS)} special pieces {list(SPECIAL_IDS)} plus at least one more "
            f"(--vocab-size >= {MIN_VOCAB_SIZE})"
        )
    if not (config.input_sentence_size == 0 or config.input_sentence_size > MIN_SAMPLE):
        raise InputError(
            f"input sentence size must be 0 (all lines) or more than {MIN_SAMPLE} (sentencepiece's "
            f"minimum sample), got {config.input_sentence_size}"
        )
    if config.character_coverage is not None and not 0 < config.character_coverage <= 1:
        raise InputError(f"character coverage must be in (0, 1], got {config.character_coverage}")


def _scan_corpus(path: Path, block_size: int = 1 << 20) -> tuple[int, bool]:
    """Lines in ``path`` and whether any of them holds more than whitespace."""
    lines = 0
    has_text = False
    last = b"\n"
    with open(path, "rb") as f:
        while block := f.read(block_size):
            lines += block.count(b"\n")
            has_text = has_text or bool(block.strip())
            last = block[-1:]
    if last != b"\n":
        lines += 1  # a last line without its newline
    return lines, has_text


def _translate_error(err: RuntimeError, config: SpmConfig) -> InputError | None:
    """A user-facing error for sentencepiece failures the user can fix, else ``None``."""
    message = str(err)
    if match := _TOO_HIGH.search(message):
        maximum = int(match.group(2))
        return InputError(
            f"vocab size {config.vocab_size} is too large for the corpus {config.corpus_path}: "
            f"it supports at most {maximum} pieces. Lower --vocab-size (to <= {maximum}) "
            "or give more text."
        )
    if "Vocabulary size too high" in message or "Vocabulary size is too high" in message:
        return InputError(
            f"vocab size {config.vocab_size} is too large for the corpus {config.corpus_path}. "
            "Lower --vocab-size or give more text."
        )
    if match := _TOO_SMALL.search(message):
        needed = int(match.group(2))
        return InputError(
            f"vocab size {config.vocab_size} is too small for the corpus {config.corpus_path}: "
            f"its characters and the special pieces alone need {needed}. Raise --vocab-size "
            f"(to >= {needed}) or lower --character-coverage."
        )
    return None


def build_spm(config: SpmConfig) -> SpmSummary:
    """Train a SentencePiece model on ``config.corpus_path`` and write it atomically.

    Writes ``NAME.model``, ``NAME.vocab`` and ``NAME.json`` with ``NAME`` from
    :func:`spm_model_name`. Sentencepiece's own log goes to stderr only when this module's logger
    is enabled for DEBUG (the CLI's ``--verbose``).

    Raises:
        InputError: an unusable vocab size (too small, or more than the corpus supports),
            an empty corpus or an unknown model type. Nothing is written then.
    """
    _check_config(config)
    corpus_path = Path(config.corpus_path)
    if not corpus_path.is_file():
        raise InputError(f"corpus not found: {corpus_path}")
    corpus_lines, has_text = _scan_corpus(corpus_path)
    if not has_text:
        raise InputError(f"the corpus {corpus_path} is empty: there is no text to train on")
    corpus_sha256 = sha256_file(corpus_path)

    name = spm_model_name(config.model_prefix, config.vocab_size)
    targets = {ext: Path(f"{name}.{ext}") for ext in ("model", "vocab", "json")}
    out_dir = targets["model"].parent
    made_dirs = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    quiet = not logger.isEnabledFor(logging.DEBUG)

    start = time.perf_counter()
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{targets['model'].name}.tmp-", dir=out_dir))
    moved: list[Path] = []
    try:
        tmp_prefix = tmp_dir / "spm"
        args = trainer_arguments(config, quiet=quiet)
        logger.debug("training sentencepiece with %s", args)
        model_bytes = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(**args, model_writer=model_bytes)
        except RuntimeError as err:
            translated = _translate_error(err, config)
            if translated is None:
                raise
            raise translated from err
        seconds = time.perf_counter() - start

        model = model_bytes.getvalue()
        processor = sentencepiece.SentencePieceProcessor(model_proto=model)
        _check_special_pieces(processor)
        tmp_prefix.with_suffix(".model").write_bytes(model)
        tmp_prefix.with_suffix(".vocab").write_text(vocab_text(processor), encoding="utf-8")
        sidecar = {
            "format": SIDECAR_FORMAT,
            "version": 1,
            "model_file": targets["model"].name,
            "model_sha256": hashlib.sha256(model).hexdigest(),
            "config": {key: _jsonable(value) for key, value in asdict(config).items()},
            "trainer_arguments": args,
            "corpus_path": os.fspath(corpus_path),
            "corpus_sha256": corpus_sha256,
            "corpus_lines": corpus_lines,
            "vocab_size": config.vocab_size,
            "special_ids": dict(SPECIAL_IDS),
            "versions": library_versions("sentencepiece"),
            "seconds": round(seconds, 3),
        }
        write_json(tmp_prefix.with_suffix(".json"), sidecar)
        for ext in ("vocab", "json", "model"):  # the .model last: it is what make targets
            os.replace(tmp_prefix.with_suffix(f".{ext}"), targets[ext])
            moved.append(targets[ext])
    except BaseException:
        for path in moved:
            path.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        for directory in made_dirs:  # innermost first; only the ones this call made
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    shutil.rmtree(tmp_dir, ignore_errors=True)

    return SpmSummary(
        model_path=targets["model"],
        vocab_path=targets["vocab"],
        json_path=targets["json"],
        vocab_size=config.vocab_size,
        model_type=config.model_type,
        corpus_lines=corpus_lines,
        corpus_sha256=corpus_sha256,
        model_sha256=sidecar["model_sha256"],
        seconds=seconds,
    )


def vocab_text(processor: sentencepiece.SentencePieceProcessor) -> str:
    """The ``.vocab`` file ``spm_train`` writes: ``piece<TAB>score`` per line, in id order."""
    return "".join(
        f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n"
        for i in range(processor.get_piece_size())
    )


def _check_special_pieces(processor: sentencepiece.SentencePieceProcessor) -> None:
    """Fail hard if the trained model does not have fastai's special ids."""
    found = {processor.id_to_piece(i): i for i in range(len(SPECIAL_IDS))}
    if found != SPECIAL_IDS:
        raise RuntimeError(f"trained model has special pieces {found}, expected {SPECIAL_IDS}")


def _jsonable(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value
