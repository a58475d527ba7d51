"""Config validation: the default is valid, defaults fill in, wrong types and unknown keys are named."""

import pytest
import yaml
from conftest import CONFIG_SCHEMA, REPO

from segdiff.pipeline.config import check_body, coerce_strings, load_config, validate_config
from segdiff.core.errors import ConfigError, InputError
from segdiff.core.labels import LabelMap, load_label_map, load_remap


def test_default_config_is_valid_and_complete():
    config = load_config(REPO / "config/config.yaml", CONFIG_SCHEMA)
    assert config["preprocess"]["image_size"] >= 48
    assert config["views"] == ["axial", "coronal", "sagittal"]
    # the poster's table: CT axial, CT, MRI axial, MRI, CT->MRI axial
    assert config["diffusion"]["runs"] == ["ct/axial", "ct/all", "mri/axial", "mri/all"]
    assert config["sampling"]["multimodal"] == ["ct>mri/axial"]


def test_empty_config_gets_every_default():
    config = validate_config({}, CONFIG_SCHEMA)
    assert config["dataset"]["split"] == {"train": 0.6, "val": 0.2, "test": 0.2}
    assert config["preprocess"]["ct_window"] == [-175, 250]
    assert config["phantom"]["shape"] == [96, 80, 48]


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"config key 'preprocess.image_size': 'big' is not of type 'integer'"):
        validate_config({"preprocess": {"image_size": "big"}}, CONFIG_SCHEMA)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"config key 'preprocess.imgsize': unknown key"):
        validate_config({"preprocess": {"imgsize": 64}}, CONFIG_SCHEMA)
    with pytest.raises(ConfigError, match=r"config key 'sed': unknown key"):
        validate_config({"sed": 1}, CONFIG_SCHEMA)


def test_bad_view_and_modality_values():
    with pytest.raises(ConfigError, match=r"config key 'views.0': 'axail' is not one of"):
        validate_config({"views": ["axail"]}, CONFIG_SCHEMA)


def test_override_on_top_of_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"views": ["coronal"]}))
    assert load_config(path, CONFIG_SCHEMA, {"seed": 5})["seed"] == 5


def test_label_map_and_remap_tables(tmp_path):
    amos = load_label_map("amos15")
    assert len(amos.ids) == 15 and amos.names[6] == "liver"
    bad = tmp_path / "labels.tsv"
    bad.write_text("id\tname\n1\tliver\n1\tspleen\n")
    with pytest.raises(InputError, match="labels.tsv: duplicate id 1"):
        load_label_map(bad)
    bad.write_text("id\tname\nx\tliver\n")
    with pytest.raises(InputError, match="labels.tsv: column 'id' must hold non-negative integers"):
        load_label_map(bad)
    remap = tmp_path / "remap.tsv"
    remap.write_text("source_id\ttarget_id\n5\t99\n")
    with pytest.raises(InputError, match=r"remap.tsv: target ids \[99\] are not in the label map"):
        load_remap(remap, amos)
    with pytest.raises(InputError, match="no_such_map: file not found"):
        load_label_map("no_such_map")


# Nested --config overrides: Snakemake reads them with YAML's BaseLoader, so every nested scalar is a string.

def test_override_strings_become_integers_and_numbers():
    config = validate_config({"preprocess": {"image_size": "64", "ct_window": ["-175", "2.5e2"]},
                              "diffusion": {"train": {"lr": "1e-3", "steps": "+7", "grad_clip": "1_000"}}}, CONFIG_SCHEMA)
    assert config["preprocess"]["image_size"] == 64 and type(config["preprocess"]["image_size"]) is int
    assert config["preprocess"]["ct_window"] == [-175, 250.0]
    assert config["diffusion"]["train"]["lr"] == pytest.approx(1e-3) and config["diffusion"]["train"]["steps"] == 7
    assert config["diffusion"]["train"]["grad_clip"] == 1000
    assert validate_config({"sampling": {"eta": ".5"}}, CONFIG_SCHEMA)["sampling"]["eta"] == 0.5


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("YES", True), ("no", False),
                                              ("On", True), ("off", False)])
def test_override_strings_become_booleans_as_yaml_1_1(text, value):
    config = validate_config({"diffusion": {"train": {"compile": text}}}, CONFIG_SCHEMA)
    assert config["diffusion"]["train"]["compile"] is value


def test_override_strings_become_null_where_the_schema_allows_it():
    schema = {"type": "object", "properties": {"a": {"type": ["integer", "null"]}, "b": {"type": ["string", "null"]},
                                               "c": {"type": "null"}}}
    assert coerce_strings({"a": "null", "b": "null", "c": "~"}, schema) == {"a": None, "b": "null", "c": None}
    assert coerce_strings({"a": "NULL", "c": ""}, schema) == {"a": None, "c": None}


