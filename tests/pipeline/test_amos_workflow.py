"""The full study's entry point, end to end: from an empty folder, `snakemake` downloads an
AMOS22-layout archive from a loopback Zenodo record, verifies and unpacks it, and runs the study
to the table; config/amos.yaml plans the download, then the poster's five runs."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from amos_fixture import make_amos_zip, serve_amos
from conftest import REPO
from studies import TINY_MODEL, job_counts, snakemake

pytestmark = pytest.mark.workflow

POSTER_JOBS = ("evaluate", "train_diffusion", "sample_multimodal")


def tiny_amos(api_url: str) -> dict:
    return {
        "seed": 5,
        "dataset": {"source": "amos", "amos_root": "data/amos22", "amos_download": {"record": api_url}},
        "preprocess": {"image_size": 16, "min_foreground": 4},
        "diffusion": {"runs": ["ct/axial", "mri/axial"], "model": TINY_MODEL,
                      "scheduler": {"num_train_timesteps": 20},
                      "train": {"steps": 3, "batch_size": 4, "checkpoint_every": 2, "warmup_steps": 1}},
        "sampling": {"steps": 3, "k": 2, "batch_size": 8, "multimodal": ["ct>mri/axial"]},
        "segmentor": {"model": {"channels": [8, 16], "strides": [2]}, "train": {"steps": 3, "batch_size": 8, "warmup_steps": 1}},
        "evaluation": {"max_slices": 6},
    }


def test_study_from_an_empty_folder_downloads_amos_then_runs_to_the_table(tmp_path):
    archive = make_amos_zip(tmp_path / "amos22.zip", n_ct=3, n_mri=3, n_val_ct=1, n_val_mri=1)
    run = tmp_path / "run"
    with serve_amos(archive) as amos:
        config = tiny_amos(amos.api_url)
        planned = job_counts(snakemake(run, config, "-n"))
        assert planned["amos_download"] == 1 and not (run / "data").exists()  # a dry run downloads nothing
        snakemake(run, config)
        downloads = len(amos.server.requests(amos.file_path))
        again = snakemake(run, config, "-n")
        assert "Nothing to be done" in again.stdout + again.stderr
        assert len(amos.server.requests(amos.file_path)) == downloads  # idempotent: no second transfer
    log = (run / "logs/data/amos_download.log").read_text()
    assert "License:" in log and "Cite as:" in log and log.index("License:") < log.index("ready at")
    assert (run / "data/amos22/dataset.json").exists() and not (run / "data/amos22.zip").exists()
    cases = pd.read_csv(run / "results/data/cases.tsv", sep="\t", dtype={"case": str})
    numbers = cases["case"].str.rsplit("_", n=1).str[1].astype(int)
    assert ((numbers < 500) == (cases["modality"] == "ct")).all() and sorted(cases["modality"].unique()) == ["ct", "mri"]
    table = pd.read_csv(run / "results/table.csv", index_col=0, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["CT axial", "MRI axial", "CT→MRI axial"]
    assert (table.loc["Dice_gen ↑"] != "n/a").all() and table.loc["FRD ↓"].astype(float).gt(0).all()


def test_amos_config_plans_the_download_then_the_poster_study(tmp_path):
    config = yaml.safe_load((REPO / "config/amos.yaml").read_text())
    config["dataset"]["amos_root"] = str(tmp_path / "data/amos22")
    before = job_counts(snakemake(tmp_path / "plan", config, "-n"))
    assert before["amos_download"] == 1
    # once the data is there (the archive unpacked as the download leaves it), the same command plans the study
    archive = make_amos_zip(tmp_path / "amos22.zip", n_ct=5, n_mri=5, n_val_ct=1, n_val_mri=1)
    shutil.unpack_archive(archive, tmp_path / "data")
    after = job_counts(snakemake(tmp_path / "plan", config, "-n"))
    assert "amos_download" not in after
    chunks = config["sampling"]["chunks"]  # sampling of each run split into chunk jobs, merged by one gather job
    assert after["train_diffusion"] == 4 and after["sample_diffusion"] == 4 * chunks and after["sample_multimodal"] == chunks
    assert after["gather_samples"] == 4 and after["gather_multimodal"] == 1 and chunks > 1
    assert after["evaluate"] == 5 and after["slice_case"] == 10 and after["train_segmentor"] == 2
    # usefulness.in_all: generated training sets (2 modalities x 3 views x chunks), 4 segmentors and 5 scores each
    assert after["sample_trainset"] == 6 * chunks and after["train_segmentor_usefulness"] == 8
    assert after["score_usefulness"] == 10 and after["usefulness_table"] == 1 and "oracle_trainset" not in after
