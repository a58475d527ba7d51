"""Run the repository's workflow on tiny studies in temporary folders: the helpers every workflow test uses."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO

#: the tiny study, as users run it (`snakemake --cores 2 --directory .test`): the file is the tested study
STUDY_FILE = REPO / ".test/config/config.yaml"
STUDY = yaml.safe_load(STUDY_FILE.read_text())
DATA_ONLY = {"diffusion": {"runs": []}, "sampling": {"multimodal": []}}  # data rules only
#: the tiny study's data and segmentor settings, without its diffusion runs and evaluation: the data rules only
TINY = copy.deepcopy({key: value for key, value in STUDY.items() if key not in ("diffusion", "sampling", "evaluation")}
                     | DATA_ONLY)
#: the tiny study's diffusion network
TINY_MODEL = STUDY["diffusion"]["model"]


def hermetic_env(workdir: Path) -> dict:
    """The environment of workflow subprocesses: an empty torch hub (no Inception weights, whatever
    this machine has cached), so the test means the same on every machine."""
    torch_home = workdir.parent / f"{workdir.name}-torch-home"
    torch_home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PYTHONWARNINGS": "ignore", "TORCH_HOME": str(torch_home)}


def snakemake(workdir: Path, config: dict, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir`` with ``config`` as the only config file (and ``env`` added
    to the environment)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**hermetic_env(workdir), **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Snakemake's "Job stats" table (of a run or a dry run) as {rule: count}; {} when nothing is to be done."""
    text = proc.stdout + proc.stderr
    if "Job stats:" not in text:
        assert "Nothing to be done" in text, text[-3000:]
        return {}
    table = text.split("Job stats:")[1].split("\n\n")[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.splitlines()[3:] if line.strip()}
