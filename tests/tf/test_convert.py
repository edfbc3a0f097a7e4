"""Stage 05: fastai .pth -> Keras weights + SavedModel, with parity proven at conversion time.

Models are tiny random fastai-layout state dicts made with torch only (``convert.testing``), or,
when the fastai environment is there, real ``Learner.save`` files written by stage 04 in a
subprocess, whose fastai forward is the ground truth. The SavedModel is loaded in a subprocess
that imports nothing but TensorFlow and TensorFlow Text.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
sentencepiece = pytest.importorskip("sentencepiece")

from click.testing import CliRunner  # noqa: E402

import ulmfit_keras as uk  # noqa: E402
from convert.mapping import weight_plan  # noqa: E402
from convert.pipeline import ConvertConfig, convert, prepare  # noqa: E402
from convert.reference import build_reference  # noqa: E402
from convert.testing import fastai_lm_state_dict, save_learner_file  # noqa: E402
from convert.verify import pad_batch  # noqa: E402
from pretraining_utils.demo_corpus import write_demo_corpus  # noqa: E402
from pretraining_utils.encode import EncodeConfig, encode_corpus  # noqa: E402
from pretraining_utils.spm import SpmConfig, build_spm  # noqa: E402
from tests.helpers import REPO_ROOT, SHARED_DATA, load_script  # noqa: E402
from ulmfit_core.artifacts import sha256_file  # noqa: E402
from ulmfit_core.lm_config import LMConfig  # noqa: E402
from ulmfit_torch.checkpoint_io import load_pth  # noqa: E402
from ulmfit_torch.fastai_keys import (  # noqa: E402
    FASTAI_28_AWD_LSTM,
    FASTAI_227_AWD_LSTM,
    FASTAI_227_AWD_QRNN,
)
from ulmfit_torch.state_dict import read_lm_state  # noqa: E402

VOCAB, EMB, HIDDEN, LAYERS = 300, 16, 24, 3
FIXED = 24
TOL = 1e-5
SENT200 = SHARED_DATA / "sent200.tsv"
FASTAI_PY = REPO_ROOT / ".venv-fastai" / "bin" / "python"

# Keras 3.15 converts variables with np.array(x) while saving (a numpy 2 deprecation, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def sentences() -> list[str]:
    with open(SENT200, encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("convert_spm")
    write_demo_corpus(out / "raw.txt", max_bytes=100_000)
    return build_spm(SpmConfig(out / "raw.txt", VOCAB, out / "demo", num_threads=1)).model_path


def tiny_pth(directory: Path, name: str, arch: str, **kwargs) -> Path:
    """A random fastai-layout LM saved as a Learner.save-style file (or bare, ``bare=True``)."""
    bare = kwargs.pop("bare", False)
    config = kwargs.pop("config", None)
    layers = kwargs.pop("n_layers", LAYERS)
    state = fastai_lm_state_dict(arch, VOCAB, EMB, HIDDEN, layers, **kwargs)
    return save_learner_file(directory / f"{name}.pth", state, config=config, bare=bare)


def reference_of(pth: Path):
    return build_reference(read_lm_state(load_pth(pth), str(pth)))


def assert_within(report, tol: float = TOL) -> None:
    assert report.max_abs_diff <= tol, report.format_table()


# ---------------------------------------------------------------------------------------------
# The reference forward, against fastai-free invariants
# ---------------------------------------------------------------------------------------------


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lm(state: dict, arch: str, ids: np.ndarray) -> np.ndarray:
    """The LM's logits from the fastai keys with numpy loops (the equations, written out)."""
    sd = {k: v.double().numpy() for k, v in state.items()}
    x = sd["0.encoder.weight"][ids]
    for layer in range(LAYERS):
        prefix = f"0.rnns.{layer}."
        if arch == "awd-lstm":
            w_ih, w_hh = sd[prefix + "module.weight_ih_l0"], sd[prefix + "weight_hh_l0_raw"]
            b = sd[prefix + "module.bias_ih_l0"] + sd[prefix + "module.bias_hh_l0"]
            h = np.zeros((x.shape[0], w_hh.shape[1]))
            c = np.zeros_like(h)
            out = []
            for t in range(x.shape[1]):
                i, f, g, o = np.split(x[:, t] @ w_ih.T + h @ w_hh.T + b, 4, axis=-1)
                c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                h = sigmoid(o) * np.tanh(c)
                out.append(h)
        else:
            w, b = (
                sd[prefix + "layers.0.linear.weight_raw"],
                sd[prefix + "layers.0.linear.module.bias"],
            )
            if layer == 0:  # window 2: [x_t, x_{t-1}], x_{-1} = 0
                previous = np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
                x = np.concatenate([x, previous], axis=-1)
            z, f, o = np.split(x @ w.T + b, 3, axis=-1)
            z, f, o = np.tanh(z), sigmoid(f), sigmoid(o)
            h = np.zeros_like(z[:, 0])
            out = []
            for t in range(x.shape[1]):
                h = f[:, t] * z[:, t] + (1 - f[:, t]) * h
                out.append(o[:, t] * h)
        x = np.stack(out, axis=1)
    return x @ sd["1.decoder.weight"].T + sd["1.decoder.bias"]


