"""The narrow params of the workflow's rules: each holds what shapes its job's outputs, and nothing else."""

from __future__ import annotations

import copy

import pytest
from conftest import CONFIG_SCHEMA, REPO

from segdiff.pipeline.config import load_config
from segdiff.pipeline.job_params import (SPEED_KEYS, body_params, diffusion_params, preprocess_params, recorded_config,
                                         sampling_params, segmentor_params, speed_settings)


@pytest.fixture
def config():
    return load_config(REPO / "config/config.yaml", CONFIG_SCHEMA)


def _leaves(tree, prefix=""):
    """Dotted paths of the leaves of a nested mapping."""
    if not isinstance(tree, dict):
        return {prefix.rstrip(".")}
    return {leaf for key, value in tree.items() for leaf in _leaves(value, f"{prefix}{key}.")}


def test_diffusion_params_hold_every_setting_but_the_runs_and_speed(config):
    params = diffusion_params(config)
    assert "runs" not in params
    assert _leaves(params) == _leaves(config["diffusion"]) - {"runs", "train.checkpoint_every", "train.compile"}
    assert params["train"]["lr"] == config["diffusion"]["train"]["lr"] and params["conditioning"] == "concat"
    # adding a run leaves every run's params as they were
    more = copy.deepcopy(config)
    more["diffusion"]["runs"].append("ct/coronal")
    assert diffusion_params(more) == params


def test_sampling_params_hold_only_what_the_sampler_uses(config):
    ddim = copy.deepcopy(config)
    ddim["sampling"]["sampler"] = "ddim"
    solver = copy.deepcopy(config)
    solver["sampling"]["sampler"] = "dpmpp_2m_sde"
    # DDIM: its eta, not the solver's spacing; DPM-Solver++: its spacing, not DDIM's eta
    speed = {"batch_size", "chunks", "compile", "multimodal"}
    assert set(sampling_params(ddim)) == set(config["sampling"]) - speed - {"spacing"}
    assert set(sampling_params(solver)) == set(config["sampling"]) - speed - {"eta"}
    for section, ignored, used in ((ddim, "spacing", "eta"), (solver, "eta", "spacing")):
        other = copy.deepcopy(section)
        other["sampling"][ignored] = {"spacing": "linear", "eta": 0.25}[ignored]
        assert sampling_params(other) == sampling_params(section)
        other["sampling"][used] = {"spacing": "linear", "eta": 0.25}[used]
        assert sampling_params(other) != sampling_params(section)
    params = sampling_params(config)
    other = copy.deepcopy(config)
    other["sampling"].update(batch_size=7, chunks=3, multimodal=[])
    assert sampling_params(other) == params
    other["sampling"]["steps"] += 1
    assert sampling_params(other) != params


def test_segmentor_params_and_recorded_config_leave_out_speed_keys(config):
    assert _leaves(segmentor_params(config)) == _leaves(config["segmentor"]) - {"train.checkpoint_every", "train.compile"}
    recorded = recorded_config(config)
    assert "compute" not in recorded and "batch_size" not in recorded["sampling"]
    assert recorded["diffusion"]["runs"] == config["diffusion"]["runs"]  # provenance records the runs
    assert _leaves(recorded) == _leaves(config) - {f"compute.{k}" for k in config["compute"]} - {
        "sampling.batch_size", "sampling.chunks", "sampling.compile", "preprocess.keep_shards",
        "diffusion.train.checkpoint_every", "diffusion.train.compile", "segmentor.train.checkpoint_every",
        "segmentor.train.compile"}
    before = copy.deepcopy(config)
    recorded["diffusion"]["train"]["lr"] = 1.0
    assert config == before  # copies: nothing reaches back into Snakemake's config


def test_a_new_key_shapes_outputs_until_declared_a_speed_key(config):
    """A key SPEED_KEYS does not name is part of the params (safe default: it reruns its jobs)."""
    config["diffusion"]["train"]["new_knob"] = 1
    config["sampling"]["new_knob"] = 2
    assert diffusion_params(config)["train"]["new_knob"] == 1 and sampling_params(config)["new_knob"] == 2


def test_speed_settings_are_what_the_params_leave_out(config):
    assert speed_settings(config, "compute") == config["compute"]
    assert speed_settings(config, "diffusion.train") == {"checkpoint_every": 200, "compile": False}
    assert speed_settings(config, "sampling") == {"batch_size": 64, "chunks": 1, "compile": False}
    assert speed_settings(config, "preprocess") == {"keep_shards": True}
    for path, keys in SPEED_KEYS.items():  # every named speed key exists in the schema's defaults
        section = config
        for part in path.split("."):
            section = section[part]
        assert keys == "*" or set(keys) <= set(section), path
    for section, params in (("diffusion", diffusion_params(config)), ("segmentor", segmentor_params(config))):
        assert {**params["train"], **speed_settings(config, f"{section}.train")} == config[section]["train"]


def test_preprocess_params_leave_out_the_other_modalitys_intensities(config):
    ct, mri = preprocess_params(config, "ct"), preprocess_params(config, "mri")
    assert set(ct) == set(config["preprocess"]) - {"mri_percentiles", "keep_shards", "body"}  # body: off
    assert set(mri) == set(config["preprocess"]) - {"ct_window", "keep_shards", "body"}
    other = copy.deepcopy(config)
    other["preprocess"]["ct_window"] = [-100, 200]
    assert preprocess_params(other, "mri") == mri and preprocess_params(other, "ct") != ct
    other["preprocess"]["image_size"] = 64
    assert preprocess_params(other, "mri") != mri  # every other key shapes both


def test_body_params_hold_what_shapes_one_modalitys_envelope(config):
    """``preprocess.body``: absent from the params while off (a study sliced before the envelope keeps its params,
    and a threshold then reruns nothing); on, the mode and that modality's threshold (MRI's with the percentiles
    it applies to); an oracle render keeps the envelope of its case's modality."""
    off_ct, off_mri = preprocess_params(config, "ct"), preprocess_params(config, "mri")
    assert body_params(config, "ct") is None
    config["preprocess"]["body"]["ct_threshold_hu"] = -400
    assert preprocess_params(config, "ct") == off_ct
    config["preprocess"]["body"]["mode"] = "threshold"
    assert body_params(config, "ct") == {"mode": "threshold", "modality": "ct", "ct_threshold_hu": -400}
    assert body_params(config, "mri") == {"mode": "threshold", "modality": "mri", "mri_threshold": 0.15,
                                          "mri_percentiles": config["preprocess"]["mri_percentiles"]}
    ct, mri = preprocess_params(config, "ct"), preprocess_params(config, "mri")
    assert ct == {**off_ct, "body": body_params(config, "ct")} and mri == {**off_mri, "body": body_params(config, "mri")}
    config["preprocess"]["body"]["mri_threshold"] = 0.2  # reruns the MRI slices only
    assert preprocess_params(config, "ct") == ct and preprocess_params(config, "mri") != mri
    oracle = preprocess_params(config, "mri", body_modality="ct")  # MRI renders of a CT case
    assert oracle == {**off_mri, "body": body_params(config, "ct")}
    config["preprocess"]["body"]["mode"] = "sheet"
    assert body_params(config, "mri") == {"mode": "sheet", "modality": "mri"}
