"""Config validation: the default is valid, defaults fill in, wrong types and unknown keys are named."""

import pytest
import yaml
from conftest import CONFIG_SCHEMA, REPO

from segdiff.config import load_config, validate_config
from segdiff.errors import ConfigError, InputError
from segdiff.labels import load_label_map, load_remap


def test_default_config_is_valid_and_complete():
    config = load_config(REPO / "config/config.yaml", CONFIG_SCHEMA)
    assert config["preprocess"]["image_size"] == 32
    assert config["views"] == ["axial", "coronal", "sagittal"]


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