@pytest.mark.parametrize("arch", ["awd-lstm", "qrnn"])
def test_reference_forward_is_the_equations(arch):
    state = fastai_lm_state_dict(arch, VOCAB, EMB, HIDDEN, LAYERS, tie_weights=False, seed=3)
    reference = build_reference(read_lm_state(state))
    ids = np.random.default_rng(0).integers(2, VOCAB, size=(3, 9))
    logits = reference.run(ids)["logits"]
    np.testing.assert_allclose(logits, numpy_lm(state, arch, ids), atol=2e-5)
    # Stateless between calls (QRNN's saved previous input is reset), rows independent.
    np.testing.assert_array_equal(reference.run(ids)["logits"], logits)
    np.testing.assert_allclose(reference.run(ids[1:2])["logits"][0], logits[1], atol=1e-6)


def test_reference_loads_exactly_the_table_keys():
    state = fastai_lm_state_dict("qrnn", VOCAB, EMB, HIDDEN, LAYERS, dropped_copies=True)
    read = read_lm_state(state)
    plan = weight_plan(read.layout.name, read.config)
    reference = build_reference(read)
    assert sorted(reference.state_dict()) == sorted(plan.source_keys)
    ignored = {item.key for item in plan.ignored}
    assert set(state) == set(plan.source_keys) | ignored


# ---------------------------------------------------------------------------------------------
# The mapping table and the state-dict reader (layout detection, config from the weights)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, kwargs, layout",
    [
        ("awd-lstm", {}, FASTAI_28_AWD_LSTM),
        ("awd-lstm", {"dropped_copies": True}, FASTAI_227_AWD_LSTM),
        ("qrnn", {}, FASTAI_227_AWD_QRNN),
    ],
)
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_table_covers_every_key_and_variable(arch, kwargs, layout, tie):
    state = fastai_lm_state_dict(arch, VOCAB, EMB, HIDDEN, LAYERS, tie_weights=tie, **kwargs)
    read = read_lm_state(state)
    found = read.config
    assert (read.layout.name, found.arch, found.tie_weights) == (layout, arch, tie)
    assert (found.vocab_size, found.emb_size, found.hidden_size, found.n_layers) == (
        VOCAB,
        EMB,
        HIDDEN,
        LAYERS,
    )
    assert found.windows == ([2, 1, 1] if arch == "qrnn" else None)
    assert read.layout.dropped_copies == kwargs.get("dropped_copies", False)
    plan = weight_plan(read.layout.name, found)
    config = {"arch": arch, "vocab_size": VOCAB, "emb_size": EMB, "hidden_size": HIDDEN}
    _, lm = uk.build_encoder({**config, "n_layers": LAYERS, "tie_weights": tie})
    assert sorted(plan.targets) == sorted(uk.variable_paths(lm))
    assert set(plan.source_keys) | {i.key for i in plan.ignored} >= set(state)
    if arch == "awd-lstm":
        row = next(r for r in plan.assignments if r.target == "lstm_0/lstm_cell/bias")
        assert row.sources == ("0.rnns.0.module.bias_ih_l0", "0.rnns.0.module.bias_hh_l0")
        assert row.transform == "sum"  # not the predecessor's 2 * bias_ih


