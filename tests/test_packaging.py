"""Packaging contracts: conda env pins agree with pyproject; the built-in tables ship with the package."""

import re
import tomllib

import yaml
from conftest import REPO

CONDA_NAMES = {"torch": "pytorch"}


def test_conda_env_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs/segdiff.yaml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", dep).groups()
            conda[name.lower()] = spec.replace(" ", "")
    for requirement in project["dependencies"]:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", requirement).groups()
        conda_name = CONDA_NAMES.get(name.lower(), name.lower())
        assert conda_name in conda, f"{name} from pyproject.toml is missing in envs/segdiff.yaml"
        assert conda[conda_name] == spec.replace(" ", ""), f"{name}: pyproject '{spec}' vs conda '{conda[conda_name]}'"


def test_builtin_tables_are_package_data():
    from importlib import resources

    root = resources.files("segdiff") / "resources"
    assert (root / "labels/amos15.tsv").is_file()
    assert (root / "remaps/totalsegmentator_to_amos.tsv").is_file()
