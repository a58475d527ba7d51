"""Nested ``--config`` overrides (strings from YAML's BaseLoader) pass validation in a Snakemake dry run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO

TINY = {"phantom": {"n_ct": 1, "n_mri": 1}, "views": ["axial"], "diffusion": {"runs": ["ct/axial"]},
        "sampling": {"multimodal": []}}


def dry_run(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``snakemake -n`` of the repository's workflow in ``workdir`` with a tiny config file and ``--config overrides``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "1", "-n", "--config", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_nested_overrides_are_coerced_in_a_dry_run(tmp_path):
    proc = dry_run(tmp_path / "ok", "preprocess={image_size: 64}", "diffusion={train: {steps: 7, lr: 1e-3, compile: false}}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "train_diffusion" in proc.stdout + proc.stderr


def test_nested_override_with_a_bad_value_names_the_key(tmp_path):
    proc = dry_run(tmp_path / "bad", "preprocess={image_size: big}")
    assert proc.returncode != 0
    assert "config key 'preprocess.image_size': 'big' is not of type 'integer'" in proc.stdout + proc.stderr
