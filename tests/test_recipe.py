from __future__ import annotations

import json

import pytest

from quantplug import LayerOverride, QuantRecipe
from quantplug.errors import ConfigError


def test_json_round_trip(tmp_path):
    recipe = QuantRecipe(method="qat", weight_bits=4, granularity="per-group", group_size=16,
                         layer_overrides={"stem.conv": LayerOverride(fp=True), "head": {"weight_bits": 8}})
    path = tmp_path / "recipe.json"
    recipe.save(path)
    loaded = QuantRecipe.load(path)
    assert loaded == recipe
    assert loaded.layer_overrides["head"] == LayerOverride(weight_bits=8)
    assert json.loads(path.read_text())["method"] == "qat"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"weight_bits": 3}, "--weight-bits 4 or 8"),
        ({"activation_bits": 4}, "activations are 8-bit"),
        ({"granularity": "per-row"}, "per-tensor, per-channel, per-group"),
        ({"granularity": "per-group", "weight_bits": 8}, "per-group granularity is for INT4"),
        ({"calib_batches": 0}, "at least 1"),
        ({"percentile": 10.0}, "99.99"),
        ({"lr_scale": 2.0}, "(0, 1]"),
        ({"layer_overrides": {"x": {"weight_bits": 2}}}, "use 4 or 8"),
        ({"version": 99}, "upgrade quantplug"),
    ],
)
def test_invalid_values_are_clear_errors(changes, fragment):
    with pytest.raises(ConfigError) as err:
        QuantRecipe(**changes)
    assert fragment in str(err.value)


def test_unknown_field_lists_valid_fields():
    with pytest.raises(ConfigError, match="unknown field.*metod.*valid fields"):
        QuantRecipe.from_dict({"metod": "ptq"})


def test_bad_json_and_missing_file(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        QuantRecipe.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        QuantRecipe.load(tmp_path / "missing.json")


def test_bits_for_layer_overrides():
    recipe = QuantRecipe(weight_bits=4, layer_overrides={"a": LayerOverride(fp=True), "b": LayerOverride(weight_bits=8)})
    assert recipe.bits_for("a") == (None, None)
    assert recipe.bits_for("b") == (8, 8)
    assert recipe.bits_for("c") == (4, 8)
