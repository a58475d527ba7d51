"""Packaging contracts: conda env pins agree with pyproject; the built-in tables ship with the package."""

import re
import tomllib

import yaml
from conftest import REPO

CONDA_NAMES = {"torch": "pytorch"}


def pins(entries):
    """{lower-case name: spec without spaces} of requirement strings (pip options such as ``-e ..`` skipped)."""
    out = {}
    for dep in entries:
        if isinstance(dep, str) and not dep.startswith("-"):
            name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", dep).groups()
            out[name.lower()] = spec.replace(" ", "")
    return out


def test_conda_env_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs/segdiff.yaml").read_text())
    conda = pins(env["dependencies"])
    # packages that are not on conda-forge are installed by the env's pip section, same pins
    pip = pins(next((d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d), []))
    assert not conda.keys() & pip.keys(), f"listed both as conda and pip packages: {sorted(conda.keys() & pip.keys())}"
    for requirement in project["dependencies"]:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", requirement).groups()
        conda_name = CONDA_NAMES.get(name.lower(), name.lower())
        found = conda if conda_name in conda else pip
        assert conda_name in found, f"{name} from pyproject.toml is missing in envs/segdiff.yaml"
        assert found[conda_name] == spec.replace(" ", ""), f"{name}: pyproject '{spec}' vs env '{found[conda_name]}'"


def test_totalvibe_env_pins_agree_with_the_extra():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["totalvibe"]
    env = yaml.safe_load((REPO / "envs/totalvibe.yaml").read_text())
    pip = pins(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d))
    assert pins(extra) == {name: spec for name, spec in pip.items() if name != "-e"}


def test_builtin_tables_are_package_data():
    from importlib import resources

    root = resources.files("segdiff") / "resources"
    for table in ("labels/amos15.tsv", "labels/totalvibe.tsv", "remaps/totalsegmentator_to_amos.tsv",
                  "remaps/totalvibe_to_amos.tsv"):
        assert (root / table).is_file(), table
        assert (root / table).read_text().startswith("# "), f"{table}: its header comment cites the source"
