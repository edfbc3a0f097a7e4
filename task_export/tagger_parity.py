"""Parity at export for a tagger: every artifact against the Keras model, word by word.

The reference is the task directory's Keras model on the ids
:class:`~ulmfit_tasks.predictors.TaggerPredictor` builds
(:func:`ulmfit_tasks.tagger.encode_sentences`) for the words of each text
(:func:`~task_export.tagging.split_words`), a word's tag read at its first subword. Float
artifacts must match it within :data:`~task_export.parity.FLOAT_TOLERANCE` on the probabilities
of every real subword, with the same tag for every subword and every word and the same pieces;
int8 must agree on :data:`~task_export.parity.INT8_AGREEMENT` of the word tags. Given gold
tags, each artifact's word accuracy and entity F1 (IOB tags) are reported beside Keras'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece

from task_export import parity
from task_export.graph import TaskGraph
from task_export.layout import INT8_FORMATS
from task_export.tagging import split_words
from ulmfit_core.errors import InputError
from ulmfit_core.ids import PAD_ID
from ulmfit_keras import entity_f1
from ulmfit_keras.word_alignment import word_predictions
from ulmfit_tasks.data import read_tagger_jsonl
from ulmfit_tasks.tagger import encode_sentences
from ulmfit_tasks.task_dir import read_task

__all__ = ["check_tagger_artifact", "read_tagged_texts", "tagger_reference"]


def read_tagged_texts(task_dir: Path, path: Path) -> tuple[list[str], list[list[str]]]:
    """A stage-12 JSONL file (``[[word, tag_id], ...]`` per line) for the tagger in
    ``task_dir`` -> ``(texts, gold tags)``: each sentence's words joined by spaces, its tags by
    name.

    Raises:
        InputError: ``task_dir`` holds no tagger, the file is not stage 12's format, or a word
            would not come back from its text (empty, or with whitespace in it).
    """
    tags = read_task(task_dir, "tagger")["tags"]
    sentences = read_tagger_jsonl(path, len(tags))
    for number, (words, _) in enumerate(sentences, start=1):
        if split_words(" ".join(words)) != words:
            raise InputError(
                f"{path}: sentence {number} has an empty word or one with whitespace in it, "
                "so its text would not split back into its words"
            )
    texts = [" ".join(words) for words, _ in sentences]
    return texts, [[tags[t] for t in ids] for _, ids in sentences]


def tagger_reference(graph: TaskGraph, texts: list[str], length: int) -> dict[str, Any]:
    """The Keras model on ``texts`` cut to ``length`` ids: ``ids``, ``probabilities``,
    ``words`` and ``word_tags`` (tag ids) per text."""
    spm = sentencepiece.SentencePieceProcessor(model_proto=graph.spm_bytes)
    words = [split_words(text) for text in texts]
    ids, aligned = encode_sentences(spm, words, length, graph.task.get("fixed_seq_len"))
    probabilities = graph.model.predict(ids, verbose=0)
    best = probabilities.argmax(-1)
    starts = [seq.word_starts for seq in aligned]
    return {
        "ids": ids,
        "probabilities": probabilities,
        "words": words,
        "word_tags": [word_predictions(r, s) for r, s in zip(best, starts, strict=True)],
        "word_starts": starts,
    }


def check_tagger_artifact(
    graph: TaskGraph,
    fmt: str,
    path,
    texts: list[str],
    golds: list[list[str]] | None,
    seq_len: int,
) -> dict[str, Any]:
    """Run and compare one artifact of a tagger; returns its figures for ``report.json``.

    Raises:
        ParityError: see the module docstring.
        InputError: golds that are not one tag list per text, of one tag per word.
    """
    names = graph.labels
    length = min(graph.max_len, seq_len) if fmt.startswith("tflite") else graph.max_len
    reference = tagger_reference(graph, texts, length)
    ids = reference["ids"]
    out = parity.run_artifact(fmt, path, texts, ids)
    width = min(ids.shape[1], np.shape(out["probabilities"])[1])
    real = ids[:, :width] != PAD_ID  # padding's outputs are nobody's: compare the real subwords
    probabilities = np.asarray(out["probabilities"])[:, :width]
    diff = np.abs(probabilities - reference["probabilities"][:, :width])
    figures: dict[str, Any] = {
        "texts": len(texts),
        "words": sum(len(w) for w in reference["words"]),
        "max_abs_diff": float(np.max(diff[real], initial=0.0)),
    }
    theirs = [[names[t] for t in row] for row in reference["word_tags"]]
    expected = np.asarray(names)[reference["probabilities"][:, :width].argmax(-1)]
    if "tags" in out:  # strings in: the artifact's own words and tags
        found = np.asarray([[_text(t) for t in row] for row in out["subword_tags"]])[:, :width]
        counts = [len(words) for words in reference["words"]]
        ours = [_row_tags(row, n) for row, n in zip(out["tags"], counts, strict=True)]
        figures["tokens_identical"] = parity._same_pieces(graph, out["tokens"], ids)
    else:  # ids in: the words read at the reference's word starts, as a client would
        best = np.asarray(out["subword_tag_ids"])
        found = np.asarray(names)[best[:, :width]]
        ours = [
            [names[t] for t in word_predictions(row, starts)]
            for row, starts in zip(best, reference["word_starts"], strict=True)
        ]
    figures["subword_tag_agreement"] = float(np.mean(found[real] == expected[real]))
    figures["tag_agreement"] = _agreement(ours, theirs)
    if golds:
        figures.update(_gold_figures(golds, ours, theirs, reference["words"]))
    _judge(fmt, figures)
    return figures


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _row_tags(row, n_words: int) -> list[str] | None:
    """The first ``n_words`` tags of ``row``; ``None`` unless exactly those are non-empty."""
    tags = [_text(t) for t in row]
    if any(not t for t in tags[:n_words]) or any(tags[n_words:]):
        return None
    return tags[:n_words]


def _agreement(ours: list[list[str] | None], theirs: list[list[str]]) -> float:
    """The fraction of words tagged as Keras tags them (a row with other words: all wrong)."""
    same = total = 0
    for mine, keras_tags in zip(ours, theirs, strict=True):
        total += len(keras_tags)
        if mine is not None:
            same += sum(a == b for a, b in zip(mine, keras_tags, strict=True))
    return same / total if total else 1.0


def _gold_figures(golds, ours, theirs, words) -> dict[str, float]:
    if any(isinstance(g, str) for g in golds):
        raise InputError("a tagger's gold tags come from a tagged JSONL file (--test-jsonl)")
    for i, gold in enumerate(golds):
        if len(gold) != len(words[i]):
            raise InputError(f"text {i + 1}: {len(gold)} gold tags for {len(words[i])} words")
    n = len(golds)
    mine = [row or [""] * len(gold) for row, gold in zip(ours[:n], golds, strict=True)]
    flat_gold = [t for row in golds for t in row]
    figures = {
        "word_accuracy": _accuracy(mine[:n], flat_gold),
        "keras_word_accuracy": _accuracy(theirs[:n], flat_gold),
    }
    try:
        figures["entity_f1"] = entity_f1(golds, [[t or "O" for t in row] for row in mine])["f1"]
        figures["keras_entity_f1"] = entity_f1(golds, theirs[:n])["f1"]
    except ValueError:  # not IOB tags: no entities to count
        pass
    return figures


def _accuracy(rows: list[list[str]], gold: list[str]) -> float:
    flat = [t for row in rows for t in row]
    return float(np.mean([a == b for a, b in zip(flat, gold, strict=True)])) if gold else 1.0


def _judge(fmt: str, figures: dict[str, Any]) -> None:
    if fmt in INT8_FORMATS:
        if figures["tag_agreement"] < parity.INT8_AGREEMENT:
            raise parity.ParityError(
                f"{fmt} tags only {figures['tag_agreement']:.1%} of the words as the Keras "
                f"model does (need {parity.INT8_AGREEMENT:.0%}); export without {fmt} "
                "(--formats)"
            )
        return
    bad = []
    if figures["max_abs_diff"] > parity.FLOAT_TOLERANCE:
        bad.append(f"max |diff| {figures['max_abs_diff']:.2e} > {parity.FLOAT_TOLERANCE}")
    if figures["subword_tag_agreement"] < 1.0:
        bad.append(f"subword tags agree on {figures['subword_tag_agreement']:.1%}")
    if figures["tag_agreement"] < 1.0:
        bad.append(f"word tags agree on {figures['tag_agreement']:.1%}")
    if figures.get("tokens_identical") is False:
        bad.append("the in-graph tokenizer's pieces differ from SentencePiece's")
    if bad:
        raise parity.ParityError(f"{fmt} does not match the Keras model: {'; '.join(bad)}")