# ---------------------------------------------------------------------------------------------
# Parity through the converter (in memory: everything but writing)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, kwargs, layout",
    [
        ("awd-lstm", {"tie_weights": False}, FASTAI_28_AWD_LSTM),
        ("awd-lstm", {"dropped_copies": True}, FASTAI_227_AWD_LSTM),
        ("awd-lstm", {"n_layers": 1, "bare": True}, FASTAI_28_AWD_LSTM),
        ("qrnn", {"dropped_copies": True}, FASTAI_227_AWD_QRNN),
        ("qrnn", {"tie_weights": False, "out_bias": False}, FASTAI_227_AWD_QRNN),
    ],
    ids=[
        "lstm-2.8-untied",
        "lstm-2.2.7-tied",
        "lstm-1-layer-bare",
        "qrnn-tied",
        "qrnn-untied-nobias",
    ],
)
def test_parity_in_memory(spm_model, tmp_path, arch, kwargs, layout):
    pth = tiny_pth(tmp_path, "lm", arch, **kwargs)
    prepared = prepare(ConvertConfig(pth, spm_model, tmp_path / "out"))
    assert prepared.layout.name == layout
    assert prepared.layout.container == ("state dict" if kwargs.get("bare") else "Learner.save")
    assert prepared.config.tie_weights == kwargs.get("tie_weights", True)
    assert prepared.config.out_bias == kwargs.get("out_bias", True)
    report = prepared.reports["keras"]
    assert_within(report)
    assert report.rows[0].name == "encoder_embedding" and report.rows[-1].name == "logits"
    assert len(report.rows) == kwargs.get("n_layers", LAYERS) + 2
    assert report.tokens > 200  # random batches and real sentences
    assert_within(prepared.reports["masking"])
    assert not (tmp_path / "out").exists()  # prepare() writes nothing


def test_sidecar_dropouts_and_spm_hash_are_kept(spm_model, tmp_path):
    config = LMConfig.create(
        "qrnn",
        VOCAB,
        emb_size=EMB,
        hidden_size=HIDDEN,
        n_layers=LAYERS,
        drop_mult=0.5,
        spm_model_sha256=sha256_file(spm_model),
    )
    pth = tiny_pth(tmp_path, "lm", "qrnn", config=config)
    prepared = prepare(ConvertConfig(pth, spm_model, tmp_path / "out", verify=False))
    assert prepared.config == config
    assert prepared.reports == {}


# ---------------------------------------------------------------------------------------------
# End to end: the output tree, the SavedModel, the loaders
# ---------------------------------------------------------------------------------------------

EXPORTS = {
    # name: (arch, tie, fixed_seq_len)
    "lstm-tied-ragged": ("awd-lstm", True, None),
    "qrnn-untied-fixed": ("qrnn", False, FIXED),
}


@pytest.fixture(scope="module", params=list(EXPORTS))
def export(request, spm_model, tmp_path_factory) -> dict:
    arch, tie, fixed = EXPORTS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    pth = tiny_pth(root, "tiny", arch, tie_weights=tie, seed=5)
    summary = convert(ConvertConfig(pth, spm_model, root / "export", fixed_seq_len=fixed))
    return {"dir": root / "export", "pth": pth, "fixed": fixed, "arch": arch, "summary": summary}


def test_output_tree_and_config(export, spm_model):
    out, pth = export["dir"], export["pth"]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "fastai_model",
        "keras_weights",
        "saved_model",
        "spm_model",
    ]
    assert (out / "keras_weights" / "tiny.weights.h5").is_file()
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "saved_model" / "assets" / spm_model.name).read_bytes() == spm_model.read_bytes()
    assert (out / "spm_model" / spm_model.name).read_bytes() == spm_model.read_bytes()
    assert (out / "spm_model" / spm_model.with_suffix(".vocab").name).is_file()
    assert (out / "fastai_model" / "tiny.pth").read_bytes() == pth.read_bytes()
    assert not list(out.parent.glob(".export.tmp-*"))  # the temporary dir was renamed

    data = json.loads((out / "config.json").read_text())
    config = LMConfig.from_dict(data)
    assert (config.arch, config.vocab_size, config.n_layers) == (export["arch"], VOCAB, LAYERS)
    assert uk.read_config(out / "config.json").arch == export["arch"]
    conversion = data["conversion"]
    assert conversion["source"]["sha256"] == sha256_file(pth)
    assert conversion["spm_model"]["sha256"] == sha256_file(spm_model) == config.spm_model_sha256
    assert conversion["fixed_seq_len"] == export["fixed"]
    assert conversion["verified"] is True
    assert set(conversion["parity"]) == {"keras", "masking", "reloaded_keras", "saved_model"}
    for name, report in export["summary"].reports.items():
        assert report.max_abs_diff <= TOL, report.format_table()
        assert conversion["parity"][name]["max_abs_diff"] == report.max_abs_diff
    assert {"tensorflow", "keras", "torch"} <= set(conversion["versions"])


