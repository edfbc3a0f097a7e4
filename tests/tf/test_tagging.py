"""Sequence tagging: subword alignment, words from subwords, entity F1, the tagger and its loss."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
sentencepiece = pytest.importorskip("sentencepiece")

from tests.tf.tiny import tiny_encoder, train_spm  # noqa: E402
from ulmfit_keras import ULMFiTTagger  # noqa: E402
from ulmfit_keras.losses import MaskedSparseCategoricalCrossentropy  # noqa: E402
from ulmfit_keras.metrics import (  # noqa: E402
    MaskedSparseCategoricalAccuracy,
    entity_f1,
    iob_entities,
)
from ulmfit_keras.word_alignment import (  # noqa: E402
    IGNORE_LABEL,
    align_word_labels,
    encode_words,
    pad_aligned,
    word_predictions,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

X = IGNORE_LABEL
BOS, EOS, PAD = 2, 3, 1


# --- alignment -------------------------------------------------------------------------------


def test_first_subword_alignment_hand_written():
    aligned = align_word_labels(
        [[10], [11, 12, 13], [14, 15]], [0, 3, 4], scheme="first", bos_id=BOS, eos_id=EOS
    )
    assert aligned.token_ids == (BOS, 10, 11, 12, 13, 14, 15, EOS)
    assert aligned.labels == (X, 0, 3, X, X, 4, X, X)
    assert aligned.word_starts == (1, 2, 5)


def test_every_subword_alignment_is_the_predecessors():
    aligned = align_word_labels(
        [[10], [11, 12, 13], [14, 15]], [0, 3, 4], scheme="all", bos_id=BOS, eos_id=EOS
    )
    assert aligned.labels == (X, 0, 3, 3, 3, 4, 4, X)
    assert aligned.word_starts == (1, 2, 5)


def test_alignment_without_specials_empty_words_and_truncation():
    aligned = align_word_labels([[7, 8], [], [9]], [5, 6, 1])
    assert aligned.token_ids == (7, 8, 9)
    assert aligned.labels == (5, X, 1)
    assert aligned.word_starts == (0, -1, 2)
    cut = align_word_labels(
        [[10], [11, 12], [13]], [1, 2, 0], scheme="first", bos_id=BOS, eos_id=EOS, max_len=3
    )
    assert cut.token_ids == (BOS, 10, 11)
    assert cut.labels == (X, 1, 2)
    assert cut.word_starts == (1, 2, -1)
    with pytest.raises(ValueError, match="scheme"):
        align_word_labels([[1]], [0], scheme="last")
    with pytest.raises(ValueError, match="labels"):
        align_word_labels([[1], [2]], [0])


def test_pad_aligned_and_word_predictions():
    a = align_word_labels([[10], [11, 12]], [1, 2], bos_id=BOS, eos_id=EOS)
    b = align_word_labels([[13]], [0], bos_id=BOS, eos_id=EOS)
    ids, labels = pad_aligned([a, b])
    np.testing.assert_array_equal(ids, [[BOS, 10, 11, 12, EOS], [BOS, 13, EOS, PAD, PAD]])
    np.testing.assert_array_equal(labels, [[X, 1, 2, X, X], [X, 0, X, X, X]])
    token_preds = [0, 4, 5, 6, 0]
    assert word_predictions(token_preds, a.word_starts) == [4, 5]
    assert word_predictions(token_preds, (1, -1, 9), missing=0) == [4, 0, 0]


@pytest.fixture(scope="module")
def conll(shared_data):
    with open(shared_data / "conll1000.jsonl", encoding="utf-8") as f:
        sentences = [json.loads(line) for line in f if line.strip()]
    tags = json.loads((shared_data / "tagger_labels.json").read_text(encoding="utf-8"))
    return sentences, {int(k): v for k, v in tags.items()}


@pytest.fixture(scope="module")
def spm(conll, tmp_path_factory):
    sentences, _ = conll
    texts = [" ".join(word for word, _ in s) for s in sentences]
    model = train_spm(texts, tmp_path_factory.mktemp("tagger_spm") / "m", vocab_size=200)
    return sentencepiece.SentencePieceProcessor(model_file=str(model))


def test_alignment_with_a_real_spm_model(conll, spm):
    sentences, _ = conll
    for sentence in sentences[:100]:
        words = [word for word, _ in sentence]
        tags = [tag for _, tag in sentence]
        pieces = encode_words(spm.encode, words)
        aligned = align_word_labels(pieces, tags, bos_id=BOS, eos_id=EOS)
        assert aligned.token_ids == (BOS, *[p for w in pieces for p in w], EOS)
        scored = [(i, lab) for i, lab in enumerate(aligned.labels) if lab != X]
        assert [i for i, _ in scored] == [s for s in aligned.word_starts if s >= 0]
        kept = [t for t, p in zip(tags, pieces, strict=True) if p]
        assert [lab for _, lab in scored] == kept
        # Perfect token predictions map back to the word labels.
        perfect = [0 if lab == X else lab for lab in aligned.labels]
        assert word_predictions(perfect, aligned.word_starts) == [
            t if p else 0 for t, p in zip(tags, pieces, strict=True)
        ]


# --- entity F1 ---------------------------------------------------------------------------------


def test_iob_entities_hand_written():
    assert iob_entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    # A stray I- starts an entity (conlleval); B- splits two adjacent ones.
    assert iob_entities(["O", "I-LOC", "I-LOC", "B-LOC"]) == {("LOC", 1, 3), ("LOC", 3, 4)}
    # A type change inside I- tags starts a new entity.
    assert iob_entities(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}
    assert iob_entities(["O", "O"]) == set()
    assert iob_entities(["I-ORG"]) == {("ORG", 0, 1)}
    with pytest.raises(ValueError, match="IOB"):
        iob_entities(["X-PER"])


def test_entity_f1_hand_written():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O"]]
    # gold: PER, LOC, ORG(0-3) = 3; predicted: PER, ORG, ORG(0-2) = 3; correct: PER only.
    scores = entity_f1(gold, pred)
    assert scores["gold"] == 3 and scores["predicted"] == 3 and scores["correct"] == 1
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(1 / 3)
    pred2 = [["B-PER", "I-PER", "O", "O"], ["O", "O", "O"]]
    scores2 = entity_f1(gold, pred2)  # P = 1/1, R = 1/3, F1 = 2 * 1 * 1/3 / (4/3) = 0.5
    assert (scores2["precision"], scores2["recall"]) == (1.0, pytest.approx(1 / 3))
    assert scores2["f1"] == pytest.approx(0.5)
    assert entity_f1([["O"]], [["O"]])["f1"] == 0.0
    assert entity_f1(gold, gold)["f1"] == 1.0


# --- loss, metric, tagger ----------------------------------------------------------------------


def test_masked_loss_and_accuracy_skip_ignored_labels():
    rng = np.random.default_rng(0)
    probs = rng.random((2, 4, 3)).astype(np.float32) + 0.1
    probs /= probs.sum(axis=-1, keepdims=True)
    y = np.array([[0, X, 2, X], [1, 1, X, X]], dtype=np.int32)
    keep = y != X
    want = -np.mean(np.log(probs[keep, y[keep]]))
    loss = MaskedSparseCategoricalCrossentropy()(y, probs)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)

    metric = MaskedSparseCategoricalAccuracy()
    metric.update_state(y, probs)
    want_acc = np.mean(probs.argmax(-1)[keep] == y[keep])
    np.testing.assert_allclose(float(metric.result()), want_acc, rtol=1e-6)


def test_tagger_trains_on_conll_and_round_trips(conll, spm, tmp_path):
    sentences, tag_names = conll
    batch = []
    for sentence in sentences[:32]:
        pieces = encode_words(spm.encode, [w for w, _ in sentence])
        batch.append(
            align_word_labels(pieces, [t for _, t in sentence], bos_id=BOS, eos_id=EOS, max_len=40)
        )
    ids, labels = pad_aligned(batch)
    model = ULMFiTTagger(backbone=tiny_encoder(spm.get_piece_size()), num_labels=len(tag_names))
    assert model.output.shape == (None, None, len(tag_names))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=MaskedSparseCategoricalCrossentropy(),
        metrics=[MaskedSparseCategoricalAccuracy()],
    )
    history = model.fit(ids, labels, batch_size=8, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]

    probs = model.predict(ids, verbose=0)
    # In evaluate, Keras combines the output's padding mask with the loss's ignore mask: the loss
    # is the mean over scored subwords only.
    keep = labels != X
    want = -np.mean(np.log(probs[keep, labels[keep]]))
    loss, _ = model.evaluate(ids, labels, batch_size=len(ids), verbose=0)
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    token_preds = probs.argmax(-1)
    words = [word_predictions(p, s.word_starts) for p, s in zip(token_preds, batch, strict=True)]
    gold = [[tag_names[t] for _, t in sentence] for sentence in sentences[:32]]
    tags = [[tag_names[t] for t in w] for w in words]
    assert 0.0 <= entity_f1(gold, tags)["f1"] <= 1.0

    path = tmp_path / "tagger.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, ULMFiTTagger)
    np.testing.assert_allclose(reloaded.predict(ids, verbose=0), probs, rtol=1e-5, atol=1e-6)
