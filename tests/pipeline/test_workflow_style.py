"""The workflow follows the Snakemake conventions users know: snakefmt's layout, and a clean `snakemake --lint`.

Neither runs a job: snakefmt reads the files, and the linter plans the tiny study (.test/config/config.yaml)
in an empty working directory.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO
from studies import STUDY_FILE, hermetic_env


def test_snakefmt_leaves_the_workflow_unchanged():
    # snakefmt is in the test extra; its line length is pyproject.toml's [tool.snakefmt]
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/rules"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"run `snakefmt Snakefile workflow/rules`:\n{proc.stdout}{proc.stderr}"


def test_lint_of_the_tiny_study_is_clean(tmp_path):
    workdir = tmp_path / "lint"
    workdir.mkdir()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                           "--configfile", str(STUDY_FILE), "--lint"], capture_output=True, text=True,
                          env=hermetic_env(workdir))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition" in out, out[-5000:]
    assert not (workdir / "results").exists()  # nothing ran