PLAIN_TF_LOADER = textwrap.dedent(
    """
    import json, sys
    repo = sys.argv[1]
    sys.path[:] = [p for p in sys.path if p and p.rstrip("/") != repo.rstrip("/")]
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the SentencePiece op

    saved_model, texts_file, ids_file, out = sys.argv[2:6]
    loaded = tf.saved_model.load(saved_model)
    texts = json.loads(open(texts_file, encoding="utf-8").read())
    ids = np.load(ids_file)
    info = {}
    for name, fn in loaded.signatures.items():
        inputs = fn.structured_input_signature[1]
        info[name] = {
            "inputs": {k: [s.shape.as_list(), s.dtype.name] for k, s in inputs.items()},
            "outputs": {
                k: [s.shape.as_list(), s.dtype.name] for k, s in fn.structured_outputs.items()
            },
            "attribute": hasattr(loaded, name),
        }
    text = tf.constant(texts)
    results = {
        "string_encoder": loaded.string_encoder(text),
        "spm_processor": loaded.signatures["spm_processor"](text=text),
        "numericalized_encoder": loaded.numericalized_encoder(tf.constant(ids)),
        "lm_logits": loaded.signatures["lm_logits"](token_ids=tf.constant(ids)),
    }
    arrays = {f"{sig}/{k}": v.numpy() for sig, r in results.items() for k, v in r.items()}
    np.savez(out, **arrays)
    project = [m for m in sys.modules if m.split(".")[0] in ("ulmfit_keras", "convert",
               "pretraining_utils", "tests")]
    print(json.dumps({"signatures": info, "project_modules": project,
                      "asset": loaded.spm_model.asset_path.numpy().decode()}))
    """
)


