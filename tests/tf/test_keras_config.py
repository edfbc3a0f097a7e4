"""The one model schema as the Keras side reads it: ``LMConfig`` from files, plain dicts and
``EncoderConfig`` (the same class), the recipe's defaults, and ``zoneout``."""

from __future__ import annotations

import json

import pytest

import ulmfit_keras as uk
from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import LMConfig, arch_defaults


def test_plain_dict_takes_the_recipe_defaults():
    config = LMConfig.from_any(
        {"arch": "awd-lstm", "vocab_size": 50, "emb_size": 4, "hidden_size": 6, "n_layers": 2}
    )
    assert config.dropouts == {name: arch_defaults("awd-lstm")[name] for name in config.dropouts}
    assert config.windows is None and config.layer_windows is None and config.zoneout == 0.0
    qrnn = LMConfig.from_any({"arch": "qrnn", "vocab_size": 50, "emb_size": 4, "hidden_size": 6,
                              "n_layers": 3, "ignored_key": 1})  # fmt: skip
    assert qrnn.layer_windows == [2, 1, 1] and qrnn.input_p == 0.4
    with pytest.raises(InputError, match=r"missing keys \['emb_size', 'hidden_size', 'n_layers'\]"):
        LMConfig.from_any({"arch": "qrnn", "vocab_size": 50})
    with pytest.raises(TypeError, match="dict or have to_dict"):
        LMConfig.from_any(42)


def test_a_file_dict_is_read_strictly():
    data = LMConfig.create("qrnn", 50, emb_size=4, hidden_size=6, n_layers=2).to_dict()
    assert LMConfig.from_any(data) == LMConfig.from_dict(data)
    with pytest.raises(InputError, match="version 2 is not supported"):
        LMConfig.from_any({**data, "version": 2})
    with pytest.raises(InputError, match=r"missing keys \['input_p'\]"):
        LMConfig.from_any({k: v for k, v in data.items() if k != "input_p"})


def test_zoneout_is_optional_and_written_only_when_set(tmp_path):
    config = LMConfig.create("qrnn", 50, emb_size=4, hidden_size=6, n_layers=2)
    assert "zoneout" not in config.to_dict()  # stage-04/05 files are unchanged
    tuned = config.replace(zoneout=0.25)
    assert tuned.to_dict()["zoneout"] == 0.25
    tuned.save(tmp_path / "c.json")
    assert LMConfig.load(tmp_path / "c.json") == tuned
    with pytest.raises(InputError, match="zoneout is a QRNN option"):
        LMConfig.create("awd-lstm", 50).replace(zoneout=0.1)
    with pytest.raises(InputError, match="zoneout must be in"):
        config.replace(zoneout=1.0)


def test_read_config_reads_files_and_plain_objects(tmp_path):
    config = LMConfig.create("awd-lstm", 50, emb_size=4, hidden_size=6, n_layers=2)
    (tmp_path / "config.json").write_text(
        json.dumps({**config.to_dict(), "conversion": {"layout": "x"}}), encoding="utf-8"
    )
    assert uk.read_config(tmp_path / "config.json") == config
    (tmp_path / "plain.json").write_text(json.dumps({"arch": "qrnn"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"plain.json: LM config: missing keys"):
        uk.read_config(tmp_path / "plain.json")
    with pytest.raises(FileNotFoundError, match="model config"):
        uk.read_config(tmp_path / "missing.json")
    assert isinstance(uk.read_config(tmp_path / "config.json"), uk.EncoderConfig)