def test_override_nested_lists_and_objects_are_coerced():
    config = validate_config({"diffusion": {"model": {"channels": ["8", "16"], "attention_levels": ["false", "yes"]}},
                              "phantom": {"shape": ["48", "40", "24"], "spacing": ["8", "8.5", "12"]},
                              "segmentor": {"model": {"strides": ["2"]}}}, CONFIG_SCHEMA)
    assert config["diffusion"]["model"]["channels"] == [8, 16]
    assert config["diffusion"]["model"]["attention_levels"] == [False, True]
    assert config["phantom"]["shape"] == [48, 40, 24] and config["phantom"]["spacing"] == [8, 8.5, 12]
    assert config["segmentor"]["model"]["strides"] == [2]
    schema = {"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "boolean"}}
    assert coerce_strings(["3", "on", "off"], schema) == [3, True, False]
    schema = {"type": "object", "additionalProperties": {"type": "number"}}
    assert coerce_strings({"x": "1.5", "y": "2"}, schema) == {"x": 1.5, "y": 2}


def test_override_strings_stay_strings_where_the_schema_wants_strings():
    config = validate_config({"dataset": {"remap": "1", "labels": "true", "sheet": "null"}, "views": ["axial"]},
                             CONFIG_SCHEMA)
    assert config["dataset"]["remap"] == "1" and config["dataset"]["labels"] == "true"
    assert config["dataset"]["sheet"] == "null" and config["views"] == ["axial"]


def test_override_that_cannot_be_coerced_is_named():
    for value, wanted in (("big", "integer"), ("64.0", "integer"), ("1e3", "integer"), ("", "integer")):
        with pytest.raises(ConfigError, match=rf"config key 'preprocess.image_size': '{value}' is not of type '{wanted}'"):
            validate_config({"preprocess": {"image_size": value}}, CONFIG_SCHEMA)
    with pytest.raises(ConfigError, match=r"config key 'diffusion.train.compile': 'maybe' is not of type 'boolean'"):
        validate_config({"diffusion": {"train": {"compile": "maybe"}}}, CONFIG_SCHEMA)
    with pytest.raises(ConfigError, match=r"config key 'diffusion.model.channels.1': 'x' is not of type 'integer'"):
        validate_config({"diffusion": {"model": {"channels": ["8", "x"]}}}, CONFIG_SCHEMA)
    with pytest.raises(ConfigError, match=r"config key 'diffusion.train.lr': 'nan' is not of type 'number'"):
        validate_config({"diffusion": {"train": {"lr": "nan"}}}, CONFIG_SCHEMA)


def test_coercion_does_not_modify_the_objects_it_was_given():
    overrides = {"preprocess": {"image_size": "64"}, "diffusion": {"model": {"channels": ["8", "16"]}}}
    channels = overrides["diffusion"]["model"]["channels"]
    schema_text = CONFIG_SCHEMA.read_text()
    config = {"preprocess": dict(overrides["preprocess"]), "diffusion": overrides["diffusion"]}
    validate_config(config, CONFIG_SCHEMA)
    assert config["preprocess"]["image_size"] == 64 and config["diffusion"]["model"]["channels"] == [8, 16]
    assert overrides == {"preprocess": {"image_size": "64"}, "diffusion": {"model": {"channels": ["8", "16"]}}}
    assert channels == ["8", "16"] and CONFIG_SCHEMA.read_text() == schema_text
    unchanged = {"seed": 5, "views": ["axial"]}
    assert coerce_strings(unchanged, {"type": "object"}) is unchanged


def test_body_envelope_keys_defaults_and_bounds():
    """``preprocess.body``: off by default; the modes, the thresholds' bounds; an unquoted YAML ``off`` (a boolean)
    is the mode off; the dataset must be able to have the envelope (check_body)."""
    assert validate_config({}, CONFIG_SCHEMA)["preprocess"]["body"] == {"mode": "off", "ct_threshold_hu": -500,
                                                                        "mri_threshold": 0.15}
    config = validate_config(yaml.safe_load("preprocess: {body: {mode: off}}"), CONFIG_SCHEMA)
    assert config["preprocess"]["body"]["mode"] == "off"  # YAML 1.1 read it as false
    assert validate_config({"preprocess": {"body": {"mode": "threshold", "ct_threshold_hu": "-300"}}},
                           CONFIG_SCHEMA)["preprocess"]["body"]["ct_threshold_hu"] == -300  # --config strings
    with pytest.raises(ConfigError, match=r"config key 'preprocess.body.mode': 'on' is not one of"):
        validate_config({"preprocess": {"body": {"mode": "on"}}}, CONFIG_SCHEMA)
    with pytest.raises(ConfigError, match=r"config key 'preprocess.body.mode': True is not of type 'string'"):
        validate_config({"preprocess": {"body": {"mode": True}}}, CONFIG_SCHEMA)
    with pytest.raises(ConfigError, match=r"config key 'preprocess.body.mri_threshold': 1.5 is greater than"):
        validate_config({"preprocess": {"body": {"mri_threshold": 1.5}}}, CONFIG_SCHEMA)
    with pytest.raises(ConfigError, match=r"config key 'preprocess.body.threshold': unknown key"):
        validate_config({"preprocess": {"body": {"threshold": 0.2}}}, CONFIG_SCHEMA)
    amos15 = load_label_map("amos15")
    for mode, source in (("off", "phantom"), ("threshold", "amos"), ("sheet", "sheet")):
        check_body(validate_config({"preprocess": {"body": {"mode": mode}}, "dataset": {"source": source}}, CONFIG_SCHEMA),
                   amos15)
    with pytest.raises(ConfigError, match=r"config key 'preprocess.body.mode': sheet reads each case's body mask from the "
                                          r"case sheet's column 'body', but dataset.source is 'phantom'"):
        check_body(validate_config({"preprocess": {"body": {"mode": "sheet"}}}, CONFIG_SCHEMA), amos15)
    full = LabelMap({1: "a", 255: "b"})
    with pytest.raises(ConfigError, match="body id 256 does not fit the uint8 masks"):
        check_body(validate_config({"preprocess": {"body": {"mode": "threshold"}}}, CONFIG_SCHEMA), full)
    check_body(validate_config({}, CONFIG_SCHEMA), full)  # off: any label map