def test_saved_model_loads_with_plain_tensorflow(export, spm_model, tmp_path):
    """Load in a subprocess without the repository on sys.path; check names, shapes, dtypes,
    tokenization (= sentencepiece with BOS/EOS on sent200) and outputs (= PyTorch)."""
    fixed = export["fixed"]
    texts = sentences()
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    rng = np.random.default_rng(1)
    rows = [rng.integers(2, VOCAB, size=n).astype(np.int32) for n in (FIXED, 9, 2)]
    ids = pad_batch(rows, FIXED)
    np.save(tmp_path / "ids.npy", ids)
    script = tmp_path / "load.py"
    script.write_text(PLAIN_TF_LOADER, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(REPO_ROOT),
            str(export["dir"] / "saved_model"),
            str(tmp_path / "texts.json"),
            str(tmp_path / "ids.npy"),
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["project_modules"] == []
    assert info["asset"].endswith(spm_model.name)
    sigs = info["signatures"]
    assert sorted(sigs) == ["lm_logits", "numericalized_encoder", "spm_processor", "string_encoder"]
    assert all(sig["attribute"] for sig in sigs.values())
    text_in = {"text": [[None], "string"]}
    ids_in = {"token_ids": [[None, fixed], "int32"]}
    assert sigs["string_encoder"]["inputs"] == sigs["spm_processor"]["inputs"] == text_in
    assert sigs["numericalized_encoder"]["inputs"] == sigs["lm_logits"]["inputs"] == ids_in
    assert sigs["string_encoder"]["outputs"] == {
        "output": [[None, fixed, EMB], "float32"],
        "numericalized": [[None, fixed], "int32"],
        "mask": [[None, fixed], "bool"],
    }
    assert sigs["numericalized_encoder"]["outputs"] == {
        "output": [[None, fixed, EMB], "float32"],
        "mask": [[None, fixed], "bool"],
    }
    assert sigs["spm_processor"]["outputs"] == {
        "numericalized": [[None, fixed], "int32"],
        "mask": [[None, fixed], "bool"],
    }
    assert sigs["lm_logits"]["outputs"]["output"] == [[None, fixed, VOCAB], "float32"]

    out = np.load(tmp_path / "out.npz")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    expected = [np.asarray(x, np.int32) for x in sp.encode(texts, add_bos=True, add_eos=True)]
    if fixed is not None:
        assert max(len(x) for x in expected) > fixed  # the cut is exercised
        expected = [x[:fixed] for x in expected]
    want_ids = pad_batch(expected, fixed)  # ragged: padded to the batch's longest
    for signature in ("string_encoder", "spm_processor"):
        np.testing.assert_array_equal(out[f"{signature}/numericalized"], want_ids)
        np.testing.assert_array_equal(out[f"{signature}/mask"], want_ids != 1)

    reference = reference_of(export["pth"])
    last = f"{'lstm' if export['arch'] == 'awd-lstm' else 'qrnn'}_{LAYERS - 1}"
    hidden = out["string_encoder/output"]
    for i in range(0, len(expected), 20):  # every 20th sentence, alone through PyTorch
        want = reference.run(expected[i][None])[last][0]
        np.testing.assert_allclose(hidden[i, : len(expected[i])], want, atol=TOL, rtol=0)
        assert not hidden[i, len(expected[i]) :].any()  # zeros at padded positions
    np.testing.assert_array_equal(out["numericalized_encoder/mask"], ids != 1)
    for i, row in enumerate(rows):
        want = reference.run(row[None])
        got_hidden = out["numericalized_encoder/output"][i, : len(row)]
        np.testing.assert_allclose(got_hidden, want[last][0], atol=TOL, rtol=0)
        got_logits = out["lm_logits/output"][i, : len(row)]
        np.testing.assert_allclose(got_logits, want["logits"][0], atol=TOL, rtol=0)


def test_keras_loaders_read_the_export(export):
    """load_encoder(DIR) and SavedModelEncoder(DIR) give the same masked outputs as PyTorch."""
    rng = np.random.default_rng(2)
    rows = [rng.integers(0, VOCAB, size=n).astype(np.int32) for n in (FIXED, 13, 4)]
    for row in rows:
        row[row == 1] = 0
    batch = pad_batch(rows, FIXED)
    encoder = uk.load_encoder(export["dir"])
    layer = uk.SavedModelEncoder(export["dir"])
    from_weights = encoder(batch)
    from_saved = layer(batch)
    np.testing.assert_array_equal(keras.src.backend.get_keras_mask(from_saved), batch != 1)
    np.testing.assert_array_equal(keras.src.backend.get_keras_mask(from_weights), batch != 1)
    np.testing.assert_allclose(np.asarray(from_saved), np.asarray(from_weights), atol=1e-6)
    reference = reference_of(export["pth"])
    last = f"{'lstm' if export['arch'] == 'awd-lstm' else 'qrnn'}_{LAYERS - 1}"
    for i, row in enumerate(rows):
        want = reference.run(row[None])[last][0]
        np.testing.assert_allclose(np.asarray(from_saved)[i, : len(row)], want, atol=TOL)


def snapshot(weights) -> list[np.ndarray]:
    return [np.array(w.numpy()) for w in weights]


def test_loaded_encoder_is_trainable(export):
    """One fit step of the LM rebuilt from keras_weights/ and of a classifier on the SavedModel
    changes the weights, with a finite loss."""
    rng = np.random.default_rng(3)
    batch = pad_batch([rng.integers(2, VOCAB, size=n).astype(np.int32) for n in (FIXED, 7)], FIXED)

    _, lm = uk.load_language_model(export["dir"], seed=0)
    lm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = snapshot(lm.weights)
    history = lm.fit(batch, np.roll(batch, -1, axis=1), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, a) for b, a in zip(before, snapshot(lm.weights), strict=True)]
    assert all(changed)

    ids = keras.Input((export["fixed"],), dtype="int32")
    hidden = uk.SavedModelEncoder(export["dir"], name="pretrained")(ids)
    pooled = keras.layers.GlobalAveragePooling1D()(hidden)
    model = keras.Model(ids, keras.layers.Dense(2)(pooled))
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    encoder_weights = model.get_layer("pretrained").trainable_weights
    assert encoder_weights
    before = snapshot(encoder_weights)
    history = model.fit(batch, np.array([0, 1]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = snapshot(encoder_weights)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_cli_overwrites_an_existing_output_dir(spm_model, tmp_path):
    pth = tiny_pth(tmp_path, "cli", "qrnn", n_layers=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    result = CliRunner().invoke(
        load_script("05_convert").main,
        [
            "--pretrained-model",
            str(pth),
            "--spm-model-file",
            str(spm_model),
            "--out-path",
            str(out),
            "--overwrite",
            "--qrnn",
            "--num-recurrent-layers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists()
    assert (out / "saved_model" / "saved_model.pb").is_file()
    data = json.loads((out / "config.json").read_text())
    assert data["conversion"]["verified"] and data["n_layers"] == 2


# ---------------------------------------------------------------------------------------------
# Real fastai files (stage 04 in the fastai environment), fastai's own forward as ground truth
# ---------------------------------------------------------------------------------------------

FASTAI_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    import torch
    from fastai.learner import load_model
    from lm_training.models import build_language_model
    from ulmfit_core.lm_config import LMConfig
    from lm_training.config import TrainConfig
    from lm_training.train import train_language_model

    corpus, out, ids_file = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    ids = torch.from_numpy(np.load(ids_file).astype("int64"))
    for arch in ("awd-lstm", "qrnn"):
        summary = train_language_model(TrainConfig(
            train_path=corpus, save_path=out, exp_name=f"tiny-{arch}", arch=arch, emb_size=16,
            hidden_size=24, n_layers=2, batch_size=4, bptt=10, device="cpu", seed=1))
        model = build_language_model(LMConfig.load(out / f"tiny-{arch}.json"))
        load_model(summary.paths.model, model, None, with_opt=False, device="cpu")
        model.eval()
        model.reset()
        with torch.no_grad():
            logits, hidden, _ = model(ids)
        np.savez(out / f"tiny-{arch}.fastai.npz", logits=logits.numpy(), hidden=hidden.numpy())
    """
)


@pytest.fixture(scope="module")
def fastai_trained(spm_model, tmp_path_factory) -> Path:
    """Two real stage-04 files (plain tensors and Python types in 'opt') and their forward."""
    if not FASTAI_PY.is_file():
        pytest.skip(f"the fastai environment ({FASTAI_PY}) is not installed")
    out = tmp_path_factory.mktemp("fastai")
    text = (spm_model.parent / "raw.txt").read_text(encoding="utf-8").splitlines()[:40]
    (out / "small.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    encode_corpus(
        EncodeConfig(out / "small.txt", spm_model, out / "corpus", output_format="bin", workers=1)
    )
    ids = np.random.default_rng(4).integers(2, VOCAB, size=(2, 15))
    np.save(out / "ids.npy", ids)
    (out / "train.py").write_text(FASTAI_SCRIPT, encoding="utf-8")
    result = subprocess.run(
        [
            str(FASTAI_PY),
            str(out / "train.py"),
            str(out / "corpus"),
            str(out),
            str(out / "ids.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        # One thread: tiny models train several times faster without torch's thread handoffs.
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"stage 04 in the fastai env failed:\n{result.stderr[-3000:]}")
    return out


@pytest.mark.parametrize("arch", ["awd-lstm", "qrnn"])
def test_real_fastai_learner_file_matches_fastai(fastai_trained, spm_model, arch):
    pth = fastai_trained / f"tiny-{arch}.pth"
    assert set(load_pth(pth)) == {"model", "opt"}
    prepared = prepare(ConvertConfig(pth, spm_model, fastai_trained / "unused"))
    assert prepared.config == LMConfig.load(pth.with_suffix(".json"))  # the sidecar, as is
    assert_within(prepared.reports["keras"])
    want = np.load(fastai_trained / f"tiny-{arch}.fastai.npz")
    ids = np.load(fastai_trained / "ids.npy").astype(np.int32)
    np.testing.assert_allclose(np.asarray(prepared.encoder(ids)), want["hidden"], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(prepared.lm(ids)), want["logits"], atol=TOL, rtol=0)
    np.testing.assert_allclose(prepared.reference.run(ids)["logits"], want["logits"], atol=TOL)
